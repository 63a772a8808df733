"""Scoring a data file with a saved model, block by block, and the threshold on the scores."""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

from vaegmm_jax.cli.args import check_fraction, check_percentile
from vaegmm_jax.cli.errors import InputError, input_errors
from vaegmm_jax.engine.scoring import default_score_batch
from vaegmm_jax.engine.streaming import effective_chunk_size
from vaegmm_jax.io import tables as tio
from vaegmm_jax.io.preprocessing import Scaler
from vaegmm_jax.io.scores import check_id_name

__all__ = ["score_batch", "check_id_column", "ScoreStream", "set_threshold", "require_threshold"]

def score_batch(n_rows: int) -> int:
    """The scoring batch for n_rows rows: the next power of two >= n_rows (at least 8, at most
    the detectors' default chunk for this backend: 2048 rows on a CPU, where a 16k-row chunk
    took twice the CPU time, 262,144 on an accelerator), so that few distinct shapes, and so
    few compilations, ever occur."""
    return effective_chunk_size(int(n_rows), default_score_batch())


def check_id_column(name: str, where: str) -> None:
    """InputError when an identifier column is named like an output column."""
    with input_errors(f"{where}: "):
        check_id_name(name)


class ScoreStream:
    """Reads a file in blocks, scales them, and keeps what the output needs (ids, labels, a sample).

    Every problem with the file (a missing column, a cell that is not a number, in any block)
    is an InputError; rows of another shape than the model's are refused at the first block.
    """

    def __init__(self, det, prep, path: str, chunk_rows: int, id_column: str | None, label_column: str | None,
                 keep_sample: int = 0, seed: int = 0):
        self.det, self.path = det, path
        self.scaler = prep.scaler if prep is not None else Scaler("none")
        # without saved feature names (images, or a model saved from Python) every column
        # other than the identifier and label columns is a feature
        features = prep.feature_names if prep is not None else None
        id_col = id_column or (prep.id_column if prep is not None else None)
        kw: dict[str, Any] = dict(id_column=id_col, label_column=label_column, id_optional=id_column is None)
        if features is not None:
            kw["columns"] = features
        self.blocks = tio.iter_tables(path, chunk_rows=chunk_rows, **kw)
        self.ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.sizes: list[int] = []
        self.keep_sample = keep_sample
        self._rng = np.random.default_rng(seed)
        self._sample_keys = np.zeros(0)
        self._sample_rows = np.zeros(0, np.int64)
        self._sample_x: np.ndarray | None = None
        self.first = self._next_block()
        if self.first is None:
            raise InputError(f"{path}: no data rows")
        self.id_name: str | None = self.first.id_column
        self._check_shape(self.first.X)
        self.chunk_rows = chunk_rows

    def _next_block(self) -> tio.Table | None:
        with input_errors():  # reading the file: its errors are the file's
            return next(self.blocks, None)

    def _blocks(self) -> Iterator[tio.Table]:
        yield self.first
        while (t := self._next_block()) is not None:
            yield t

    def _check_shape(self, X: np.ndarray) -> None:
        want = tuple(self.det.input_shape)
        if tuple(X.shape[1:]) != want:
            if X.ndim == 2 and len(want) == 1:
                raise InputError(f"{self.path}: {X.shape[1]} feature columns selected but the model expects {want[0]}")
            raise InputError(f"{self.path}: rows of shape {tuple(X.shape[1:])} but the model expects {want}")

    def batch_size(self) -> int:
        n = self.first.n_rows
        return score_batch(n if n < self.chunk_rows else self.chunk_rows)

    def __iter__(self) -> Iterator[np.ndarray]:
        offset = 0
        for t in self._blocks():
            self._check_shape(t.X)
            X = self.scaler.transform(t.X)
            n = t.n_rows
            self.sizes.append(n)
            if t.ids is not None:
                self.ids.append(t.ids)
            if t.labels is not None:
                self.labels.append(t.labels)
            if self.keep_sample:
                self._update_sample(X, offset)
            offset += n
            yield X

    def _update_sample(self, X: np.ndarray, offset: int) -> None:
        """A uniform sample without replacement over all rows: keep the smallest random keys."""
        keys = self._rng.random(X.shape[0])
        all_keys = np.concatenate([self._sample_keys, keys])
        rows = np.concatenate([self._sample_rows, np.arange(offset, offset + X.shape[0])])
        xs = X if self._sample_x is None else np.concatenate([self._sample_x, X])
        keep = np.argsort(all_keys, kind="stable")[: self.keep_sample]
        keep.sort()
        self._sample_keys, self._sample_rows, self._sample_x = all_keys[keep], rows[keep], xs[keep]

    def score(self) -> np.ndarray:
        """The detector's scores of every row of the file, in order."""
        return self.det.score(iter(self), batch_size=self.batch_size())

    def sample(self) -> tuple[np.ndarray | None, np.ndarray]:
        return self._sample_x, self._sample_rows

    def all_ids(self) -> np.ndarray | None:
        return np.concatenate(self.ids) if self.ids else None

    def all_labels(self) -> np.ndarray | None:
        return np.concatenate(self.labels) if self.labels else None


def set_threshold(det, X: np.ndarray, perc: float | None, contamination: float | None, n_desc: str) -> dict:
    """Sets the detector's threshold on the scores of X (the training rows); returns how, for
    the model card."""
    if contamination is not None:
        c = check_fraction(contamination, "--contamination")
        perc = 100.0 * (1.0 - c)
        info = {"method": "contamination", "contamination": c, "percentile": perc}
    else:
        perc = 95.0 if perc is None else check_percentile(perc, "--threshold-perc")
        info = {"method": "percentile", "percentile": perc}
    det.infer_threshold(X, threshold_perc=perc, batch_size=score_batch(len(X)))
    info["computed_on"] = n_desc
    return info


def require_threshold(det, override: float | None) -> float:
    """The threshold ``score``/``evaluate`` flag rows at: --threshold, else the saved one."""
    if override is not None:
        if not math.isfinite(override):
            raise InputError(f"--threshold must be finite, got {override}")
        det.threshold = float(override)
    if det.threshold is None:
        raise InputError("the model has no threshold; pass --threshold T (or refit with --threshold-perc)")
    return float(det.threshold)
