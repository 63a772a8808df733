"""Per-feature input scaling fitted on the training rows: x_scaled = (x - shift) / scale.

A deep density model needs inputs on comparable scales: an autoencoder's squared error
and the mixture's covariances are dominated by whichever column has the largest range.
The detectors fit one of these scalers on their training rows and apply it inside every
compiled score program, so a user can pass raw data.

Kinds:
  'standard': shift = mean, scale = standard deviation (the detectors' default for tabular
      data, chosen on the development suite: ``benchmarks/RESULTS.md``);
  'minmax': shift = min, scale = max - min;
  'robust': shift = median, scale = interquartile range.
A column whose scale is 0 (constant on the training rows) or not finite gets scale 1, so it
is only centred. Statistics are computed in float64 and stored as float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

#: names a detector accepts for ``scaler`` (None: no scaling)
SCALER_KINDS = ("standard", "minmax", "robust")


class Scaler(NamedTuple):
    """A fitted affine scaling (a pytree).

    Attributes:
      shift: (F,) float32, subtracted first.
      scale: (F,) float32, positive, divided by next.
    """

    shift: jnp.ndarray
    scale: jnp.ndarray


def check_kind(kind: str | None, name: str = "scaler") -> str | None:
    """``kind`` if it names a scaler (or is None), else a ValueError naming the choices."""
    if kind is None or kind in SCALER_KINDS:
        return kind
    raise ValueError(f"{name} must be one of {SCALER_KINDS} or None, got {kind!r}")


def fit_scaler(x: np.ndarray, kind: str) -> Scaler:
    """Fits a scaler of ``kind`` on the rows of x.

    Args:
      x: (N, F) training rows (images and other row shapes are flattened to F features).
      kind: one of :data:`SCALER_KINDS`.

    Returns:
      Scaler with (F,) float32 shift and scale.
    """
    check_kind(kind)
    if kind is None:
        raise ValueError("fit_scaler needs a kind; None means no scaler")
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if kind == "standard":
        shift, scale = flat.mean(axis=0), flat.std(axis=0)
    elif kind == "minmax":
        shift = flat.min(axis=0)
        scale = flat.max(axis=0) - shift
    else:  # robust
        q25, shift, q75 = np.percentile(flat, [25.0, 50.0, 75.0], axis=0)
        scale = q75 - q25
    # float32 must also hold 1 / scale: tiny (denormal) spreads count as constant columns
    usable = np.isfinite(scale) & (scale > np.finfo(np.float32).tiny)
    scale = np.where(usable, scale, 1.0)
    return Scaler(shift=np.asarray(shift, np.float32), scale=np.asarray(scale, np.float32))


def apply_scaler(scaler: Scaler | None, x):
    """(x - shift) / scale on (B, *S) rows (flattened feature order); identity for None.

    Pure and jit-friendly (jnp in, jnp out); the result keeps x's floating dtype.
    """
    if scaler is None:
        return x
    shape = x.shape
    flat = x.reshape((shape[0], -1))
    out = (flat - scaler.shift.astype(flat.dtype)) / scaler.scale.astype(flat.dtype)
    return out.reshape(shape)


def apply_scaler_numpy(scaler: Scaler | None, x: np.ndarray) -> np.ndarray:
    """:func:`apply_scaler` on the host, float32 out (what fit trains on)."""
    if scaler is None:
        return x
    return apply_scaler(scaler, np.asarray(x, dtype=np.float32))


__all__ = ["SCALER_KINDS", "Scaler", "check_kind", "fit_scaler", "apply_scaler", "apply_scaler_numpy"]
