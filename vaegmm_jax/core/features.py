"""Reconstruction features appended to the latent code before the mixture.

A reconstruction-feature function maps (x, x_recon), both (N, F) (images are
flattened first), to (N, n_features). The default reproduces the DAGMM paper; the
alibi-detect 0.13 function is available for exact compatibility.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ReconFeatures = Callable[[jax.Array, jax.Array], jax.Array]

_TINY = 1e-12


def _safe_norm(v: jax.Array) -> jax.Array:
    # sqrt has an infinite derivative at 0; add a tiny floor inside the root so an
    # exact reconstruction (or an all-zero row) keeps finite gradients.
    return jnp.sqrt(jnp.sum(v * v, axis=-1) + _TINY)


@jax.custom_jvp
def reconstruction_sums(x: jax.Array, x_recon: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """sum (x - x')^2, sum x'^2 and sum x x' over the last axis, in ONE pass over x'.

    A single variadic reduction: on GPUs the decoder output (L N x F when scoring) is
    read once instead of three times, and the dot product is not fused into the
    concatenate that builds z (where XLA emitted it as a slow strided loop).

    Args:
      x: (..., F) inputs.
      x_recon: (..., F) reconstructions.

    Returns:
      three (...,) arrays, at least float32.
    """
    # accumulate in float32 even for bf16 networks (reading bf16 still halves the traffic)
    dtype = jnp.promote_types(jnp.result_type(x, x_recon), jnp.float32)
    x, x_recon = x.astype(dtype), x_recon.astype(dtype)
    diff = x - x_recon
    zero = jnp.zeros((), dtype)
    return jax.lax.reduce(
        (diff * diff, x_recon * x_recon, x * x_recon), (zero, zero, zero),
        lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2]), (x.ndim - 1,),
    )


@reconstruction_sums.defjvp
def _reconstruction_sums_jvp(primals, tangents):
    # plain sums for the derivative (training batches are small; the generic
    # variadic-reduce JVP would be slower and harder to read)
    dtype = jnp.promote_types(jnp.result_type(*primals), jnp.float32)
    x, r = (a.astype(dtype) for a in primals)
    dx, dr = (a.astype(dtype) for a in tangents)
    diff = x - r
    return reconstruction_sums(x, r), (
        jnp.sum(2.0 * diff * (dx - dr), axis=-1),
        jnp.sum(2.0 * r * dr, axis=-1),
        jnp.sum(dx * r + x * dr, axis=-1),
    )


def dagmm_features_from_sums(x: jax.Array, sums: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
    """:func:`dagmm_features` from x and the :func:`reconstruction_sums` of its reconstructions.

    Args:
      x: (N, F) inputs.
      sums: (sq_diff, sq_recon, dot), each (..., N) (e.g. (L, N) for L samples).

    Returns:
      (..., N, 2) features, columns [rel_euclid, cosine].
    """
    norm_x = _safe_norm(x)  # once per row, outside the per-sample pass
    sq_diff, sq_recon, dot = sums
    norm_r = jnp.sqrt(sq_recon + _TINY)
    rel_euclid = jnp.sqrt(sq_diff + _TINY) / norm_x
    cosine = dot / (norm_x * norm_r)
    return jnp.stack([rel_euclid, cosine], axis=-1)


def dagmm_features(x: jax.Array, x_recon: jax.Array) -> jax.Array:
    """DAGMM paper features: [relative Euclidean distance, cosine similarity].

    rel_euclid = ||x - x'|| / ||x||, cosine = x.x' / (||x|| ||x'||).

    Args:
      x: (N, F) inputs.
      x_recon: (N, F) reconstructions.

    Returns:
      (N, 2) features, columns [rel_euclid, cosine].
    """
    return dagmm_features_from_sums(x, reconstruction_sums(x, x_recon))


def _alibi_relative_distance(dist: jax.Array, min_norm: jax.Array, max_eucl: float) -> jax.Array:
    """alibi's clip(dist / (min_norm - 1), 0, max_eucl), with finite gradients everywhere.

    Forward values equal the plain expression wherever it is defined: the ratio where
    it lies in [0, max_eucl), ``max_eucl`` where the denominator is positive but at most
    ``dist / max_eucl`` or exactly 0 (there alibi divides by zero and clips the inf),
    0 where it is negative. The plain expression's derivative is ``0 * inf = NaN``
    where the denominator is 0 in float32 (``min_norm`` exactly 1), which stopped 2 of
    10 seeds of the alibi KDD protocol; here the clipped branches never divide by a
    denominator that small (the standard double-``where`` pattern). The one case with
    no plain value, 0 / 0 (alibi: NaN), gives 0.

    Args:
      dist: (...,) ||x' - x||, >= 0.
      min_norm: (...,) min(||x'||, ||x||).
      max_eucl: the clip value.

    Returns:
      (...,) the relative distance, in [0, max_eucl].
    """
    den = min_norm - 1.0  # alibi's eps = -1 (see alibi_eucl_cosim_features)
    in_range = den * max_eucl > dist  # den > 0 and dist / den < max_eucl
    ratio = dist / jnp.where(in_range, den, 1.0)
    clipped = jnp.where((den >= 0) & (dist > 0), max_eucl, 0.0).astype(ratio.dtype)
    return jnp.where(in_range, ratio, clipped)


def _safe_sqrt(sq: jax.Array) -> jax.Array:
    # sqrt with derivative 0 (not inf) at exactly 0; values unchanged
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def alibi_eucl_cosim_features(x: jax.Array, x_recon: jax.Array, max_eucl: float = 1e2) -> jax.Array:
    """alibi-detect 0.13 ``eucl_cosim_features``, quirks included (compatibility only).

    Reproduces what alibi's VAEGMM/AEGMM compute, not what the paper defines:
      * order [neg_cos, rel_euc];
      * neg_cos = -cosine similarity (Keras' cosine_similarity loss is negated), with
        Keras' l2-normalisation (each vector divided by sqrt(max(||v||^2, 1e-12)));
      * rel_euc = clip(||x' - x|| / (min(||x'||, ||x||) + eps), 0, max_eucl) with
        eps = -1, because alibi passes -1 positionally into the eps slot: the
        denominator is min(norms) - 1.

    The values are alibi's; the gradients are not its NaNs: where min(norms) is
    exactly 1 alibi's value is a finite 100 but its derivative is NaN, which ends
    training (see ``_alibi_relative_distance``).

    Args:
      x: (N, F) inputs.
      x_recon: (N, F) reconstructions.
      max_eucl: clip value of the relative distance (alibi's default 100).

    Returns:
      (N, 2) features, columns [neg_cos, rel_euc].
    """
    def l2_normalize(v):
        return v / jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), 1e-12))

    neg_cos = -jnp.sum(l2_normalize(x) * l2_normalize(x_recon), axis=-1)
    norm_x = _safe_sqrt(jnp.sum(x * x, axis=-1))
    norm_r = _safe_sqrt(jnp.sum(x_recon * x_recon, axis=-1))
    diff = x_recon - x
    rel_euc = _alibi_relative_distance(_safe_sqrt(jnp.sum(diff * diff, axis=-1)), jnp.minimum(norm_r, norm_x), max_eucl)
    return jnp.stack([neg_cos, rel_euc], axis=-1)


def alibi_features_from_sums(
    x: jax.Array, sums: tuple[jax.Array, jax.Array, jax.Array], max_eucl: float = 1e2
) -> jax.Array:
    """:func:`alibi_eucl_cosim_features` from x and the :func:`reconstruction_sums`.

    Args:
      x: (N, F) inputs.
      sums: (sq_diff, sq_recon, dot), each (..., N).

    Returns:
      (..., N, 2) features, columns [neg_cos, rel_euc].
    """
    sq_diff, sq_recon, dot = sums
    sq_x = jnp.sum(x.astype(sq_recon.dtype) ** 2, axis=-1)
    neg_cos = -dot / (jnp.sqrt(jnp.maximum(sq_x, 1e-12)) * jnp.sqrt(jnp.maximum(sq_recon, 1e-12)))
    min_norm = jnp.minimum(_safe_sqrt(sq_recon), _safe_sqrt(sq_x))
    rel_euc = _alibi_relative_distance(_safe_sqrt(sq_diff), min_norm, max_eucl)
    return jnp.stack([neg_cos, rel_euc], axis=-1)


def rmse_from_sums(x: jax.Array, sums: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
    """:func:`rmse_features` from x and the :func:`reconstruction_sums` of its reconstructions.

    Args:
      x: (N, F) inputs (only F is read).
      sums: (sq_diff, sq_recon, dot), each (..., N).

    Returns:
      (..., N, 1) root-mean-square reconstruction error.
    """
    sq_diff = sums[0]
    return jnp.sqrt(sq_diff / x.shape[-1] + _TINY)[..., None]


def rmse_features(x: jax.Array, x_recon: jax.Array) -> jax.Array:
    """The root-mean-square reconstruction error, sqrt(mean_j (x_j - x'_j)^2), as one column.

    The detectors' default (chosen on the development suite, ``benchmarks/RESULTS.md``). On
    standardised inputs the paper's relative distance ||x - x'|| / ||x|| divides by a norm
    that is near 0 for rows near the training mean and large for far-away rows, so a far
    outlier can get a *smaller* feature than an inlier (on breast-cancer data the feature
    alone ranked outliers at AUROC 0.21-0.24); the absolute error has no such denominator.
    Averaging over features (not summing) keeps its scale independent of the width F.

    Args:
      x: (N, F) inputs.
      x_recon: (N, F) reconstructions.

    Returns:
      (N, 1) features.
    """
    return rmse_from_sums(x, reconstruction_sums(x, x_recon))


#: the same features computed from x and the three reconstruction sums (what the fused
#: scoring kernel returns), keyed by the feature function they reproduce
FEATURES_FROM_SUMS: dict[ReconFeatures, Callable] = {}

RECON_FEATURES: dict[str, ReconFeatures] = {
    "dagmm": dagmm_features,
    "alibi": alibi_eucl_cosim_features,
    "rmse": rmse_features,
}
FEATURES_FROM_SUMS.update({dagmm_features: dagmm_features_from_sums, alibi_eucl_cosim_features: alibi_features_from_sums,
                          rmse_features: rmse_from_sums})


def resolve_recon_features(spec: str | ReconFeatures | None) -> tuple[str, ReconFeatures]:
    """Returns (name, function) for a feature spec: a registered name or a callable."""
    if spec is None:
        spec = "dagmm"
    if isinstance(spec, str):
        if spec not in RECON_FEATURES:
            raise ValueError(f"unknown recon_features {spec!r}; known: {sorted(RECON_FEATURES)} or a callable")
        return spec, RECON_FEATURES[spec]
    if not callable(spec):
        raise TypeError(f"recon_features must be a name or a callable (x, x_recon) -> (N, n), got {type(spec)}")
    return "custom:" + getattr(spec, "__name__", type(spec).__name__), spec
