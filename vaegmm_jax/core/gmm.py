"""Gaussian mixture maths of DAGMM (Zong et al., ICLR 2018), written as pure functions.

Notation (shapes in every docstring):
  N rows, K mixture components, D = dimension of the mixture input z
  (latent code plus reconstruction features).

The mixture is fitted from soft memberships ``gamma`` (N, K) produced by the
estimation network:

  phi_k   = sum_n gamma_nk / N
  mu_k    = sum_n gamma_nk z_n / sum_n gamma_nk
  Sigma_k = sum_n gamma_nk (z_n - mu_k)(z_n - mu_k)^T / sum_n gamma_nk

and the sample energy is E(z) = -log sum_k phi_k N(z; mu_k, Sigma_k), evaluated
with a Cholesky factor, a triangular solve and log-sum-exp (never an inverse, a
determinant or exp-then-log). All contractions run in full float32: TF32 in these
sums raised energy error ~60x against float64.

D is small in practice (latent dims plus two reconstruction features: 3 or 4 in
the paper's models). Up to ``SMALL_D`` the Cholesky factor, its triangular inverse
and the contractions are written out element by element: XLA fuses them into a
few elementwise kernels instead of launching cuSOLVER / cuBLAS calls on 4 x 4
matrices, which dominated a GPU training step and the scoring kernel. Larger D
uses jnp.linalg and einsum at HIGHEST precision. Both give the same numbers
(tested).

Every function takes optional per-row ``weights`` (N,) (0 or 1 for padding
masks, or any non-negative weights) so that padded, fixed-shape chunks give the
same answer as the unpadded rows.
"""

from __future__ import annotations

import math

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

HIGHEST = jax.lax.Precision.HIGHEST
DEFAULT_EPS = 1e-6  # jitter added to the covariance diagonal before Cholesky
SMALL_D = 8  # up to this D the linear algebra is unrolled into elementwise ops
# plain Python: computing it with jnp at import would start the JAX backend before a user could
# call jax.distributed.initialize()
_LOG_2PI = math.log(2.0 * math.pi)


class GMMParams(NamedTuple):
    """Mixture parameters (a pytree).

    Attributes:
      phi: (K,) mixture weights, summing to 1.
      mu: (K, D) component means.
      cov: (K, D, D) component covariances, WITHOUT the jitter.
    """

    phi: jax.Array
    mu: jax.Array
    cov: jax.Array


class GMMStats(NamedTuple):
    """Additive sufficient statistics of the mixture, relative to a fixed ``shift``.

    Statistics of two chunks that share the same ``shift`` are combined by adding
    ``count``, ``weight``, ``sum_z`` and ``sum_zz`` (see :func:`merge_stats`), which is
    also what a ``jax.lax.psum`` across devices does. With ``shift`` equal to the
    component means (the second pass of :func:`two_pass_params`) the second moment
    is centred and does not cancel catastrophically in float32.

    Attributes:
      count: () total row weight (the N in phi_k = sum gamma / N).
      weight: (K,) sum_n w_n gamma_nk.
      sum_z: (K, D) sum_n w_n gamma_nk (z_n - shift_k).
      sum_zz: (K, D, D) sum_n w_n gamma_nk (z_n - shift_k)(z_n - shift_k)^T.
      shift: (K, D) the reference point the sums are taken around (not summed).
    """

    count: jax.Array
    weight: jax.Array
    sum_z: jax.Array
    sum_zz: jax.Array
    shift: jax.Array


def _row_weights(n_rows: int, weights: jax.Array | None, dtype) -> jax.Array:
    if weights is None:
        return jnp.ones((n_rows,), dtype)
    return weights.astype(dtype)


def pairwise_sum(x: jax.Array) -> jax.Array:
    """Sum over the leading axis by repeated halving (pairwise summation).

    float32 rounding error grows like log2(N) eps instead of up to N eps for a sequential
    loop (what XLA:CPU emits for a reduction over rows). The mixture fit over a whole
    training set needs it: on nearly degenerate mixture inputs (DAGMM's z on a curve,
    smallest covariance eigenvalue ~1e-6) a plain float32 sum of 200k rows was off by
    3.6e-5 and the covariance was not positive definite even with the 1e-6 jitter;
    halving was off by 5.6e-8 against float64.

    Each halving is materialised (``lax.optimization_barrier``): left to itself XLA fuses
    the whole chain of slices and adds into one elementwise kernel whose last outputs
    each expand into all N leaves. XLA:GPU then spent 250 s of a 20-seed KDDCUP mixture
    fit (H100) in that kernel; XLA:CPU, whose fused loop is sequential anyway, did not
    notice. The barrier changes no arithmetic: the same additions in the same order.

    Args:
      x: (N, ...) terms.

    Returns:
      (...) their sum.
    """
    n = x.shape[0]
    if n == 0:
        return jnp.zeros(x.shape[1:], x.dtype)
    while n > 1:
        if n % 2:  # one zero row makes the length even (shapes are static: unrolled at trace time)
            x = jnp.concatenate([x, jnp.zeros((1,) + x.shape[1:], x.dtype)])
            n += 1
        x = jax.lax.optimization_barrier(x[: n // 2] + x[n // 2:])
        n //= 2
    return x[0]


_PAIRWISE_BLOCK = 32  # rows per GEMM block before the pairwise sum (D > SMALL_D)


def gmm_stats(
    z: jax.Array,
    gamma: jax.Array,
    weights: jax.Array | None = None,
    shift: jax.Array | None = None,
    *,
    pairwise: bool = False,
) -> GMMStats:
    """Sufficient statistics of one chunk.

    Args:
      z: (N, D) mixture inputs.
      gamma: (N, K) soft memberships (rows sum to 1).
      weights: optional (N,) row weights; 0 drops a (padding) row.
      shift: optional (K, D) reference point; zeros when omitted.
      pairwise: sum over rows with :func:`pairwise_sum` (accurate for many rows; the
        whole-training-set mixture fit uses it) instead of one fused reduction (fast; a
        training minibatch uses it).

    Returns:
      GMMStats with count (), weight (K,), sum_z (K, D), sum_zz (K, D, D), shift (K, D).
    """
    k, d = gamma.shape[1], z.shape[1]
    w = _row_weights(z.shape[0], weights, z.dtype)
    if shift is None:
        shift = jnp.zeros((k, d), z.dtype)
    wg = gamma * w[:, None]  # (N, K)
    centred = z[:, None, :] - shift[None, :, :]  # (N, K, D)
    row_sum = pairwise_sum if pairwise else (lambda a: jnp.sum(a, axis=0))
    if d <= SMALL_D:
        # multiply-and-reduce: one fused float32 reduction, no batched GEMM on tiny matrices
        weighted = wg[:, :, None] * centred  # (N, K, D)
        sum_z = row_sum(weighted)
        sum_zz = row_sum(weighted[:, :, :, None] * centred[:, :, None, :])
    elif pairwise:
        # GEMMs over blocks of rows, then the pairwise sum of the (N / block, K, D, D) block sums
        pad = (-z.shape[0]) % _PAIRWISE_BLOCK  # zero-weight rows
        wg_b = jnp.pad(wg, ((0, pad), (0, 0))).reshape(-1, _PAIRWISE_BLOCK, k)
        c_b = jnp.pad(centred, ((0, pad), (0, 0), (0, 0))).reshape(-1, _PAIRWISE_BLOCK, k, d)
        sum_z = pairwise_sum(jnp.einsum("bnk,bnkd->bkd", wg_b, c_b, precision=HIGHEST))
        sum_zz = pairwise_sum(jnp.einsum("bnk,bnkd,bnke->bkde", wg_b, c_b, c_b, precision=HIGHEST))
    else:
        sum_z = jnp.einsum("nk,nkd->kd", wg, centred, precision=HIGHEST)
        sum_zz = jnp.einsum("nk,nkd,nke->kde", wg, centred, centred, precision=HIGHEST)
    return GMMStats(count=row_sum(w), weight=row_sum(wg), sum_z=sum_z, sum_zz=sum_zz, shift=shift)


def merge_stats(a: GMMStats, b: GMMStats) -> GMMStats:
    """Adds the statistics of two chunks taken around the same shift."""
    return GMMStats(
        count=a.count + b.count,
        weight=a.weight + b.weight,
        sum_z=a.sum_z + b.sum_z,
        sum_zz=a.sum_zz + b.sum_zz,
        shift=a.shift,
    )


def params_from_stats(stats: GMMStats) -> GMMParams:
    """Mixture parameters from (possibly accumulated) sufficient statistics.

    An empty component (weight 0) gets phi = 0, mu = shift and cov = 0 rather than
    NaN; its log phi is clamped in :func:`energy` so it never wins the log-sum-exp.
    """
    # Divide only where a component has weight: the double-where keeps both the value
    # and the gradient of an empty component at exactly 0 (x / tiny would give an
    # enormous derivative and inf * 0 = NaN downstream).
    occupied = stats.weight > 0
    safe_weight = jnp.where(occupied, stats.weight, 1.0)
    mean_offset = jnp.where(occupied[:, None], stats.sum_z / safe_weight[:, None], 0.0)  # (K, D)
    second = jnp.where(occupied[:, None, None], stats.sum_zz / safe_weight[:, None, None], 0.0)  # (K, D, D)
    cov = second - mean_offset[:, :, None] * mean_offset[:, None, :]
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))  # exact symmetry for Cholesky
    phi = stats.weight / jnp.where(stats.count > 0, stats.count, 1.0)
    return GMMParams(phi=phi, mu=stats.shift + mean_offset, cov=cov)


def gmm_params(z: jax.Array, gamma: jax.Array, weights: jax.Array | None = None) -> GMMParams:
    """phi, mu, Sigma of one batch, differentiable (the training-time estimate).

    Uses the exact two-pass form (means first, then centred second moments).

    Args:
      z: (N, D) mixture inputs.
      gamma: (N, K) soft memberships.
      weights: optional (N,) row weights (0 for padding rows).

    Returns:
      GMMParams(phi (K,), mu (K, D), cov (K, D, D)).
    """
    first = params_from_stats(gmm_stats(z, gamma, weights))
    return params_from_stats(gmm_stats(z, gamma, weights, shift=first.mu))


def cholesky_factor(cov: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """Lower Cholesky factor of Sigma + eps I.

    Args:
      cov: (K, D, D) covariances.
      eps: jitter on the diagonal.

    Returns:
      (K, D, D) lower-triangular factors. NaN where the jittered matrix is not
      positive definite (JAX does not raise): callers validate finiteness.
    """
    d = cov.shape[-1]
    jittered = cov + eps * jnp.eye(d, dtype=cov.dtype)
    if d <= SMALL_D:
        return small_cholesky(jittered)
    return jnp.linalg.cholesky(jittered)


def small_cholesky(a: jax.Array) -> jax.Array:
    """Cholesky-Banachiewicz factor of small matrices, written out element by element.

    Args:
      a: (..., D, D) symmetric positive definite matrices, D small (static).

    Returns:
      (..., D, D) lower factors L with L L^T = a. Like jnp.linalg.cholesky, NaN
      where a is not positive definite (a negative pivot goes through sqrt).
    """
    d = a.shape[-1]
    factor: list[list[jax.Array | None]] = [[None] * d for _ in range(d)]
    for j in range(d):
        pivot = a[..., j, j] - sum((factor[j][k] ** 2 for k in range(j)), jnp.zeros_like(a[..., j, j]))
        factor[j][j] = jnp.sqrt(pivot)
        for i in range(j + 1, d):
            off = a[..., i, j] - sum((factor[i][k] * factor[j][k] for k in range(j)), jnp.zeros_like(a[..., i, j]))
            factor[i][j] = off / factor[j][j]
    return _assemble_lower(factor, a)


def small_lower_inverse(chol: jax.Array) -> jax.Array:
    """Inverse of small lower-triangular matrices by forward substitution, unrolled.

    Args:
      chol: (..., D, D) lower-triangular with non-zero diagonal, D small (static).

    Returns:
      (..., D, D) lower-triangular inverses.
    """
    d = chol.shape[-1]
    inv: list[list[jax.Array | None]] = [[None] * d for _ in range(d)]
    for i in range(d):
        inv[i][i] = 1.0 / chol[..., i, i]
        for j in range(i):
            acc = sum((chol[..., i, k] * inv[k][j] for k in range(j, i)), jnp.zeros_like(chol[..., i, j]))
            inv[i][j] = -acc * inv[i][i]
    return _assemble_lower(inv, chol)


def _assemble_lower(entries: list[list[jax.Array | None]], like: jax.Array) -> jax.Array:
    zero = jnp.zeros_like(like[..., 0, 0])
    rows = [jnp.stack([e if e is not None else zero for e in row], axis=-1) for row in entries]
    return jnp.stack(rows, axis=-2)


class EnergyCache(NamedTuple):
    """Per-component quantities that do not depend on z, precomputed once.

    Attributes:
      log_norm: (K,) log phi_k - 0.5 (D log 2 pi + log|Sigma_k + eps I|).
      mu: (K, D) means.
      chol_inv: (K, D, D) inverse of the lower Cholesky factor, so that
        v = chol_inv @ (z - mu) is the whitened residual (a matmul, not an
        N-wide triangular solve: far faster on accelerators).
    """

    log_norm: jax.Array
    mu: jax.Array
    chol_inv: jax.Array


def energy_cache(params: GMMParams, eps: float = DEFAULT_EPS) -> EnergyCache:
    """Precomputes the z-independent part of the energy.

    Args:
      params: GMMParams(phi (K,), mu (K, D), cov (K, D, D)).
      eps: covariance jitter.

    Returns:
      EnergyCache(log_norm (K,), mu (K, D), chol_inv (K, D, D)).
    """
    chol = cholesky_factor(params.cov, eps)
    k, d = params.mu.shape
    if d <= SMALL_D:
        chol_inv = small_lower_inverse(chol)
    else:
        eye = jnp.broadcast_to(jnp.eye(d, dtype=chol.dtype), (k, d, d))
        chol_inv = solve_triangular(chol, eye, lower=True)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    # An empty component has phi = 0: clamp its log so gradients stay finite
    # (log 0 = -inf has an infinite derivative) while it still never wins.
    log_phi = jnp.log(jnp.maximum(params.phi, jnp.finfo(params.phi.dtype).tiny))
    log_norm = log_phi - 0.5 * (d * _LOG_2PI + log_det)
    return EnergyCache(log_norm=log_norm, mu=params.mu, chol_inv=chol_inv)


def energy_from_cache(z: jax.Array, cache: EnergyCache) -> jax.Array:
    """Sample energy -log sum_k phi_k N(z; mu_k, Sigma_k + eps I).

    Args:
      z: (N, D) mixture inputs.
      cache: from :func:`energy_cache`.

    Returns:
      (N,) energies (higher = more anomalous; can be negative).
    """
    diff = z[:, None, :] - cache.mu[None, :, :]  # (N, K, D)
    if diff.shape[-1] <= SMALL_D:
        # float32 multiply-and-reduce: on GPUs a HIGHEST-precision batched GEMM with 4 x 4
        # operands was slower. (Unrolling this over K and D as well fused it into one kernel,
        # but tripled the compile time of every training step for ~3% of scoring time.)
        v = jnp.sum(cache.chol_inv[None, :, :, :] * diff[:, :, None, :], axis=-1)
    else:
        v = jnp.einsum("kde,nke->nkd", cache.chol_inv, diff, precision=HIGHEST)
    logits = cache.log_norm[None, :] - 0.5 * jnp.sum(v * v, axis=-1)  # (N, K)
    return -jax.nn.logsumexp(logits, axis=-1)


def energy(z: jax.Array, params: GMMParams, eps: float = DEFAULT_EPS) -> jax.Array:
    """Sample energy of each row of z under the mixture.

    Args:
      z: (N, D) mixture inputs.
      params: GMMParams(phi (K,), mu (K, D), cov (K, D, D)).
      eps: covariance jitter.

    Returns:
      (N,) energies E(z) = -logsumexp_k(log phi_k + log N(z; mu_k, Sigma_k + eps I)).
    """
    return energy_from_cache(z, energy_cache(params, eps))


def cov_diag_penalty(cov: jax.Array, eps: float = DEFAULT_EPS) -> jax.Array:
    """The singularity penalty P(Sigma) = sum_k sum_j 1 / Sigma_k[j, j].

    Computed on the un-jittered covariance, as in the paper. A collapsed diagonal
    entry (an empty component) is floored at ``eps`` so the penalty is large but
    finite instead of inf.

    Args:
      cov: (K, D, D) covariances.
      eps: floor for the diagonal.

    Returns:
      () the penalty.
    """
    diag = jnp.diagonal(cov, axis1=-2, axis2=-1)
    return jnp.sum(1.0 / jnp.maximum(diag, eps))


def params_are_finite(params: GMMParams, eps: float = DEFAULT_EPS) -> jax.Array:
    """() bool: parameters finite and every jittered covariance Cholesky-factorable."""
    chol = cholesky_factor(params.cov, eps)
    leaves = (params.phi, params.mu, params.cov, chol)
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves]))
