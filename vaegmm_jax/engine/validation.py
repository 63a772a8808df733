"""Input validation, on the host, before anything reaches jit.

Errors name the problem (shape, NaN/inf, dtype, unfitted detector) so a user
never sees NaN scores or a traceback from deep inside XLA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.engine.streaming import release_pages


class NotFittedError(RuntimeError):
    """The detector is used before ``fit`` (or before a threshold exists)."""


def check_array(
    X,
    *,
    name: str = "X",
    row_shape: tuple[int, ...] | None = None,
    min_rows: int = 1,
    check_finite: bool = True,
) -> np.ndarray:
    """Validates a batch of rows and returns it as a float32 numpy array (no copy if possible).

    Args:
      X: array-like (N, F) or (N, H, W, C).
      name: how the argument is called in error messages.
      row_shape: the expected shape of one row (a fitted detector's input shape).
      min_rows: smallest allowed N.
      check_finite: reject NaN / inf.

    Raises:
      TypeError: non-numeric dtype (strings, objects, booleans are not features).
      ValueError: wrong rank, empty, wrong row shape, NaN or inf.
    """
    if isinstance(X, jax.Array):
        return _check_device_array(X, name, row_shape, min_rows, check_finite)
    if isinstance(X, np.memmap):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except Exception as err:  # ragged lists and the like
            raise TypeError(f"{name} could not be converted to a numeric array: {err}") from err
    if arr.dtype == np.bool_:
        raise TypeError(f"{name} has dtype bool: booleans are not features; pass X.astype(np.float32) if you mean 0/1")
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must have a leading batch axis: shape (N, n_features) or (N, H, W, C), got shape {arr.shape}"
            + (" (reshape a single row with X[None] or a 1-D feature column with X[:, None])" if arr.ndim == 1 else "")
        )
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} is empty: shape {arr.shape} has {arr.shape[0]} rows, need at least {min_rows}")
    if row_shape is not None and tuple(arr.shape[1:]) != tuple(row_shape):
        raise ValueError(
            f"{name} has rows of shape {tuple(arr.shape[1:])} but the detector was fitted on rows of shape "
            f"{tuple(row_shape)}"
        )
    if arr.dtype != np.float32:
        arr = to_float32(arr)
    if check_finite:
        check_finite_rows(arr, name)
    return arr


def to_float32(arr: np.ndarray) -> np.ndarray:
    """arr as float32, with finite values beyond float32's range (float64 1e300) saturated at
    +-float32 max instead of overflowing to inf: a finite row stays finite (it then scores as
    the farthest row can), and a NaN or inf stays what it was."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating) and np.finfo(arr.dtype).max > np.finfo(np.float32).max:
        infinite = np.isinf(out)
        if infinite.any():  # only then look at where the infs came from (one pass otherwise)
            overflow = infinite & np.isfinite(arr)
            out[overflow] = np.sign(arr[overflow]) * np.finfo(np.float32).max
    return out


def _check_device_array(X, name, row_shape, min_rows, check_finite):
    """The same checks for an array already on the device (no copy to the host)."""
    if not (jnp.issubdtype(X.dtype, jnp.floating) or jnp.issubdtype(X.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"{name} must have a leading batch axis: shape (N, n_features) or (N, H, W, C), got shape {X.shape}")
    if X.shape[0] < min_rows:
        raise ValueError(f"{name} is empty: shape {X.shape} has {X.shape[0]} rows, need at least {min_rows}")
    if row_shape is not None and tuple(X.shape[1:]) != tuple(row_shape):
        raise ValueError(
            f"{name} has rows of shape {tuple(X.shape[1:])} but the detector was fitted on rows of shape {tuple(row_shape)}"
        )
    if X.dtype != jnp.float32:
        X = X.astype(jnp.float32)
    if check_finite and not bool(_all_finite(X)):
        raise ValueError(f"{name} contains NaN or inf values")
    return X


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def check_finite_rows(arr: np.ndarray, name: str = "X", block: int = 1 << 16) -> None:
    """Raises ValueError naming the first row with NaN or inf (scans in blocks: memmap friendly)."""
    flat_rows = arr.reshape(arr.shape[0], -1)
    is_memmap = isinstance(arr, np.memmap)
    for start in range(0, arr.shape[0], block):
        view = flat_rows[start : start + block]
        part = np.array(view) if is_memmap else np.asarray(view)
        if is_memmap:  # read pages of a mapped file stay resident unless released
            release_pages(arr[start : start + block])
        bad = ~np.isfinite(part)
        if bad.any():
            rows = np.nonzero(bad.any(axis=1))[0]
            kind = "NaN" if np.isnan(part[rows[0]]).any() else "inf"
            raise ValueError(
                f"{name} contains {kind} values ({int(bad.sum())} non-finite entries in block starting at row "
                f"{start}; first bad row {start + int(rows[0])})"
            )


def nonfinite_rows(x: jax.Array) -> jax.Array:
    """(C,) bool for rows x (C, *S): the row holds a NaN or an inf. Pure and row-parallel (rows
    split over devices need no communication): score programs run it on the device beside the
    score, so finiteness costs no pass over the data on the host."""
    flat = x.reshape(x.shape[0], -1)
    # x * 0 is 0 for a finite value and NaN for NaN or +-inf: one multiply-add reduction per row
    # (cheaper than isfinite + all on CPUs), and a sum of zeros cannot overflow
    return jnp.isnan(jnp.sum(flat * jnp.zeros((), flat.dtype), axis=1))


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_unit_interval(arr: np.ndarray, name: str = "X") -> None:
    """For the Bernoulli likelihood: pixels must lie in [0, 1]."""
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must lie in [0, 1] for the Bernoulli likelihood, got values in [{lo:.4g}, {hi:.4g}] "
            "(scale pixels by 1/255)"
        )


def check_hidden(hidden, name: str = "hidden") -> list[int] | None:
    """Layer widths: None or a non-empty sequence of positive ints."""
    if hidden is None:
        return None
    if isinstance(hidden, (int, np.integer, str)) or not hasattr(hidden, "__iter__"):
        raise ValueError(f"{name} must be a sequence of positive layer widths, e.g. (64, 32), got {hidden!r}")
    widths = [check_positive_int(h, f"every width in {name}") for h in hidden]
    if not widths:
        raise ValueError(f"{name} is empty: give at least one layer width, or None for the default")
    return widths


def check_percentile(value, name: str) -> float:
    """A real number in [0, 100] (not a string, not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) <= 100.0:
        raise ValueError(f"{name} must be a number in [0, 100], got {value!r}")
    return float(value)
