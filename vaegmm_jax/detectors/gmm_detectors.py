"""OutlierVAEGMM and OutlierAEGMM: the (variational) autoencoding Gaussian mixture detectors.

Both share one model (:class:`vaegmm_jax.models.GMMAutoencoder`) and one shell
(:class:`vaegmm_jax.detectors.gmm_base.GMMDetector`); they differ in whether the latent is
sampled, the reconstruction term and the loss defaults.
"""

from __future__ import annotations

from typing import Unpack

from vaegmm_jax.detectors.base import check_cov_elbo
from vaegmm_jax.detectors.fit_driver import FitRun
from vaegmm_jax.detectors.gmm_base import SCORE_TYPES, SCORING_KERNELS, GMMDetector
from vaegmm_jax.models.gmm_autoencoder import GMMAutoencoder


class OutlierVAEGMM(GMMDetector):
    """Variational autoencoding Gaussian mixture outlier detector (alibi-detect's API).

    Every argument but ``threshold`` and ``vaegmm`` is keyword-only.

    Args:
      threshold: score above which a row is an outlier (or infer_threshold later).
      vaegmm: a whole :class:`GMMAutoencoder` (variational=True) instead of the nets.
      encoder_net: Linen/NNX module x (B, *S) -> h (B, H); mean/log-variance heads of
        size ``latent_dim`` are added. Default: the DAGMM KDD shape scaled to the data
        (F -> F/2 -> F/4 -> F/12, tanh).
      decoder_net: z (B, latent_dim) -> x' (B, *S). Default: the mirror, linear output.
      gmm_density_net: z (B, D) -> K logits (softmax applied by the model; unlike
        alibi's Keras nets, do not end it with a softmax). Default: 10 tanh, dropout 0.5.
      n_gmm: K mixture components (default 2, chosen on the development suite).
      latent_dim: d (default 2).
      samples: L latent samples per row when scoring.
      beta: KL weight.
      recon_features: 'rmse' (default: the root-mean-square reconstruction error, one
        column; on standardised rows the paper's relative distance is noise, see
        :func:`vaegmm_jax.core.features.rmse_features`), 'dagmm' (the paper's [relative
        Euclidean distance, cosine]), 'alibi' (alibi-detect 0.13's quirky
        eucl_cosim_features) or a callable.
      data_type: 'tabular', 'image' or None (inferred at fit).
      seed: seeds initialisation, shuffling, sampling and scoring noise; with several members,
        member i has seed ``seed + i`` (or pass one seed per member as a sequence).
      eps: covariance jitter (alibi issue #554 asks for it to be configurable).
      hidden, gmm_hidden, gmm_dropout, activation: shape of the default nets.
      kernel_init: weight initialiser of the default nets and the latent heads:
        'lecun_normal' (Flax's default), 'glorot_uniform' (TensorFlow/Keras:
        alibi-detect, the TensorFlow DAGMM ports) or 'torch_uniform' (PyTorch's nn.Linear); see
        :data:`vaegmm_jax.nets.dense.KERNEL_INITS`. User-given nets keep their own.
      scaler: input scaling fitted on the training rows and applied inside every score:
        'auto' (default: 'standard' for tabular rows (N, F), none for images), 'standard',
        'minmax', 'robust' (see :mod:`vaegmm_jax.core.scaling`) or None (rows used as given,
        the paper's and alibi-detect's behaviour).
      score_type: 'energy_recon' (default: the mean sample energy plus the mean log RMSE,
        each standardised by its median and interquartile range on the training rows) or
        'energy' (the paper's and alibi-detect's sample energy).
      n_members: M independently seeded members trained as one vmapped program (default 1, or
        ``len(seed)``). The score of an ensemble is the mean over members of each member's score
        standardised by its median and interquartile range on the training rows; each member
        is readable (:meth:`member`, :meth:`score_members`).
      devices: the devices fit and score split rows (or members) over (default None: all local devices).
      scoring_kernel: 'auto' (default: a fused Pallas decoder kernel on NVIDIA GPUs) or 'xla'.

    The defaults were chosen on a development suite of 19 ODDS/ADBench sets
    (``benchmarks/suite.py``, README "Defaults, and why"); ``presets.ALIBI`` and
    ``presets.PAPER_SCORING`` give alibi-detect's and the paper's behaviour.
    """

    variational = True
    model_arg = "vaegmm"
    network_args = GMMDetector.network_args + ("vaegmm",)

    def __init__(self, threshold: float | None = None, vaegmm: GMMAutoencoder | None = None, **settings):
        super().__init__(threshold, vaegmm, **settings)

    def fit(self, X, w_recon: float = 1.0, w_energy: float = 0.1, w_cov_diag: float = 0.005, cov_elbo: dict | None = None,
            **run: Unpack[FitRun]) -> dict[str, list[float]]:
        """Trains on X (N, *S) (inliers) and fixes the mixture from the whole of X.

        Args:
          X: training data.
          w_recon, w_energy, w_cov_diag: loss weights (defaults 1, 0.1, 0.005; alibi-detect's
            w_recon 1e-7 leaves the decoder untrained: ``presets.ALIBI`` has it).
          cov_elbo: reconstruction likelihood covariance: dict(sim=1.0) (default: unit
            variance on standardised rows; alibi's is sim=0.05), dict(cov_diag=None) or
            dict(cov_full=None) (estimated from X).
          **run: how the fit runs, the same for every detector (keywords):
            :class:`vaegmm_jax.detectors.fit_driver.FitRun` (optimizer, epochs, batch_size,
            verbose, log_metric, checkpoint_dir, checkpoint_every, resume, options).

        Returns:
          The history: {term: [value per epoch]} for recon, energy, cov_diag, kl, total.
        """
        cov_elbo = check_cov_elbo(dict(sim=1.0) if cov_elbo is None else cov_elbo)
        return self._fit(X, dict(w_recon=w_recon, w_energy=w_energy, w_cov_diag=w_cov_diag, cov_elbo=cov_elbo), **run)

class OutlierAEGMM(GMMDetector):
    """DAGMM (Zong et al., 2018): deterministic autoencoder + Gaussian mixture.

    Loss J = mean over batch of the per-row sum of squared errors
    + w_energy (lambda1) * mean energy + w_cov_diag (lambda2) * P(Sigma).
    Dropout in the estimation network is active in training only. Constructor
    arguments and their defaults as :class:`OutlierVAEGMM` (``aegmm=`` for a whole model, no
    ``samples``/``beta``: the latent is not sampled); latent_dim defaults to 2 (the
    paper's 1 scored lower on the development suite; the presets keep it).
    """

    variational = False
    model_arg = "aegmm"
    network_args = GMMDetector.network_args + ("aegmm",)

    def __init__(self, threshold: float | None = None, aegmm: GMMAutoencoder | None = None, **settings):
        fixed = sorted({"samples", "beta"} & set(settings))
        if fixed:
            raise TypeError(f"OutlierAEGMM has no {fixed}: its latent is not sampled (see OutlierVAEGMM)")
        super().__init__(threshold, aegmm, samples=1, beta=0.0, **settings)

    def fit(self, X, w_energy: float = 0.1, w_cov_diag: float = 0.005, **run: Unpack[FitRun]) -> dict[str, list[float]]:
        """Trains DAGMM on X (N, *S). Arguments as OutlierVAEGMM.fit (w_energy = lambda1, w_cov_diag = lambda2)."""
        return self._fit(X, dict(w_recon=1.0, w_energy=w_energy, w_cov_diag=w_cov_diag), **run)


__all__ = ["OutlierVAEGMM", "OutlierAEGMM", "SCORE_TYPES", "SCORING_KERNELS"]
