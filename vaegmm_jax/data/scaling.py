"""Scaling of chosen feature columns, fitted on training rows only (the protocols' input transforms).

The loaders never scale: a scaling must be fitted on the training rows of each run. The
statistics are those of :func:`vaegmm_jax.core.scaling.fit_scaler` (the detectors' own scaler),
under its kind names (``'minmax'``, ``'standard'``, ``'robust'``:
:data:`vaegmm_jax.core.scaling.SCALER_KINDS`); this module adds what tabular data sets and the
accuracy protocols need:

* a column selection, e.g. min-max of ``TabularDataset.continuous`` only, with the one-hot
  indicator columns left as they are;
* under ``'minmax'`` a column that is constant on the fitting rows maps to 0 on every row, also
  on rows that hold another value there (the DAGMM protocol's rule; the detectors' scaler and
  scikit-learn's ``MinMaxScaler`` only centre such a column, so those rows keep their offset);
* the fitted transform as ``x * multiplier + offset`` over all F columns
  (:func:`multiplier_and_offset`), the form the evaluation protocols apply on the device.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from vaegmm_jax.core.scaling import Scaler, apply_scaler, check_kind, fit_scaler

__all__ = ["ColumnScaler", "fit_column_scaler", "apply_column_scaler", "multiplier_and_offset"]


class ColumnScaler(NamedTuple):
    """A scaling of some columns, fitted on training rows (:func:`fit_column_scaler`).

    Scaled column ``columns[j]`` maps x to ``(x - fitted.shift[j]) / fitted.scale[j]``, or to 0
    when ``kind`` is ``'minmax'`` and ``constant[j]``; the other columns are left as they are.

    Attributes:
        kind: the statistics, one of :data:`vaegmm_jax.core.scaling.SCALER_KINDS`.
        columns: (C,) int64 indices of the scaled columns.
        fitted: the core :class:`~vaegmm_jax.core.scaling.Scaler` of those columns, (C,) float32
            shift and scale (scale 1 on a column constant on the fitting rows).
        constant: (C,) bool, the column holds one value on the fitting rows.
        n_features: F, the number of columns of the fitted matrix.
    """

    kind: str
    columns: np.ndarray
    fitted: Scaler
    constant: np.ndarray
    n_features: int


def _column_indices(columns, n_features: int) -> np.ndarray:
    """(C,) int64 indices in [0, F) from an (F,) bool mask, a sequence of (possibly negative) indices, or None (all)."""
    if columns is None:
        return np.arange(n_features, dtype=np.int64)
    cols = np.asarray(columns)
    if cols.dtype == bool:
        if cols.shape != (n_features,):
            raise ValueError(f"boolean column mask has shape {cols.shape}, expected ({n_features},)")
        return np.flatnonzero(cols).astype(np.int64)
    idx = cols.astype(np.int64).ravel()
    if idx.size and (idx.min() < -n_features or idx.max() >= n_features):
        raise ValueError(f"column index out of range for {n_features} features")
    return idx % n_features


def fit_column_scaler(
    x_train: np.ndarray, kind: str, columns: np.ndarray | Sequence[int] | None = None
) -> ColumnScaler:
    """Fits a scaling of ``kind`` on the training rows, for the chosen columns.

    Args:
        x_train: (N, F) training rows; the chosen columns must be finite.
        kind: ``'minmax'``, ``'standard'`` or ``'robust'`` (:func:`vaegmm_jax.core.scaling.fit_scaler`).
        columns: the columns to scale: an (F,) boolean mask (e.g.
            ``TabularDataset.continuous``), a sequence of column indices, or ``None`` for all.

    Returns:
        :class:`ColumnScaler` for :func:`apply_column_scaler` or :func:`multiplier_and_offset`.
    """
    if check_kind(kind, "kind") is None:
        raise ValueError("fit_column_scaler needs a kind; None means no scaling")
    x_train = np.asarray(x_train)
    if x_train.ndim != 2 or x_train.shape[0] == 0:
        raise ValueError(f"x_train must be a non-empty (N, F) array, got shape {x_train.shape}")
    n_features = x_train.shape[1]
    idx = _column_indices(columns, n_features)
    sub = x_train[:, idx]
    if not np.isfinite(sub).all():
        raise ValueError("x_train has non-finite values in the columns to scale")
    if idx.size:
        fitted = fit_scaler(sub, kind)
    else:
        fitted = Scaler(shift=np.zeros(0, np.float32), scale=np.ones(0, np.float32))
    constant = np.all(sub == sub[:1], axis=0)
    return ColumnScaler(kind, idx, fitted, constant, int(n_features))


def apply_column_scaler(scaler: ColumnScaler, x: np.ndarray) -> np.ndarray:
    """Applies a fitted :class:`ColumnScaler` to rows (no clipping: rows other than the
    training rows may leave the training range, as with scikit-learn's scalers).

    Args:
        scaler: from :func:`fit_column_scaler`.
        x: (M, F) rows with the F columns of the fitted matrix.

    Returns:
        (M, F) new array of x's floating dtype (float32 stays float32; integers become float32).
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != scaler.n_features:
        raise ValueError(f"x must have shape (M, {scaler.n_features}), got {x.shape}")
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
    out = x.astype(out_dtype, copy=True)
    if scaler.columns.size == 0:
        return out
    scaled = apply_scaler(scaler.fitted, out[:, scaler.columns])
    if scaler.kind == "minmax":
        scaled[:, scaler.constant] = 0.0
    out[:, scaler.columns] = scaled
    return out


def multiplier_and_offset(scaler: ColumnScaler) -> tuple[np.ndarray, np.ndarray]:
    """The scaling as ``x * multiplier + offset`` over all F columns (the form applied on the device).

    Computed in float32 as ``multiplier = 1 / scale`` and ``offset = -shift * multiplier`` (0 and
    -0 or 0 on a min-max column constant on the fitting rows); columns that are not scaled get
    multiplier 1 and offset 0.

    Returns:
        multiplier (F,) float32 and offset (F,) float32.
    """
    multiplier = np.ones(scaler.n_features, np.float32)
    offset = np.zeros(scaler.n_features, np.float32)
    shift = np.asarray(scaler.fitted.shift, np.float32)
    scale = np.asarray(scaler.fitted.scale, np.float32)
    inverse = np.float32(1.0) / scale
    if scaler.kind == "minmax":
        inverse = np.where(scaler.constant, np.float32(0.0), inverse)
    multiplier[scaler.columns] = inverse
    offset[scaler.columns] = -shift * inverse
    return multiplier, offset
