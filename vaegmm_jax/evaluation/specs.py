"""What a protocol trains on every run: a detector factory with its fit arguments (:class:`DetectorSpec`).

The specs of the paper tables: DAGMM (:func:`dagmm_spec`) and its untrained baseline
(:func:`random_init_spec`) with a paper preset, VAEGMM (:func:`vaegmm_spec`) and the VAE
(:func:`vae_spec`) with a preset's nets and schedule, and scikit-learn's IsolationForest
(:func:`isolation_forest_spec`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import optax
from sklearn.ensemble import IsolationForest

from vaegmm_jax.detectors import OutlierVAE, OutlierVAEGMM, presets

__all__ = [
    "DetectorSpec",
    "RESTART_SEED_STRIDE",
    "dagmm_spec",
    "random_init_spec",
    "vaegmm_spec",
    "vae_spec",
    "isolation_forest_spec",
]

#: model seed offset between the restarts of one run (:attr:`DetectorSpec.restarts`)
RESTART_SEED_STRIDE = 1_000_003


@dataclass
class DetectorSpec:
    """What to train on every run.

    Attributes:
      name: label in the report.
      factory: ``factory(seed) -> unfitted vaegmm_jax detector`` (None for sklearn).
      fit_args: keyword arguments of ``detector.fit`` (``epochs`` 0 = untrained).
      sklearn_factory: ``factory(seed) -> estimator`` with ``fit`` and ``score_samples``
        (higher = more normal), e.g. IsolationForest; used when ``factory`` is None.
      score_chunk: rows per scoring chunk (all seeds at once).
      epochs_per_call: epochs per jitted training call.
      seed_batch_size: seeds trained and scored together (``multiseed.fit_many``);
        None vmaps all of them (1 is fastest for conv nets on a CPU).
      restarts: models trained per run on the run's training rows (model seeds
        ``seed + RESTART_SEED_STRIDE * r``, r = 0..restarts-1, so restart 0 is the
        single-model run); the run reports the one with the lowest final training
        loss term ``restart_select``. Training data only, like scikit-learn's
        ``GaussianMixture(n_init=...)``; costs ``restarts`` times the training.
      restart_select: the ``final_loss`` term that picks the restart (lowest wins).
      description: plain-words settings for the report.
    """

    name: str
    factory: Callable[[int], Any] | None = None
    fit_args: dict = field(default_factory=dict)
    sklearn_factory: Callable[[int], Any] | None = None
    score_chunk: int = 16384
    epochs_per_call: int | None = 1000
    seed_batch_size: int | None = None
    restarts: int = 1
    restart_select: str = "energy"
    description: str = ""

    def __post_init__(self):
        """Checks ``restarts`` (a positive integer, for vaegmm_jax detectors only)."""
        if int(self.restarts) != self.restarts or self.restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {self.restarts!r}")
        if self.restarts > 1 and self.factory is None:
            raise ValueError("restarts apply to vaegmm_jax detectors (factory), not to sklearn estimators")


def _preset(preset):
    """The preset named ``preset`` (:func:`vaegmm_jax.detectors.presets.get_preset`), or ``preset`` itself."""
    return presets.get_preset(preset) if isinstance(preset, str) else preset


def _check_preset_fields(p, overrides: dict) -> None:
    """A TypeError naming the keys of ``overrides`` that are not fields of preset ``p``."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(p)}
    if unknown:
        raise TypeError(f"unknown preset fields {sorted(unknown)} for preset {p.name!r}")


def _preset_and_fit_args(preset, overrides: dict, epochs_scale: float):
    """(preset with ``overrides`` applied, its fit kwargs with the epochs scaled unless overridden)."""
    p = _preset(preset)
    _check_preset_fields(p, overrides)
    p = dataclasses.replace(p, **overrides) if overrides else p
    fit = presets.fit_kwargs(p)
    if "epochs" not in overrides:
        fit["epochs"] = _scaled_epochs(p.epochs, epochs_scale)
    return p, fit


def _scaled_epochs(epochs: int, epochs_scale: float) -> int:
    """``round(epochs * epochs_scale)``, at least 1; a ValueError unless ``epochs_scale`` is positive."""
    if not epochs_scale > 0:
        raise ValueError(f"epochs_scale must be positive, got {epochs_scale}")
    return max(1, int(round(epochs * float(epochs_scale))))


def dagmm_spec(
    preset, *, epochs_scale: float = 1.0, name: str = "DAGMM", restarts: int = 1, restart_select: str = "energy",
    **overrides,
) -> DetectorSpec:
    """OutlierAEGMM with a DAGMM paper preset (architecture, epochs x ``epochs_scale``, batch, Adam lr, lambdas).

    Args:
      preset: a :mod:`vaegmm_jax.detectors.presets` preset or its name ('kddcup', 'thyroid', ...).
      epochs_scale: fraction of the preset's epochs (at least 1 epoch).
      name: report label.
      restarts, restart_select: as :class:`DetectorSpec` (1: the paper's one model per run).
      **overrides: preset fields (e.g. ``epochs=5``, ``batch_size=...``).
    """
    p, fit = _preset_and_fit_args(preset, overrides, epochs_scale)
    picked = f"; best of {restarts} restarts by final training {restart_select}" if restarts > 1 else ""
    return DetectorSpec(
        name=name,
        factory=lambda s: presets.make_detector(p, seed=s),
        fit_args=fit,
        restarts=restarts,
        restart_select=restart_select,
        description=f"OutlierAEGMM, preset {p.name}: hidden {tuple(p.hidden)}, latent {p.latent_dim}, K {p.n_gmm}, "
        f"{fit['epochs']} epochs, batch {fit['batch_size']}, Adam lr {p.learning_rate:g}, init {p.kernel_init}{picked}",
    )


def random_init_spec(preset, *, name: str = "random-init", **overrides) -> DetectorSpec:
    """The DAGMM preset's architecture, untrained (seeded initialisation); mixture fitted on the training rows."""
    spec = dagmm_spec(preset, name=name, **overrides)
    p = _preset(preset)
    spec.fit_args["epochs"] = 0
    spec.description = (
        f"OutlierAEGMM, preset {p.name}'s architecture, untrained (seeded init); mixture fitted on the training rows"
    )
    return spec


def vaegmm_spec(
    preset,
    *,
    epochs_scale: float = 1.0,
    name: str = "VAEGMM",
    recon: str = "dagmm",
    samples: int = 10,
    beta: float = 1.0,
    **overrides,
) -> DetectorSpec:
    """OutlierVAEGMM with a DAGMM preset's nets and training schedule.

    For a DAGMM preset the architecture (hidden, latent, K, estimation net) and the
    schedule are the preset's; the latent is sampled (mean / log-variance heads) and
    scores average ``samples`` draws. ``recon``: 'dagmm' sets ``cov_elbo=dict(sim=sqrt(1/2))``
    and ``w_recon=1`` so that the reconstruction term equals DAGMM's sum of squared
    errors (plus a constant); 'alibi' keeps alibi-detect's defaults (sim 0.05,
    w_recon 1e-7). For a VAEGMM preset (alibi KDD) its own settings are used.
    """
    p, fit = _preset_and_fit_args(preset, overrides, epochs_scale)
    if isinstance(p, presets.VAEGMMPreset):
        return DetectorSpec(
            name=name,
            factory=lambda s: presets.make_detector(p, seed=s),
            fit_args=fit,
            description=f"OutlierVAEGMM, preset {p.name}: hidden {tuple(p.hidden)} {p.activation}, latent {p.latent_dim}, "
            f"K {p.n_gmm}, {fit['epochs']} epochs, batch {fit['batch_size']}, sim {p.sim:g}, lr {p.learning_rate:g}, "
            f"init {p.kernel_init}",
        )
    if recon not in ("dagmm", "alibi"):
        raise ValueError(f"recon must be 'dagmm' or 'alibi', got {recon!r}")
    if recon == "dagmm":
        fit.update(w_recon=1.0, cov_elbo=dict(sim=math.sqrt(0.5)))
    else:
        fit.update(w_recon=1e-7, cov_elbo=dict(sim=0.05))

    def factory(seed):
        return OutlierVAEGMM(
            n_gmm=p.n_gmm, latent_dim=p.latent_dim, hidden=tuple(p.hidden), gmm_hidden=p.gmm_hidden,
            gmm_dropout=p.gmm_dropout, activation=p.activation, recon_features=p.recon_features,
            kernel_init=p.kernel_init, samples=samples, beta=beta, seed=seed, **presets.PAPER_SCORING,
        )

    return DetectorSpec(
        name=name,
        factory=factory,
        fit_args=fit,
        description=f"OutlierVAEGMM with preset {p.name}'s nets ({p.kernel_init} init) and schedule "
        f"({fit['epochs']} epochs), L {samples}, "
        f"beta {beta:g}, recon {'SSE-matched (sim sqrt(1/2), w_recon 1)' if recon == 'dagmm' else 'alibi (sim 0.05, w_recon 1e-7)'}",
    )


def vae_spec(
    preset=None,
    *,
    epochs: int | None = None,
    epochs_scale: float = 1.0,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    name: str = "VAE",
    score_type: str = "recon_prob",
    likelihood: str = "gaussian",
    latent_dim: int | None = None,
    hidden: tuple[int, ...] | None = None,
    samples: int = 10,
    score_chunk: int = 16384,
    seed_batch_size: int | None = None,
    kernel_init: str | None = None,
) -> DetectorSpec:
    """OutlierVAE; with a DAGMM preset, its encoder widths, latent size and schedule.

    Args:
      preset: a DAGMM preset (or None: give ``epochs`` and ``batch_size``; nets default).
      epochs, batch_size, learning_rate, latent_dim, hidden: override the preset's.
      epochs_scale: fraction of the preset's epochs.
      score_type: 'recon_prob' (An & Cho, learned variance), 'recon_prob_mean' or 'mse'.
      likelihood: 'gaussian' or 'bernoulli' (images in [0, 1]).
      samples: L.
      score_chunk: rows per scoring chunk.
      seed_batch_size: see :class:`DetectorSpec`.
      kernel_init: weight initialiser of the dense nets (default: the preset's, else Flax's).
    """
    p = None if preset is None else _preset(preset)
    if p is None and (epochs is None or batch_size is None):
        raise ValueError("vae_spec without a preset needs epochs and batch_size")
    ep = epochs if epochs is not None else _scaled_epochs(p.epochs, epochs_scale)
    bs = batch_size if batch_size is not None else p.batch_size
    lr = learning_rate if learning_rate is not None else (p.learning_rate if p is not None else 1e-3)
    lat = latent_dim if latent_dim is not None else (p.latent_dim if p is not None else 2)
    hid = hidden if hidden is not None else (tuple(p.hidden) if p is not None else None)
    act = p.activation if p is not None else "tanh"
    init = kernel_init or (p.kernel_init if p is not None else "lecun_normal")

    def factory(seed):
        # the paper protocols scale their rows themselves (protocols.SCALINGS): no second scaling
        return OutlierVAE(score_type=score_type, likelihood=likelihood, latent_dim=lat, hidden=hid,
                          activation=act, kernel_init=init, samples=samples, seed=seed, scaler=None)

    return DetectorSpec(
        name=name,
        factory=factory,
        fit_args=dict(epochs=ep, batch_size=bs, optimizer=optax.adam(lr)),
        score_chunk=score_chunk,
        seed_batch_size=seed_batch_size,
        description=f"OutlierVAE {score_type}, {likelihood}, latent {lat}, hidden {hid or 'default'}, {ep} epochs, "
        f"batch {bs}, Adam lr {lr:g}, L {samples}",
    )


def isolation_forest_spec(name: str = "IsolationForest", **kwargs) -> DetectorSpec:
    """scikit-learn IsolationForest (defaults: 100 trees, 256-row subsamples), seeded per run."""
    def factory(seed):
        return IsolationForest(random_state=int(seed), **kwargs)

    return DetectorSpec(
        name=name, sklearn_factory=factory,
        description="sklearn IsolationForest " + (", ".join(f"{k}={v}" for k, v in kwargs.items()) or "(defaults)"),
    )
