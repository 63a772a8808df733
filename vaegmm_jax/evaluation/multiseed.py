"""Many independently seeded detectors for accuracy tables: a thin layer over the ensemble engine.

Accuracy tables need means and standard deviations over many seeds (DAGMM's run-to-run
spread is large). :func:`fit_many` fits them as the members of one ensemble detector
(``detector.with_seeds(seeds)``), so they train as ONE program through the same engine as
every ``detector.fit`` (:mod:`vaegmm_jax.detectors.fit_driver`): one compilation,
one pass over the data per epoch, the member axis vmapped (or split over devices, see
:mod:`vaegmm_jax.engine.members`). What this module adds is the table-making protocol:

* one training set per seed (``per_seed_data``: X is (S, N, *R));
* a seed whose loss becomes non-finite does not raise: it keeps its last good parameters,
  stops, and is reported in :attr:`MultiSeedFit.failed_epoch` (``FitOptions(on_nonfinite='record')``);
* ``epochs=0`` gives the random-initialisation baseline;
* several epochs per jitted call (``epochs_per_call``, one host sync per call).

Seed ``i`` is the same computation as a single detector with seed ``seeds[i]`` fitted with
the same arguments (float32 rounding aside: batched matmuls may differ in the last bits).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import numpy as np

from vaegmm_jax.detectors.base import BaseDetector
from vaegmm_jax.engine.config import FitOptions
from vaegmm_jax.engine.validation import check_positive_int

__all__ = ["MultiSeedFit", "fit_many", "score_many"]

DetectorFactory = Callable[[int], BaseDetector]


@dataclass
class MultiSeedFit:
    """The result of :func:`fit_many`: S fitted models, the members of one ensemble detector.

    Attributes:
      ensemble: the fitted S-member detector (``ensemble.member(i)`` is seed i alone).
      seeds: the S seeds.
      epochs: epochs trained.
      per_seed_data: whether each seed had its own training set.
      wall_s: seconds spent in :func:`fit_many` (compilation included).
      epochs_per_call: epochs per jitted training call.
      seed_batch_size: seeds trained together (None: all of them).
    """

    ensemble: BaseDetector
    seeds: tuple[int, ...]
    epochs: int
    per_seed_data: bool
    wall_s: float
    epochs_per_call: int = 1
    seed_batch_size: int | None = None

    @property
    def n_seeds(self) -> int:
        """S, the number of seeds."""
        return len(self.seeds)

    @property
    def template(self) -> BaseDetector:
        """The fitted ensemble (every seed's architecture and settings)."""
        return self.ensemble

    def _stacked(self, tree):
        """``tree`` with every leaf (S, ...): a single seed's leaves get the seed axis."""
        return tree if self.n_seeds > 1 else jax.tree.map(lambda a: np.asarray(a)[None], tree)

    @property
    def params(self):
        """Model parameters, every leaf (S, ...)."""
        return self._stacked(self.ensemble.params)

    @property
    def opt_state(self):
        """Optax state, every leaf (S, ...)."""
        return self._stacked(self.ensemble.opt_state)

    @property
    def extra(self):
        """The mixture of GMM detectors, GMMParams with (S, ...) leaves; None for others."""
        gmm = getattr(self.ensemble, "gmm_params", None)
        return None if gmm is None else self._stacked(gmm)

    @property
    def history(self) -> dict[str, np.ndarray]:
        """{term: (S, epochs) float array}; NaN for the epochs after a seed failed."""
        det = self.ensemble
        if self.n_seeds > 1:
            return {k: np.asarray(v, np.float64).reshape(-1, self.n_seeds).T for k, v in det.member_history.items()} \
                if det.member_history else {k: np.zeros((self.n_seeds, 0)) for k in det.loss_terms}
        out = {}
        for k in det.loss_terms:
            row = np.full(self.epochs, np.nan)
            values = det.history.get(k, [])
            row[: len(values)] = values
            out[k] = row[None]
        return out

    @property
    def failed_epoch(self) -> np.ndarray:
        """(S,) the 0-based epoch in which a seed first hit a non-finite step (-1: none)."""
        return np.asarray(self.ensemble.member_failed_epoch)

    @property
    def mixture_ok(self) -> np.ndarray:
        """(S,) the after-fit state (the mixture) is finite and positive definite."""
        return np.asarray(self.ensemble.member_after_fit_ok)

    @property
    def ok(self) -> np.ndarray:
        """(S,) bool: trained without a non-finite step and with a valid mixture."""
        return (self.failed_epoch < 0) & self.mixture_ok

    @property
    def call_s(self) -> list[float]:
        """Wall seconds of each training call (the first includes compilation)."""
        return list(self.ensemble.call_seconds)

    @property
    def train_calls(self) -> int:
        """The number of jitted training calls."""
        return len(self.ensemble.call_seconds)

    @property
    def mixture_s(self) -> float:
        """Wall seconds of the after-fit step (mixture and calibration, compilation included)."""
        return float(self.ensemble.fit_seconds.get("after_fit", 0.0))

    @property
    def devices(self) -> tuple:
        """The devices the seeds were split over (the ensemble's ``devices``, default all local)."""
        return tuple(self.ensemble.devices) if self.ensemble.devices is not None else tuple(jax.local_devices())

    @property
    def batch_size(self) -> int:
        """Training rows per step."""
        return int(self.ensemble.fit_config["batch_size"])

    def detector(self, i: int) -> BaseDetector:
        """Seed ``i`` as an ordinary fitted detector (``score``, ``predict``, ``save`` work)."""
        return self.ensemble.member(i)


def fit_many(
    factory: DetectorFactory | BaseDetector,
    X,
    seeds: Sequence[int],
    *,
    per_seed_data: bool = False,
    epochs_per_call: int | None = 1000,
    devices: Sequence[jax.Device] | None = None,
    seed_batch_size: int | None = None,
    **fit_args: Any,
) -> MultiSeedFit:
    """Fits one detector per seed, all seeds in one program (the members of one ensemble).

    Args:
      factory: ``factory(seed) -> unfitted detector`` (called once, with ``seeds[0]``, for the
        architecture shared by all seeds), or an unfitted detector used as a template.
      X: training rows, (N, *R) shared by all seeds, or (S, N, *R) with
        ``per_seed_data=True`` (one training set per seed; the detector needs ``scaler=None``).
      seeds: S integer seeds.
      per_seed_data: X carries a leading seed axis.
      epochs_per_call: epochs per jitted call (one host sync per call); ``None`` runs all
        epochs in one call.
      devices: devices to split the seeds over (default: the template's ``devices``
        attribute, else all local devices).
      seed_batch_size: train and score the seeds in groups of this many, one group after the
        other (for conv nets on a CPU, 1 is fastest); None vmaps all seeds at once. One device only.
      **fit_args: what the detector's ``fit`` takes; ``epochs`` is required (0 allowed:
        the random-initialisation baseline).

    Returns:
      A :class:`MultiSeedFit`.
    """
    t0 = time.perf_counter()
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    if isinstance(factory, BaseDetector):
        if factory.params is not None:
            raise ValueError("the template detector is already fitted; pass an unfitted one or a factory")
        template = factory
    else:
        template = factory(seeds[0])
    if "epochs" not in fit_args:
        raise TypeError("fit_many needs epochs= (0 for an untrained model)")
    epochs = int(fit_args["epochs"])
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if seed_batch_size is not None:
        check_positive_int(seed_batch_size, "seed_batch_size")
    ensemble = template.with_seeds(seeds)
    if devices is not None:
        ensemble.devices = tuple(devices)
    per_call = max(epochs, 1) if epochs_per_call is None else epochs_per_call
    options = FitOptions(member_data=per_seed_data, on_nonfinite="record", epochs_per_call=per_call,
                         member_group_size=seed_batch_size, allow_zero_epochs=True)
    ensemble.fit(X, verbose=False, options=options, **fit_args)
    return MultiSeedFit(ensemble=ensemble, seeds=seeds, epochs=epochs, per_seed_data=per_seed_data,
                        wall_s=time.perf_counter() - t0, epochs_per_call=min(per_call, max(epochs, 1)),
                        seed_batch_size=seed_batch_size)


def score_many(
    fit: MultiSeedFit,
    X,
    *,
    per_seed_data: bool = False,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> np.ndarray:
    """Scores rows with every seed's model (:meth:`BaseDetector.score_members`), in one program.

    Row ``r`` of seed ``i`` gets the same latent noise as ``fit.detector(i).score(X)``.

    Args:
      fit: from :func:`fit_many`.
      X: (N, *R) rows scored by every seed, or (S, N, *R) with ``per_seed_data=True``.
      per_seed_data: X carries a leading seed axis.
      chunk_size: rows per chunk (default: the detector's default chunk, shared among the members).
      devices: devices whose rows each chunk is split over (default: the fit's).

    Returns:
      (S, N) float32 scores, higher = more anomalous.
    """
    det = fit.ensemble
    saved = det.devices
    if devices is not None:
        det.devices = tuple(devices)
    try:
        return det.score_members(X, batch_size=chunk_size, member_data=per_seed_data)
    finally:
        det.devices = saved
