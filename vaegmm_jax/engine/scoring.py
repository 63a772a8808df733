"""Scoring helpers shared by every detector: the default chunk size, the input guard and dtype
wrappers a score program is built from, the members' combination, and thresholds.

Pure functions over arrays; the detectors jit what they build from them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.core import scaling
from vaegmm_jax.engine.validation import NotFittedError

#: rows per scoring chunk (padded, fixed shape) when none is given: small enough to stay
#: in CPU caches (the L decoded samples of a 2k-row chunk are ~10 MB), large enough to
#: fill an accelerator. Bounds device and host memory either way.
DEFAULT_SCORE_BATCH = None
_CPU_SCORE_BATCH, _ACCELERATOR_SCORE_BATCH = 2048, 262_144


#: the largest magnitude a network input takes when scoring (after the input scaling): far
#: beyond any standardised row (1e9 standard deviations), small enough that the squared errors
#: and the mixture's quadratic forms of the farthest row stay finite in float32
SCORE_INPUT_LIMIT = 1e9


def default_score_batch(n_members: int = 1) -> int:
    """The default scoring chunk for the default backend (2048 rows on CPU, 262,144 on GPU/TPU),
    divided among M members (at least 256 rows): every member decodes its L samples of every row
    of a chunk, so this keeps a chunk's memory (CPU caches, device memory) what one model uses."""
    rows = _CPU_SCORE_BATCH if jax.default_backend() == "cpu" else _ACCELERATOR_SCORE_BATCH
    return max(256, rows // max(int(n_members), 1))


def check_threshold(detector) -> float:
    """The detector's threshold, refused when it is unset or not a finite number."""
    if detector.threshold is None:
        raise NotFittedError(
            f"{type(detector).__name__} has no threshold: pass threshold= to the constructor or call "
            "infer_threshold(X) before predict")
    if not np.isfinite(float(detector.threshold)):
        raise ValueError(f"{type(detector).__name__}.threshold is {detector.threshold!r}: it must be a finite number")
    return float(detector.threshold)


def percentile_threshold(scores: np.ndarray, threshold_perc: float) -> float:
    """The ``threshold_perc`` percentile of the scores; refused (never a NaN threshold) when a
    score is not finite."""
    scores = np.asarray(scores)
    bad = ~np.isfinite(scores)
    if bad.any():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), scores.shape))
        raise ValueError(f"{int(bad.sum())} scores are not finite (the first at index {first}): no threshold "
                         "can be inferred from them")
    return float(np.percentile(scores, threshold_perc))


def flag_outliers(scores: np.ndarray, threshold: float) -> np.ndarray:
    """int (N, ...) 1 where score > threshold; a NaN score is flagged too (never an inlier)."""
    return (~(np.asarray(scores) <= threshold)).astype(int)


def scaled_inputs(fn: Callable, skip: bool = False) -> Callable:
    """fn(params, extra, x, offset, key) -> fn'(params, (scaler, extra), x, offset, key) on scaled x
    (``skip``: x is already scaled)."""

    def wrapped(params, scaler_and_extra, x, offset, key):
        scaler, extra = scaler_and_extra
        if scaler is not None and not skip:
            x = scaling.apply_scaler(scaler, x.astype(jnp.promote_types(x.dtype, jnp.float32)))
        # A finite row far beyond float32's comfortable range (x 1e20, or 3e38 divided by a
        # scale below 1) would overflow the squared errors and the mixture's quadratic form into
        # inf and then NaN. Clipped to +-SCORE_INPUT_LIMIT, every such row scores as a row at
        # that distance: finite, and as outlying as any row can be (in-range values are unchanged).
        x = jnp.clip(x, -SCORE_INPUT_LIMIT, SCORE_INPUT_LIMIT)
        return fn(params, extra, x, offset, key)

    return wrapped


def robust_calibration(components: np.ndarray) -> dict[str, np.ndarray]:
    """{'center': median (C,), 'scale': interquartile range (C,)} of (N, C) training-row
    scores or score components; a zero or non-finite spread falls back to the standard
    deviation, then 1."""
    comps = np.asarray(components, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # a member that failed may score inf/NaN
        q25, med, q75 = np.percentile(comps, [25.0, 50.0, 75.0], axis=0)
        scale = q75 - q25
        std = comps.std(axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, np.where(np.isfinite(std) & (std > 1e-12), std, 1.0))
    return {"center": med.astype(np.float32), "scale": scale.astype(np.float32)}


def combine_members(scores: jax.Array, calibration: dict) -> jax.Array:
    """(M, C) member scores -> (C,) ensemble scores: the mean over the members of each member's
    score standardised by its median and interquartile range on the training rows (so no
    member dominates by its scale). Per-feature scores (M, C, *S) are averaged as they are."""
    if scores.ndim > 2:
        return jnp.mean(scores, axis=0)
    center = calibration["center"][:, None]
    scale = calibration["scale"][:, None]
    return jnp.mean((scores - center) / scale, axis=0)


def in_dtype(fn: Callable, dtype) -> Callable:
    """Runs a score function with its params and inputs cast to ``dtype`` (bf16 networks)."""

    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    def wrapped(params, extra, x, offset, key):
        return fn(cast(params), extra, x.astype(dtype), offset, key).astype(jnp.float32)

    return wrapped


__all__ = ["DEFAULT_SCORE_BATCH", "SCORE_INPUT_LIMIT", "default_score_batch", "check_threshold", "percentile_threshold",
           "flag_outliers", "scaled_inputs", "robust_calibration", "combine_members", "in_dtype"]
