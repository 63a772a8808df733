"""A protocol's runs as data: per-seed training and evaluation rows, their scaling and fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import jax
import numpy as np

from vaegmm_jax.data import fit_column_scaler, multiplier_and_offset

__all__ = ["RunData", "FINGERPRINT_KIND_WORDS", "transform_definition", "fit_run_scalings"]


@dataclass
class RunData:
    """Per-seed training and evaluation rows of a protocol, as indices into shared source rows.

    Every seed has the same number of training rows and of rows in each evaluation
    set, so the runs of a detector train and score as one vmapped program. Rows are
    materialised on demand, with the run's feature transform (fitted on the run's
    training rows) applied: all seeds at once on the device (:meth:`device`, for
    vaegmm_jax detectors) or one seed on the host (:meth:`host`, for scikit-learn).

    Attributes:
      protocol: 'dagmm', 'alibi_kdd' or 'contaminated_mnist'.
      dataset: data set name.
      seeds: S run seeds.
      source: (M, *R) float32 rows every index points into.
      train_idx: (S, n_train) int64 training rows of each run.
      evals: {name: (idx (S, n) int64, y (S, n) int64)}; always 'test', plus
        'threshold' (alibi_kdd) or 'val' (contaminated_mnist).
      scale, offset: (S, F) float32 per-run affine feature transform
        ``x * scale + offset`` (min-max or standardisation fitted on the run's
        training rows; identity columns have scale 1, offset 0), or None for none.
      transform: the transform's definition (kind and columns), which with the training rows
        decides ``scale`` and ``offset``: what :meth:`fingerprint` hashes in their place,
        since the fitted floats differ in the last bit between platforms.
      threshold_rule: 'ratio' (flag the top test-anomaly-ratio of the test scores),
        'percentile' (``threshold_perc`` percentile of the 'threshold' set's scores,
        flags ``score > threshold``) or 'f1_val' (F1-optimal on 'val', flags ``score >= threshold``).
      threshold_perc: for 'percentile'.
      info: protocol details for the report (sizes, contamination...).
    """

    protocol: str
    dataset: str
    seeds: tuple[int, ...]
    source: np.ndarray
    train_idx: np.ndarray
    evals: dict[str, tuple[np.ndarray, np.ndarray]]
    scale: np.ndarray | None
    offset: np.ndarray | None
    threshold_rule: str
    threshold_perc: float | None = None
    info: dict = field(default_factory=dict)
    transform: str = ""
    _device: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)
    _fingerprints: dict = field(default_factory=dict, repr=False)

    @property
    def n_seeds(self) -> int:
        """S, the number of runs."""
        return len(self.seeds)

    @property
    def n_train(self) -> int:
        """The number of training rows of every run."""
        return int(self.train_idx.shape[1])

    def indices(self, name: str) -> np.ndarray:
        """(S, n) row indices of 'train' or an evaluation set."""
        return self.train_idx if name == "train" else self.evals[name][0]

    def labels(self, name: str) -> np.ndarray:
        """(S, n) labels of an evaluation set (1 = anomaly)."""
        return self.evals[name][1]

    def host(self, name: str, i: int) -> np.ndarray:
        """Run ``i``'s rows of 'train' or an evaluation set, transformed: (n, *R) float32 (NumPy)."""
        x = self.source[self.indices(name)[i]]
        if self.scale is not None:
            x = x * self.scale[i] + self.offset[i]
        return np.ascontiguousarray(x, dtype=np.float32)

    def device(self, name: str):
        """All runs' rows of 'train' or an evaluation set, transformed: (S, n, *R) float32 on the
        default device (gathered there from the source; cached until :meth:`release`;
        thread-safe, so several detectors can run on the same data concurrently)."""
        with self._lock:
            if name not in self._device:
                if "source" not in self._device:
                    self._device["source"] = jax.device_put(self.source)
                self._device[name] = _gather_transform(
                    self._device["source"], jax.device_put(self.indices(name).astype(np.int32)),
                    None if self.scale is None else jax.device_put(self.scale),
                    None if self.offset is None else jax.device_put(self.offset),
                )
            return self._device[name]

    def release(self) -> None:
        """Drops the cached device arrays."""
        self._device.clear()

    def subset(self, seeds: Sequence[int]) -> "RunData":
        """The runs of ``seeds`` only (in that order), sharing ``source``.

        The runs of a vmapped program are independent, so :func:`~vaegmm_jax.evaluation.running.run_protocol` on a
        subset gives each of its seeds the result the full set gives it: a long table
        can run a few seeds at a time (e.g. resumed after an interruption).

        Args:
          seeds: a non-empty selection of ``self.seeds``, without repeats.

        Returns:
          :class:`RunData` with S' = len(seeds) runs, no device arrays yet, and the
          fingerprints already computed (a run's fingerprint does not depend on its position).
        """
        seeds = tuple(int(s) for s in seeds)
        where = {s: i for i, s in enumerate(self.seeds)}
        missing = [s for s in seeds if s not in where]
        if not seeds or missing or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty selection of {self.seeds} without repeats, got {seeds}")
        rows = np.asarray([where[s] for s in seeds], dtype=np.int64)
        return dataclasses.replace(
            self, seeds=seeds, train_idx=self.train_idx[rows],
            evals={k: (idx[rows], y[rows]) for k, (idx, y) in self.evals.items()},
            scale=None if self.scale is None else self.scale[rows],
            offset=None if self.offset is None else self.offset[rows],
            info=dict(self.info), _device={}, _lock=threading.Lock(),
            _fingerprints={j: self._fingerprints[int(i)] for j, i in enumerate(rows) if int(i) in self._fingerprints},
        )

    def fingerprint(self, i: int) -> str:
        """SHA-256 hex digest of run ``i``'s rows: protocol, rule, the training and evaluation rows
        themselves (in order), the labels and the feature transform's definition
        (:attr:`transform`; not its fitted floats, which a GPU and a CPU round differently:
        a run trained on one must match its rows on the other).

        Equal fingerprints mean the same training and evaluation data, however the source is
        laid out (contaminated MNIST, for one, stacks each seed's set at an offset that
        depends on the other seeds), so a stored result can be matched to its run.
        Memoised per run.
        """
        with self._lock:
            if i in self._fingerprints:
                return self._fingerprints[i]
        h = hashlib.sha256()
        h.update(repr((self.protocol, self.dataset, self.source.shape[1:], str(self.source.dtype),
                       self.threshold_rule, self.threshold_perc, sorted(self.evals))).encode())
        for idx in [self.train_idx[i]] + [self.evals[k][0][i] for k in sorted(self.evals)]:
            h.update(np.int64(idx.size).tobytes())
            for start in range(0, idx.size, 65536):  # bounded host memory on large sets
                h.update(np.ascontiguousarray(self.source[idx[start:start + 65536]]).tobytes())
        for k in sorted(self.evals):
            h.update(np.ascontiguousarray(self.evals[k][1][i], dtype=np.int64).tobytes())
        if self.scale is not None:
            if not self.transform:
                raise ValueError("RunData with a feature transform needs its definition (transform) to be fingerprinted")
            h.update(self.transform.encode())
        digest = h.hexdigest()
        with self._lock:
            self._fingerprints[i] = digest
        return digest


@jax.jit
def _gather_transform(source, idx, scale, offset):
    """source (M, *R), idx (S, n), scale/offset (S, F) or None -> (S, n, *R) = source[idx] * scale + offset."""
    x = source[idx]
    if scale is None:
        return x
    return x * scale[:, None, :] + offset[:, None, :]


#: How each scaling kind is spelled in a run's transform definition (:meth:`RunData.fingerprint`).
#: The stored runs' keys were made with these words (z-scoring was called 'standardize' then):
#: changing one would orphan every stored run of that kind.
FINGERPRINT_KIND_WORDS = {"minmax": "minmax", "standard": "standardize"}


def transform_definition(kind: str, columns: np.ndarray) -> str:
    """The definition of a per-run scaling, which :meth:`RunData.fingerprint` hashes in place of its fitted floats.

    Args:
      kind: a key of :data:`FINGERPRINT_KIND_WORDS`.
      columns: (F,) bool, the scaled columns.
    """
    cols = np.flatnonzero(np.asarray(columns, bool))
    return (f"{FINGERPRINT_KIND_WORDS[kind]} fitted on the training rows, "
            f"columns {hashlib.sha256(cols.astype(np.int64).tobytes()).hexdigest()}")


def fit_run_scalings(source: np.ndarray, train_idx: np.ndarray, columns: np.ndarray, kind: str):
    """Per-run scalings, each fitted on its run's training rows (:func:`vaegmm_jax.data.fit_column_scaler`).

    Args:
      source: (M, F) rows.
      train_idx: (S, n) each run's training rows, indices into ``source``.
      columns: (F,) bool, the columns to scale (the others keep multiplier 1 and offset 0).
      kind: ``'minmax'`` or ``'standard'``.

    Returns:
      scale (S, F) float32 and offset (S, F) float32: run i's rows map to ``x * scale[i] + offset[i]``
      (:func:`vaegmm_jax.data.multiplier_and_offset`).
    """
    # one run at a time: host memory bounded by one training set
    fitted = [multiplier_and_offset(fit_column_scaler(source[idx], kind, columns)) for idx in train_idx]
    return np.stack([m for m, _ in fitted]), np.stack([o for _, o in fitted])
