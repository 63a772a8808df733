"""Published architectures and hyper-parameters, as plain frozen dataclasses.

* DAGMM paper (Zong et al., ICLR 2018), section 4 / appendix: KDDCUP, Thyroid,
  Arrhythmia and KDDCUP-Rev, built as :class:`~vaegmm_jax.OutlierAEGMM`.
* alibi-detect's KDD example: :class:`~vaegmm_jax.OutlierVAEGMM` with latent 2, K 2,
  nets 18-20-15-7 relu, 50 epochs, batch 1024, cov_elbo sim 0.0025, lr 1e-4, and Keras'
  Glorot-uniform weights.

Read a preset, override any field with ``dataclasses.replace`` (or as keyword
arguments of :func:`make_detector` / :func:`fit_kwargs`), build the detector and
train it::

    from vaegmm_jax.detectors import presets
    p = presets.THYROID
    det = presets.make_detector(p, seed=3)
    det.fit(X_train, **presets.fit_kwargs(p, epochs=200))
    det.infer_threshold(X_train, threshold_perc=p.threshold_perc)

Layer mapping: the default MLP encoder applies the activation after every hidden
layer and the model adds a linear latent head, so ``hidden=(60, 30, 10)``,
``latent_dim=1``, tanh is the paper's FC(120,60,tanh)-FC(60,30,tanh)-FC(30,10,tanh)-FC(10,1);
the decoder mirrors it with a linear output layer, FC(1,10,tanh)-...-FC(60,120); the
estimation net is FC(D, gmm_hidden, act)-Dropout(gmm_dropout)-FC(gmm_hidden, K) with
the softmax applied by the model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Union

import optax

from vaegmm_jax.detectors.gmm_detectors import OutlierAEGMM, OutlierVAEGMM


@dataclass(frozen=True)
class DAGMMPreset:
    """DAGMM (OutlierAEGMM) settings from the paper.

    Attributes:
      name: short name.
      n_features: input dimension in the paper (the nets are sized from ``hidden``,
        so data with another width, e.g. KDD's 118 one-hot columns, works unchanged).
      hidden: encoder hidden widths (decoder mirrored).
      latent_dim: size of the compressed representation.
      activation: hidden activation of encoder, decoder and estimation net.
      n_gmm: K mixture components.
      gmm_hidden: estimation net hidden width.
      gmm_dropout: estimation net dropout rate (training only).
      recon_features: 'dagmm' (relative Euclidean distance, cosine similarity).
      kernel_init: weight initialiser of the nets (``nets.dense.KERNEL_INITS``).
      epochs, batch_size, learning_rate: Adam training.
      w_energy: lambda1.
      w_cov_diag: lambda2.
      anomaly_ratio: fraction of test rows flagged in the paper's protocol (the top
        ``anomaly_ratio`` of energies).
      paper_f1: the paper's reported F1 (Table 2), for reference.
      source: where the numbers come from.
    """

    name: str
    n_features: int
    hidden: tuple[int, ...]
    latent_dim: int
    n_gmm: int
    epochs: int
    batch_size: int
    anomaly_ratio: float
    paper_f1: float
    activation: str = "tanh"
    gmm_hidden: int = 10
    gmm_dropout: float = 0.5
    recon_features: str = "dagmm"
    kernel_init: str = "lecun_normal"
    learning_rate: float = 1e-4
    w_energy: float = 0.1
    w_cov_diag: float = 0.005
    source: str = "Zong et al., DAGMM, ICLR 2018, section 4.2 and Table 2"

    detector = "OutlierAEGMM"

    @property
    def threshold_perc(self) -> float:
        """The percentile of scores at which the paper's protocol thresholds: 100 (1 - ratio)."""
        return 100.0 * (1.0 - self.anomaly_ratio)


@dataclass(frozen=True)
class VAEGMMPreset:
    """OutlierVAEGMM settings (alibi-detect's KDD example).

    Attributes:
      name: short name.
      n_features: input dimension (18 standardised continuous KDD features).
      hidden: encoder hidden widths (decoder mirrored, linear output).
      latent_dim, n_gmm, gmm_hidden, gmm_dropout, activation: the architecture.
      samples: L latent samples when scoring.
      beta: KL weight.
      recon_features: 'alibi' (alibi-detect 0.13's ``eucl_cosim_features``, quirks
        included), as in the example this preset reproduces. On its standardised
        features the paper's 'dagmm' features fail: ||x|| of typical normal rows is near
        0, so ||x - x'|| / ||x|| is noise (2 seeds, 5 epochs: F1 0.16 with 'dagmm', 0.93
        with 'alibi').
      kernel_init: weight initialiser of the nets (``nets.dense.KERNEL_INITS``):
        'glorot_uniform', the Keras default that the example's nets and alibi's heads use.
      epochs, batch_size, learning_rate: Adam training.
      sim: the isotropic standard deviation of the reconstruction likelihood (cov_elbo).
      w_recon, w_energy, w_cov_diag: alibi's loss weights.
      threshold_perc: percentile of inlier scores used as the threshold.
      reference_f1: the example's reported F1.
      source: where the numbers come from.
    """

    name: str = "alibi_kdd_vaegmm"
    n_features: int = 18
    hidden: tuple[int, ...] = (20, 15, 7)
    latent_dim: int = 2
    n_gmm: int = 2
    gmm_hidden: int = 10
    gmm_dropout: float = 0.0
    activation: str = "relu"
    samples: int = 10
    beta: float = 1.0
    recon_features: str = "alibi"
    kernel_init: str = "glorot_uniform"
    epochs: int = 50
    batch_size: int = 1024
    learning_rate: float = 1e-4
    sim: float = 0.0025
    w_recon: float = 1e-7
    w_energy: float = 0.1
    w_cov_diag: float = 0.005
    threshold_perc: float = 95.0
    reference_f1: float = 0.9463
    source: str = "alibi-detect documentation, 'VAE-GMM outlier detection on KDD Cup 99'"

    detector = "OutlierVAEGMM"


Preset = Union[DAGMMPreset, VAEGMMPreset]

#: What the published models score: the sample energy of rows the protocol has already scaled
#: (no second, in-detector scaling). Every preset here builds its detector with these, so the
#: library's defaults (standard scaling, energy plus reconstruction error) never change a paper
#: number. Pass them yourself to get the published behaviour with other settings.
PAPER_SCORING: dict[str, Any] = {"scaler": None, "score_type": "energy"}


@dataclass(frozen=True)
class CompatDefaults:
    """Another library's defaults, by detector class: constructor and ``fit`` keyword arguments.

    ``fit`` holds ``learning_rate`` (Adam) instead of an optimizer object; :meth:`fit_kwargs`
    builds the optimizer. Use it as::

        det = presets.ALIBI.make_detector(OutlierVAEGMM, n_gmm=2, latent_dim=2, encoder_net=...)
        det.fit(X, **presets.ALIBI.fit_kwargs(det, epochs=50))

    Attributes:
      name: short name.
      detector: {class name: constructor keyword arguments}.
      fit: {class name: fit keyword arguments}.
      source: where the values come from.
    """

    name: str
    detector: Mapping[str, Mapping[str, Any]]
    fit: Mapping[str, Mapping[str, Any]]
    source: str

    def _class_name(self, cls_or_detector) -> str:
        name = cls_or_detector.__name__ if isinstance(cls_or_detector, type) else type(cls_or_detector).__name__
        if name not in self.detector:
            raise ValueError(f"{self.name} defaults cover {sorted(self.detector)}, not {name}")
        return name

    def detector_kwargs(self, cls_or_detector, **overrides: Any) -> dict[str, Any]:
        """The constructor keyword arguments for a detector class, ``overrides`` winning."""
        return {**self.detector[self._class_name(cls_or_detector)], **overrides}

    def make_detector(self, cls, **overrides: Any):
        """``cls(**detector_kwargs(cls, **overrides))``: the detector with these defaults."""
        return cls(**self.detector_kwargs(cls, **overrides))

    def fit_kwargs(self, cls_or_detector, **overrides: Any) -> dict[str, Any]:
        """The ``fit`` keyword arguments (an ``optax.adam`` for the learning rate), ``overrides`` winning."""
        kw = {**self.fit[self._class_name(cls_or_detector)], **overrides}
        if "learning_rate" in kw:
            kw["optimizer"] = optax.adam(float(kw.pop("learning_rate")))
        if isinstance(kw.get("cov_elbo"), Mapping):
            kw["cov_elbo"] = dict(kw["cov_elbo"])
        return kw


_ALIBI_TRAINING = {"epochs": 20, "batch_size": 64, "learning_rate": 1e-3}
#: alibi-detect 0.13's defaults (its ``__init__`` and ``fit`` signatures): the sample energy of
#: unscaled inputs, alibi's quirky reconstruction features, Keras' Glorot-uniform weights,
#: w_recon 1e-7, cov_elbo sim 0.05, 20 epochs of batch 64 at Adam 1e-3. alibi has no
#: default nets or sizes: give ``n_gmm``, ``latent_dim`` (and nets) as you would there.
ALIBI = CompatDefaults(
    name="alibi",
    detector={
        "OutlierVAEGMM": {"samples": 10, "beta": 1.0, "recon_features": "alibi", "kernel_init": "glorot_uniform",
                          **PAPER_SCORING},
        "OutlierAEGMM": {"recon_features": "alibi", "kernel_init": "glorot_uniform", **PAPER_SCORING},
        "OutlierVAE": {"score_type": "mse", "samples": 10, "beta": 1.0, "kernel_init": "glorot_uniform",
                       "scaler": None},
    },
    fit={
        "OutlierVAEGMM": {"w_recon": 1e-7, "w_energy": 0.1, "w_cov_diag": 0.005, "cov_elbo": {"sim": 0.05},
                          **_ALIBI_TRAINING},
        "OutlierAEGMM": {"w_energy": 0.1, "w_cov_diag": 0.005, **_ALIBI_TRAINING},
        "OutlierVAE": {"cov_elbo": {"sim": 0.05}, **_ALIBI_TRAINING},
    },
    source="alibi-detect 0.13 OutlierVAEGMM / OutlierAEGMM / OutlierVAE constructor and fit defaults",
)

#: KDDCUP 10%: FC(120,60,tanh)-FC(60,30,tanh)-FC(30,10,tanh)-FC(10,1)-mirror;
#: estimation FC(3,10,tanh)-Drop(0.5)-FC(10,4,softmax); K=4; 200 epochs; batch 1024.
KDDCUP = DAGMMPreset(
    name="kddcup", n_features=120, hidden=(60, 30, 10), latent_dim=1, n_gmm=4, epochs=200, batch_size=1024,
    anomaly_ratio=0.20, paper_f1=0.9369,
)
#: Thyroid: FC(6,12,tanh)-FC(12,4,tanh)-FC(4,1)-mirror; estimation FC(3,10,tanh)-Drop(0.5)-FC(10,2,softmax);
#: K=2; 20,000 epochs; batch 1024.
THYROID = DAGMMPreset(
    name="thyroid", n_features=6, hidden=(12, 4), latent_dim=1, n_gmm=2, epochs=20_000, batch_size=1024,
    anomaly_ratio=0.025, paper_f1=0.4782,
)
#: Arrhythmia: FC(274,10,tanh)-FC(10,2)-mirror; estimation FC(4,10,tanh)-Drop(0.5)-FC(10,2,softmax);
#: K=2; 10,000 epochs; batch 128.
ARRHYTHMIA = DAGMMPreset(
    name="arrhythmia", n_features=274, hidden=(10,), latent_dim=2, n_gmm=2, epochs=10_000, batch_size=128,
    anomaly_ratio=0.15, paper_f1=0.4983,
)
#: KDDCUP-Rev: the KDDCUP nets with K=2, 400 epochs (attacks are the anomalies).
KDDCUP_REV = dataclasses.replace(KDDCUP, name="kddcup_rev", n_gmm=2, epochs=400, paper_f1=0.9380)
#: alibi-detect's KDD example VAEGMM.
ALIBI_KDD_VAEGMM = VAEGMMPreset()

PRESETS: dict[str, Preset] = {p.name: p for p in (KDDCUP, THYROID, ARRHYTHMIA, KDDCUP_REV, ALIBI_KDD_VAEGMM)}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (one of ``PRESETS``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def _resolve(preset: Preset | str) -> Preset:
    if isinstance(preset, str):
        return get_preset(preset)
    if not isinstance(preset, (DAGMMPreset, VAEGMMPreset)):
        raise TypeError(f"preset must be a DAGMMPreset, a VAEGMMPreset or a name, got {type(preset).__name__}")
    return preset


def _split_overrides(preset: Preset, overrides: dict) -> tuple[Preset, dict]:
    fields = {f.name for f in dataclasses.fields(preset)}
    mine = {k: v for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields}
    return (dataclasses.replace(preset, **mine) if mine else preset), rest


def make_detector(preset: Preset | str, **overrides: Any):
    """Builds the (unfitted) detector a preset describes.

    Args:
      preset: a preset or its name.
      **overrides: preset fields (``n_gmm=2``, ``hidden=(...)``...) replace the preset's;
        any other keyword goes to the detector's constructor (``seed``, ``threshold``,
        ``eps``, ``encoder_net``...).

    Returns:
      An OutlierAEGMM (DAGMM presets) or OutlierVAEGMM (VAEGMM presets).
    """
    preset, rest = _split_overrides(_resolve(preset), overrides)
    kwargs = dict(
        n_gmm=preset.n_gmm, latent_dim=preset.latent_dim, hidden=tuple(preset.hidden),
        gmm_hidden=preset.gmm_hidden, gmm_dropout=preset.gmm_dropout, activation=preset.activation,
        recon_features=preset.recon_features, kernel_init=preset.kernel_init, **PAPER_SCORING,
    )
    if isinstance(preset, VAEGMMPreset):
        kwargs.update(samples=preset.samples, beta=preset.beta)
        cls = OutlierVAEGMM
    else:
        cls = OutlierAEGMM
    kwargs.update(rest)
    return cls(**kwargs)


def fit_kwargs(preset: Preset | str, **overrides: Any) -> dict[str, Any]:
    """The keyword arguments of ``detector.fit`` a preset describes.

    Args:
      preset: a preset or its name.
      **overrides: preset fields (``epochs``, ``learning_rate``...) replace the preset's;
        other keywords (``verbose``, ``checkpoint_dir``...) are passed through.

    Returns:
      {'optimizer': optax.adam(learning_rate), 'epochs', 'batch_size', 'w_energy',
      'w_cov_diag'} plus 'w_recon' and 'cov_elbo' for VAEGMM presets.
    """
    preset, rest = _split_overrides(_resolve(preset), overrides)
    out: dict[str, Any] = dict(
        optimizer=optax.adam(preset.learning_rate), epochs=preset.epochs, batch_size=preset.batch_size,
        w_energy=preset.w_energy, w_cov_diag=preset.w_cov_diag,
    )
    if isinstance(preset, VAEGMMPreset):
        out.update(w_recon=preset.w_recon, cov_elbo=dict(sim=preset.sim))
    out.update(rest)
    return out


__all__ = [
    "DAGMMPreset", "VAEGMMPreset", "Preset", "KDDCUP", "THYROID", "ARRHYTHMIA", "KDDCUP_REV",
    "ALIBI_KDD_VAEGMM", "PRESETS", "get_preset", "make_detector", "fit_kwargs", "PAPER_SCORING", "CompatDefaults",
    "ALIBI",
]
