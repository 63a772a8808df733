"""OutlierVAE: a variational autoencoder detector with a named score.

``score_type``:
  'mse' (alibi-detect OutlierVAE): feature score = mean over L latent samples of the
      squared reconstruction error, (N, *S); instance score = mean of the top
      ``outlier_perc`` % of a row's feature scores.
  'recon_prob' (An & Cho 2015, Algorithm 4): -log RP with
      log RP = logsumexp_l log p(x | z_l) - log L, z_l drawn independently.
  'recon_prob_mean': -(1/L) sum_l log p(x | z_l) (the mean of log-likelihoods).
Higher is more anomalous for all three.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Unpack

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.engine import training
from vaegmm_jax.detectors.fit_driver import FitRun
from vaegmm_jax.detectors.base import BaseDetector, check_cov_elbo, cov_elbo_arrays
from vaegmm_jax.engine.scoring import DEFAULT_SCORE_BATCH, check_threshold, flag_outliers, percentile_threshold
from vaegmm_jax.models.vae_model import (
    LIKELIHOODS,
    VAE_LOSS_TERMS,
    VAEModel,
    decoder_layout,
    top_percent_mean,
    vae_loss,
)
from vaegmm_jax.nets import adapter, conv, dense
from vaegmm_jax.engine.validation import (
    check_array,
    check_hidden,
    check_percentile,
    check_positive_int,
    check_unit_interval,
)

SCORE_TYPES = ("mse", "recon_prob", "recon_prob_mean")
OUTLIER_TYPES = ("instance", "feature")


class OutlierVAE(BaseDetector):
    """Variational autoencoder outlier detector (alibi-detect's OutlierVAE API, plus An & Cho's score).

    Training minimises recon + beta * KL:
      * score_type='mse', likelihood='gaussian': alibi-detect's elbo, -log N(x; x', S) with a
        fixed S from ``fit(cov_elbo=...)`` (dict(sim=0.05), dict(cov_diag=None) or
        dict(cov_full=None)), and alibi's KL convention (divided by d);
      * score_type='recon_prob' / 'recon_prob_mean', likelihood='gaussian': the decoder gives
        mean and log-variance (clipped to ``logvar_clip``), the usual ELBO (sum over
        features of -log N(x_j; mu_j, sigma_j^2), KL summed over latent dims);
      * likelihood='bernoulli' (pixels in [0, 1]): binary cross-entropy from logits summed
        over features, usual KL.

    Args:
      threshold: score above which a row is an outlier (or infer_threshold later).
      score_type: 'mse', 'recon_prob' or 'recon_prob_mean' (see the module docstring).
      vae: a whole :class:`vaegmm_jax.models.VAEModel` instead of the nets.
      encoder_net: Linen/NNX module or Network x (B, *S) -> h (B, H); mean/log-variance
        heads of size ``latent_dim`` are added. Default: for images (N, H, W, C) with H, W
        divisible by 4, the notebook's conv encoder (``vaegmm_jax.nets.conv``); otherwise
        an MLP (the DAGMM shape scaled to the data, or ``hidden``).
      decoder_net: z (B, latent_dim) -> (B, *S) or (B, F) (mean or logits); for a learned
        variance it may instead return twice that (mean and log-variance concatenated on the
        last axis) or a (mean, logvar) pair; if it returns only the mean, a linear
        z -> log-variance head is added. Default: the mirror of the encoder.
      latent_dim: d.
      samples: L latent samples per row when scoring.
      beta: KL weight.
      likelihood: 'gaussian' or 'bernoulli'.
      logvar_clip: (low, high) bounds of the decoder's log-variance.
      data_type: 'tabular', 'image' or None (inferred at fit).
      seed: seeds initialisation, shuffling, sampling and the scoring noise (member i of an
        ensemble: ``seed + i``, or one seed per member as a sequence).
      hidden: widths of the default MLP encoder (decoder mirrored).
      activation: activation of the default MLPs.
      kernel_init: weight initialiser of the default MLPs and the heads the model adds
        (:data:`vaegmm_jax.nets.dense.KERNEL_INITS`; the conv nets keep LeCun normal).
      scaler: input scaling fitted on the training rows and applied in every score: 'auto'
        (default: 'standard' for tabular rows, none for images and for the Bernoulli
        likelihood, which needs x in [0, 1]), 'standard', 'minmax', 'robust' or None.
      n_members: M independently seeded members, trained as one program (default 1); the
        score is the mean of the members' scores standardised on the training rows (median,
        interquartile range); feature scores are the members' mean.
    """

    loss_terms = VAE_LOSS_TERMS
    model_arg = "vae"
    network_args = ("encoder_net", "decoder_net", "vae")

    def __init__(
        self,
        threshold: float | None = None,
        score_type: str = "mse",
        vae: VAEModel | None = None,
        encoder_net=None,
        decoder_net=None,
        latent_dim: int = 2,
        samples: int = 10,
        beta: float = 1.0,
        likelihood: str = "gaussian",
        logvar_clip: tuple[float, float] = (-30.0, 20.0),
        data_type: str | None = None,
        seed: int = 0,
        hidden: tuple[int, ...] | None = None,
        activation: str = "tanh",
        kernel_init: str = dense.DEFAULT_KERNEL_INIT,
        scaler: str | None = "auto",
        n_members: int | None = None,
        devices=None,
    ):
        super().__init__(threshold=threshold, seed=seed, data_type=data_type, scaler=scaler, n_members=n_members,
                         devices=devices)
        if score_type not in SCORE_TYPES:
            raise ValueError(f"unknown score_type {score_type!r}; choose one of {SCORE_TYPES}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
        if activation not in dense.ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(dense.ACTIVATIONS)}")
        dense.kernel_initializer(kernel_init)
        clip = tuple(float(v) for v in logvar_clip)
        if len(clip) != 2 or not (math.isfinite(clip[0]) and math.isfinite(clip[1]) and clip[0] < clip[1]):
            raise ValueError(f"logvar_clip must be (low, high) finite with low < high, got {logvar_clip!r}")
        self.score_type = score_type
        self.likelihood = likelihood
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.samples = check_positive_int(samples, "samples")
        self.beta = float(beta)
        self.logvar_clip = clip
        self.arch = {"hidden": check_hidden(hidden), "activation": str(activation),
                     "kernel_init": str(kernel_init)}
        self.custom_nets = {
            "encoder_net": encoder_net is not None or vae is not None,
            "decoder_net": decoder_net is not None or vae is not None,
        }
        self._user_nets = (encoder_net, decoder_net)
        if vae is not None:
            if not isinstance(vae, VAEModel):
                raise TypeError(f"vae must be a vaegmm_jax.models.VAEModel, got {type(vae).__name__}")
            if vae.likelihood != likelihood or vae.learn_variance != self.learn_variance:
                raise ValueError(
                    f"the given VAEModel has likelihood={vae.likelihood!r}, learn_variance={vae.learn_variance}; "
                    f"this detector needs likelihood={likelihood!r}, learn_variance={self.learn_variance} "
                    f"(score_type={score_type!r})"
                )
            self.model = vae
            self.latent_dim = vae.latent_dim
            self.logvar_clip = tuple(float(v) for v in vae.logvar_clip)

    @property
    def learn_variance(self) -> bool:
        """The decoder gives the Gaussian's variance (An & Cho) instead of a fixed cov_elbo."""
        return self.likelihood == "gaussian" and self.score_type != "mse"

    # -- model ---------------------------------------------------------------------------
    def build_model(self, x_sample: np.ndarray) -> None:
        if self.model is not None:
            return
        shape = tuple(int(s) for s in x_sample.shape[1:])
        n_features = math.prod(shape)
        if self.data_type is None:
            self.data_type = "image" if len(shape) == 3 else "tabular"
            self.meta["data_type"] = self.data_type
        enc, dec = self._user_nets
        use_conv = conv.conv_compatible(shape)
        act = self.arch["activation"]
        init = self.arch["kernel_init"]
        hidden = tuple(self.arch["hidden"] or dense.default_hidden_sizes(n_features))
        out_factor = 2 if self.learn_variance else 1  # the default decoders give mean and log-variance
        if enc is None:
            enc = conv.conv_encoder() if use_conv else dense.default_encoder(n_features, hidden, act, init)
        if dec is None:
            if use_conv:
                # Gaussian means are unbounded (linear); Bernoulli gives logits (BCE from logits).
                output = "logits" if self.likelihood == "bernoulli" else "linear"
                dec = conv.conv_decoder(shape, output=output, channels=out_factor * shape[-1])
            else:
                dec = dense.default_decoder(out_factor * n_features, hidden, act, init)
        if self.likelihood == "bernoulli" and getattr(getattr(dec, "module", dec), "output", None) == "sigmoid":
            # a sigmoid output read as logits would give a silently wrong likelihood
            raise ValueError("the Bernoulli likelihood needs a decoder that outputs logits: "
                             "use conv_decoder(..., output='logits')")
        enc_net = adapter.as_network(enc, "encoder_net")
        dec_net = adapter.as_network(dec, "decoder_net")
        self.model = VAEModel(
            encoder=enc_net,
            decoder=dec_net,
            latent_dim=self.latent_dim,
            input_shape=shape,
            likelihood=self.likelihood,
            learn_variance=self.learn_variance,
            decoder_layout=decoder_layout(dec_net, self.latent_dim, shape, self.learn_variance),
            logvar_clip=self.logvar_clip,
            head_init=init,
        )

    def resolved_scaler_kind(self, X) -> str | None:
        """As the base rule, but never scales for the Bernoulli likelihood (it needs x in [0, 1])."""
        if self.likelihood == "bernoulli" and self.scaler_kind == "auto":
            return None
        return super().resolved_scaler_kind(X)

    def validate_input(self, X, name: str = "X", min_rows: int = 1, check_finite: bool = True) -> np.ndarray:
        arr = check_array(X, name=name, row_shape=self.input_shape, min_rows=min_rows, check_finite=check_finite)
        if self.likelihood == "bernoulli":
            check_unit_interval(arr, name)
        return arr

    # -- training ------------------------------------------------------------------------
    def fit(self, X, cov_elbo: dict | None = None, **run: Unpack[FitRun]) -> dict[str, list[float]]:
        """Trains on X (N, *S) (inliers).

        Args:
          X: training data, (N, F) or images (N, H, W, C) (in [0, 1] for the Bernoulli likelihood).
          cov_elbo: for score_type='mse' with the Gaussian likelihood only: dict(sim=0.05)
            (default), dict(cov_diag=None) or dict(cov_full=None) (estimated from X).
          **run: how the fit runs (keywords): :class:`vaegmm_jax.detectors.fit_driver.FitRun`
            (optimizer, epochs, batch_size, verbose, log_metric (x' decoded from the posterior
            mean), checkpoint_dir, checkpoint_every, resume, options).

        Returns:
          The history: {'recon', 'kl', 'total'(, metric)}: [value per epoch].

        Raises:
          ValueError: bad shapes, non-finite values, pixels outside [0, 1] for the
            Bernoulli likelihood, or a cov_elbo the score type does not use.
        """
        X = self.validate_input(X, min_rows=2)
        fixed_cov = self.likelihood == "gaussian" and not self.learn_variance
        if cov_elbo is not None and not fixed_cov:
            raise ValueError(
                "cov_elbo sets the fixed Gaussian covariance of score_type='mse' with likelihood='gaussian'; "
                f"this detector (score_type={self.score_type!r}, likelihood={self.likelihood!r}) "
                "does not use one"
            )
        if self.model is not None and self.input_shape is None:
            # a VAEModel given to the constructor: check the data against it
            if tuple(X.shape[1:]) != tuple(self.model.input_shape):
                raise ValueError(f"X has rows of shape {X.shape[1:]} but the VAEModel expects {self.model.input_shape}")
            self.input_shape = tuple(X.shape[1:])
        fit_kwargs: dict[str, Any] = {}
        if fixed_cov:
            fit_kwargs["cov_elbo"] = check_cov_elbo(dict(sim=0.05) if cov_elbo is None else cov_elbo)
        return self._fit(X, fit_kwargs, **run)

    def training_objective(self, X: np.ndarray, fit_kwargs: dict) -> training.Objective:
        model, beta = self.model, self.beta
        recon_cov = None
        if "cov_elbo" in fit_kwargs:
            recon_cov = vae_lib.recon_covariance(cov_elbo_arrays(fit_kwargs["cov_elbo"]), X.reshape(X.shape[0], -1))

            def recon_nll(x, out):
                return vae_lib.gaussian_nll(x.reshape(x.shape[0], -1), out.loc.reshape(x.shape[0], -1), recon_cov)

            kl_per_dim = True  # alibi-detect's OutlierVAE convention
        else:
            recon_nll, kl_per_dim = None, False

        def loss_fn(params, x, row_weights, key):
            return vae_loss(model, params, x, row_weights, key, beta=beta, recon_nll=recon_nll, kl_per_dim=kl_per_dim)

        return training.Objective(loss_fn, recon_cov)

    def reconstruct(self, params, x: jax.Array, key: jax.Array) -> jax.Array:
        """Decoded from the posterior mean (no sampling): the VAE's deterministic reconstruction."""
        mean, _ = self.model.encode(params, x)
        return self.model.reconstruction(self.model.decode(params, mean))

    # -- scoring -------------------------------------------------------------------------
    def n_score_samples(self) -> int:
        return self.samples

    def _check_perc(self, outlier_perc) -> float:
        perc = float(outlier_perc)
        if not 0.0 < perc <= 100.0:
            raise ValueError(f"outlier_perc must be in (0, 100], got {outlier_perc}")
        if perc != 100.0 and self.score_type != "mse":
            raise ValueError(
                f"outlier_perc applies to score_type='mse' (a mean of per-feature errors); "
                f"score_type={self.score_type!r} scores whole rows"
            )
        return perc

    def score_chunk_fn(self, n_samples: int, output=None) -> Callable:
        """fn(params, state, x (C, *S), offset, key): ``output`` None or ("instance", perc) gives
        (C,) instance scores (the mean of the top ``perc`` % feature scores for 'mse'), ("feature",)
        the (C, *S) feature scores. Both are chunked, padded and sharded by the base's scoring."""
        model, score_type = self.model, self.score_type
        mode = ("instance", 100.0) if output is None else output
        reduction = "logsumexp" if score_type == "recon_prob" else "mean"

        def score_chunk(params, state, x, offset, key):
            # per-row noise: a row's L samples do not depend on the chunking
            rows = offset + jnp.arange(x.shape[0], dtype=jnp.int32)
            noise = vae_lib.row_normal_noise(key, rows, n_samples, model.latent_dim)
            if mode[0] == "feature":
                if score_type == "mse":
                    return model.mse_feature_score(params, x, noise)
                return model.nll_feature_score(params, x, noise)
            if score_type == "mse":
                return top_percent_mean(model.mse_feature_score(params, x, noise), mode[1])
            return -model.recon_log_prob(params, x, noise, reduction)

        return score_chunk

    def score(self, X, batch_size: int | None = DEFAULT_SCORE_BATCH, key: jax.Array | None = None,
              compute_dtype: str = "float32", row_offset: int = 0, *, outlier_perc: float = 100.0) -> np.ndarray:
        """Instance outlier scores (higher = more anomalous); deterministic for a given key.

        Args:
          X, batch_size, key, compute_dtype, row_offset: as :meth:`BaseDetector.score`.
          outlier_perc: score_type='mse' only: average the top ``outlier_perc`` % of
            each row's feature scores (alibi-detect).

        Returns:
          (N,) float32 scores.
        """
        output = ("instance", self._check_perc(outlier_perc))
        return self._scores(X, output, batch_size, key, compute_dtype, row_offset)

    def feature_score(self, X, batch_size: int | None = DEFAULT_SCORE_BATCH, key: jax.Array | None = None,
                      compute_dtype: str = "float32", row_offset: int = 0) -> np.ndarray:
        """Per-feature scores, (N, *S) float32, from the same latent samples as :meth:`score`.

        'mse': the squared error averaged over the L samples (alibi-detect); 'recon_prob' and
        'recon_prob_mean': the per-feature -log p(x_j | z_l) averaged over the L samples.
        Arguments as :meth:`score`.
        """
        return self._scores(X, ("feature",), batch_size, key, compute_dtype, row_offset)

    def _feature_score(self, X, batch_size: int):
        return self.feature_score(X, batch_size)

    def infer_threshold(self, X, outlier_type: str = "instance", outlier_perc: float = 100.0,
                        threshold_perc: float = 95.0, batch_size: int = DEFAULT_SCORE_BATCH) -> float:
        """Sets the threshold to the ``threshold_perc`` percentile of the scores of X (alibi-detect).

        Args:
          X: (N, *S) data, mostly inliers.
          outlier_type: 'instance' (instance scores) or 'feature' (all feature scores).
          outlier_perc: as :meth:`score` (instance type).
          threshold_perc: percentile in [0, 100].
          batch_size: rows per device chunk.
        """
        if outlier_type not in OUTLIER_TYPES:
            raise ValueError(f"outlier_type must be one of {OUTLIER_TYPES}, got {outlier_type!r}")
        threshold_perc = check_percentile(threshold_perc, "threshold_perc")
        if outlier_type == "instance":
            scores = self.score(X, outlier_perc=outlier_perc, batch_size=batch_size)
        else:
            scores = self.feature_score(X, batch_size=batch_size)
        self.threshold = percentile_threshold(scores, threshold_perc)
        self.fit_config.update(threshold_perc=float(threshold_perc), outlier_type=outlier_type,
                               outlier_perc=float(outlier_perc))
        return self.threshold

    def predict(
        self,
        X,
        outlier_type: str = "instance",
        outlier_perc: float = 100.0,
        batch_size: int = DEFAULT_SCORE_BATCH,
        return_feature_score: bool = True,
        return_instance_score: bool = True,
        key: jax.Array | None = None,
    ) -> dict:
        """alibi-detect's OutlierVAE prediction dict.

        Returns:
          {'meta': {...}, 'data': {'instance_score': (N,) float32 or None, 'feature_score':
          (N, *S) float32 or None, 'is_outlier': int (N,) for outlier_type='instance', or
          (N, *S) (feature score > threshold) for 'feature'}}.
        """
        if outlier_type not in OUTLIER_TYPES:
            raise ValueError(f"outlier_type must be one of {OUTLIER_TYPES}, got {outlier_type!r}")
        self.check_fitted()
        check_threshold(self)
        if not (hasattr(X, "shape") or isinstance(X, (list, tuple))):
            # an iterable of blocks is read twice below (feature and instance scores)
            X = np.concatenate([self.validate_input(b, name="X block") for b in X], axis=0)
        fscore = None
        if return_feature_score or outlier_type == "feature":
            fscore = self.feature_score(X, batch_size=batch_size, key=key)
        iscore = None
        if return_instance_score or outlier_type == "instance":
            iscore = self.score(X, outlier_perc=outlier_perc, batch_size=batch_size, key=key)
        flagged = fscore if outlier_type == "feature" else iscore
        data = {
            "instance_score": iscore if return_instance_score else None,
            "feature_score": fscore if return_feature_score else None,
            "is_outlier": flag_outliers(flagged, self.threshold),
        }
        return {"meta": dict(self.meta), "data": data}

    # -- persistence ---------------------------------------------------------------------
    def _own_config(self) -> dict:
        names = ("score_type", "latent_dim", "samples", "beta", "likelihood", "arch", "custom_nets")
        return {**{name: getattr(self, name) for name in names}, "logvar_clip": list(self.logvar_clip)}

    @classmethod
    def _own_kwargs(cls, config: dict) -> dict:
        return dict(
            score_type=config["score_type"], latent_dim=config["latent_dim"], samples=config["samples"],
            beta=config["beta"], likelihood=config["likelihood"], logvar_clip=tuple(config["logvar_clip"]),
            hidden=config["arch"]["hidden"], activation=config["arch"]["activation"],
            # checkpoints written before kernel_init existed used Flax's default
            kernel_init=config["arch"].get("kernel_init", dense.DEFAULT_KERNEL_INIT),
        )


__all__ = ["OutlierVAE", "SCORE_TYPES"]
