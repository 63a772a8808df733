"""Variational pieces: reparameterised sampling, KL, and reconstruction likelihoods.

Shapes: N rows, F features (flattened), d latent dimensions.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from vaegmm_jax.core import draws

HIGHEST = jax.lax.Precision.HIGHEST
_LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Draws z = mean + exp(0.5 logvar) * eps, eps ~ N(0, I).

    Args:
      key: PRNG key.
      mean: (..., d) posterior means.
      logvar: (..., d) posterior log-variances.

    Returns:
      (..., d) samples, differentiable in mean and logvar.
    """
    eps = draws.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps


def row_normal_noise(key: jax.Array, row_index: jax.Array, n_samples: int, dim: int, dtype=jnp.float32):
    """Standard normal noise that depends only on (key, global row index).

    Drawing noise per row (rather than per batch) makes scores independent of how
    the rows are chunked: row i gets the same L samples in a one-shot call and in
    any chunked or sharded call.

    Args:
      key: PRNG key.
      row_index: (N,) int global row indices.
      n_samples: L samples per row.
      dim: d.

    Returns:
      (L, N, d) noise.
    """
    row_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(row_index)
    # drawn (L, d), not flat: the same noise either way, but the flat draw changes how XLA fuses
    # the score program and so the last bits of the scores of existing checkpoints
    noise = jax.vmap(lambda k: jax.random.normal(k, (n_samples, dim), dtype))(row_keys)
    return jnp.swapaxes(noise, 0, 1)


def kl_divergence(mean: jax.Array, logvar: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """KL(q(z|x) || N(0, I)) in alibi-detect's convention.

    alibi-detect computes -0.5 * mean over batch AND latent dims of
    (1 + logvar - mean^2 - exp(logvar)): the usual per-row KL divided by d.

    Args:
      mean: (N, d) posterior means.
      logvar: (N, d) posterior log-variances.
      weights: optional (N,) row weights (0 for padding rows).

    Returns:
      () the averaged KL.
    """
    per_row = -0.5 * jnp.mean(1.0 + logvar - mean**2 - jnp.exp(logvar), axis=-1)
    return weighted_mean(per_row, weights)


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of (N,) values, or their weighted mean when (N,) weights are given."""
    if weights is None:
        return jnp.mean(values)
    w = weights.astype(values.dtype)
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


class ReconCovariance(NamedTuple):
    """The fixed observation covariance of the Gaussian reconstruction likelihood.

    Exactly one kind is used (mirrors alibi-detect's ``cov_elbo`` dict):
      ``sim``: isotropic, ``scale`` () is the standard deviation (alibi default 0.05).
      ``cov_diag``: ``scale`` (F,) per-feature standard deviations of the training data.
      ``cov_full``: ``scale`` (F, F) lower Cholesky factor of the training covariance.
    """

    kind: Literal["sim", "cov_diag", "cov_full"]
    scale: jax.Array


def recon_covariance(cov_elbo: dict, x_train=None, floor: float = 1e-6) -> ReconCovariance:
    """Builds the observation covariance from alibi-detect's ``cov_elbo`` argument.

    Args:
      cov_elbo: one of ``dict(sim=0.05)``, ``dict(cov_diag=None)``, ``dict(cov_full=None)``.
        For cov_diag / cov_full, a given array is used as is (standard deviations
        (F,), or a covariance (F, F)); ``None`` estimates it from ``x_train``.
      x_train: (N, F) training data (flattened), needed when estimating.
      floor: smallest variance allowed (constant columns would give a singular
        likelihood); also the jitter added to a full covariance.

    Returns:
      ReconCovariance.
    """
    if not isinstance(cov_elbo, dict) or len(cov_elbo) != 1:
        raise ValueError(
            "cov_elbo must be a dict with exactly one of the keys 'sim', 'cov_diag', 'cov_full', "
            f"got {cov_elbo!r}"
        )
    (kind, value), = cov_elbo.items()
    if kind == "sim":
        sim = 0.05 if value is None else float(value)
        if not sim > 0:
            raise ValueError(f"cov_elbo sim must be a positive standard deviation, got {sim}")
        return ReconCovariance("sim", jnp.asarray(sim, jnp.float32))
    if kind not in ("cov_diag", "cov_full"):
        raise ValueError(f"unknown cov_elbo key {kind!r}: use 'sim', 'cov_diag' or 'cov_full'")
    if value is None:
        if x_train is None:
            raise ValueError(f"cov_elbo {kind!r} needs the training data to estimate the covariance")
        x64 = jnp.asarray(x_train, jnp.float32).reshape(x_train.shape[0], -1)
        if kind == "cov_diag":
            value = jnp.sqrt(jnp.maximum(jnp.var(x64, axis=0), floor))
        else:
            value = jnp.cov(x64, rowvar=False)
    value = jnp.asarray(value, jnp.float32)
    if kind == "cov_diag":
        return ReconCovariance("cov_diag", jnp.maximum(value, math.sqrt(floor)))
    f = value.shape[0]
    chol = jnp.linalg.cholesky(value + floor * jnp.eye(f, dtype=value.dtype))
    if not bool(jnp.all(jnp.isfinite(chol))):
        raise ValueError("cov_elbo cov_full: the covariance is not positive definite even after jitter")
    return ReconCovariance("cov_full", chol)


def gaussian_nll(x: jax.Array, x_recon: jax.Array, cov: ReconCovariance) -> jax.Array:
    """Per-row negative log-likelihood -log N(x; x_recon, S) with a fixed S.

    Args:
      x: (N, F) inputs (flattened).
      x_recon: (N, F) reconstructions (the Gaussian means).
      cov: the fixed observation covariance.

    Returns:
      (N,) negative log-likelihoods (sum over features).
    """
    resid = x - x_recon
    f = x.shape[-1]
    if cov.kind == "sim":
        s = cov.scale
        return 0.5 * jnp.sum((resid / s) ** 2, axis=-1) + f * jnp.log(s) + 0.5 * f * _LOG_2PI
    if cov.kind == "cov_diag":
        s = cov.scale
        return 0.5 * jnp.sum((resid / s) ** 2, axis=-1) + jnp.sum(jnp.log(s)) + 0.5 * f * _LOG_2PI
    chol = cov.scale
    v = jax.scipy.linalg.solve_triangular(chol, resid.T, lower=True).T  # (N, F)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return 0.5 * jnp.sum(v * v, axis=-1) + 0.5 * log_det + 0.5 * f * _LOG_2PI


def gaussian_log_prob_diag(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Per-feature log N(x; mean, exp(logvar)), elementwise.

    Args:
      x, mean, logvar: (..., F) broadcastable arrays.

    Returns:
      (..., F) log densities.
    """
    return -0.5 * (_LOG_2PI + logvar + (x - mean) ** 2 * jnp.exp(-logvar))


def bernoulli_nll(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Per-feature binary cross-entropy -[x log p + (1-x) log(1-p)], p = sigmoid(logits).

    Computed from logits for stability (a sigmoid output saturates to exactly 0/1).

    Args:
      x: (..., F) targets in [0, 1].
      logits: (..., F) decoder logits.

    Returns:
      (..., F) per-feature negative log-likelihoods.
    """
    return jnp.maximum(logits, 0) - logits * x + jnp.log1p(jnp.exp(-jnp.abs(logits)))
