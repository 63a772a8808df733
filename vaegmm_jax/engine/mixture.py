"""Fitting the Gaussian mixture of a (V)AEGMM from its whole training set, after training.

Two passes of additive statistics over fixed-size chunks (memory bounded by the chunk): the
means first, then second moments centred on them. A device-resident training set is one
compiled program of two scans; host data is streamed chunk by chunk.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.core import gmm as gmm_lib
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.engine import members, parallel
from vaegmm_jax.engine.config import RUN_ONCE_COMPILER_OPTIONS, xla_options
from vaegmm_jax.engine.streaming import iter_chunks
from vaegmm_jax.models.gmm_autoencoder import GMMAutoencoder


def fit_mixture(
    model: GMMAutoencoder, params, X: np.ndarray, key: jax.Array, chunk_size: int = 8192, devices=None
) -> gmm_lib.GMMParams:
    """phi/mu/Sigma from the whole data set, in fixed-size chunks (memory bounded by the chunk).

    Two passes of additive statistics: the means first, then second moments centred
    on them, which equals the one-pass estimate without float32 cancellation.
    Each row uses one latent sample whose noise depends only on (key, row index).
    A ``jax.Array`` (the training set after ``fit``) is processed by one compiled
    program (:func:`mixture_from_device_array`); host data is streamed chunk by chunk.

    Args:
      model: the model.
      params: its parameters.
      X: (N, *S) data (numpy, memmap, or a jax.Array, which is sliced on the device).
      key: PRNG key of the latent samples.
      chunk_size: rows per chunk.
      devices: devices to split each chunk's rows over (default all local devices);
        the statistics are summed across them.

    Returns:
      GMMParams(phi (K,), mu (K, D), cov (K, D, D)).
    """
    return _fit_mixture(model, params, X, key, chunk_size, devices)[0]


def mixture_chunk(n_rows: int, chunk_size: int, mesh) -> int:
    return parallel.round_up(min(chunk_size, -(-n_rows // 8) * 8), parallel.mesh_size(mesh))


def device_mixture_program(model: GMMAutoencoder, n_rows: int, chunk_size: int, devices, n_members: int = 1,
                            member_data: bool = False, compiler_options=RUN_ONCE_COMPILER_OPTIONS) -> Callable:
    """jit(fn(params, x, keys) -> (GMMParams, finite)): the whole mixture fit of a device array
    x (N, *S) (or (M, N, *S) with ``member_data``) for each of M members (leading member axis
    when M > 1).

    It runs once per fit, so it is compiled for a short compile (no Triton GEMM autotuning)
    rather than for the last microsecond. One member: each chunk's rows are split over the
    devices; several: the members are vmapped on one device.
    """
    mesh = parallel.local_mesh(devices) if n_members == 1 else None
    sharding = parallel.row_sharding(mesh)
    chunk = mixture_chunk(n_rows, chunk_size, mesh)

    def one_member(p, x, k):
        return mixture_from_device_array(model, p, x, k, chunk, sharding)

    return jax.jit(
        members.over_members(one_member, (0, 0 if member_data else None, 0), n_members),
        compiler_options=xla_options(compiler_options),
    )


def _fit_mixture(model, params, X, key, chunk_size, devices):
    """fit_mixture plus its () bool finiteness check (in the same program for device data)."""
    if isinstance(X, jax.Array):
        return device_mixture_program(model, X.shape[0], chunk_size, devices)(params, X, key)
    mesh = parallel.local_mesh(devices)
    sharding = parallel.row_sharding(mesh)
    chunk_size = mixture_chunk(X.shape[0], chunk_size, mesh)

    @jax.jit
    def chunk_stats(params, x, weights, offset, shift, total):
        rows = offset + jnp.arange(x.shape[0], dtype=jnp.int32)
        noise = vae_lib.row_normal_noise(key, rows, 1, model.latent_dim)
        return gmm_lib.merge_stats(total, model.gmm_stats(params, x, noise, weights, shift))

    shift = jnp.zeros((model.n_gmm, _mixture_dim(model)), jnp.float32)  # pass 1 around 0, pass 2 around the means
    for _ in range(2):
        # start from zero statistics (not None) so both passes share one compiled program
        total = _zero_stats(shift)
        for chunk in iter_chunks(X, chunk_size):
            x, w = parallel.put(chunk.x, sharding), parallel.put(chunk.weights, sharding)
            total = chunk_stats(params, x, w, np.int32(chunk.offset), shift, total)
        first = _params_from_stats(total)
        shift = first.mu
    return first, _params_are_finite(first, model.eps)


def mixture_from_device_array(model: GMMAutoencoder, params, x: jax.Array, key: jax.Array, chunk_size: int,
                              sharding=None) -> tuple[gmm_lib.GMMParams, jax.Array]:
    """The two statistics passes of :func:`fit_mixture` over an on-device array, as scans (pure; jit it).

    Chunk c holds rows [c C, c C + C); rows past N are the last row again with weight 0
    (as in streaming), so the result equals the streamed one up to summation order.
    The pass itself is a scan too: the model appears once in the compiled program.

    Args:
      model: the model.
      params: its parameters.
      x: (N, *S) data.
      key: PRNG key of the latent samples (row i uses fold_in(key, i)).
      chunk_size: C rows per step (static).
      sharding: optional row sharding of each chunk over devices.

    Returns:
      (GMMParams(phi (K,), mu (K, D), cov (K, D, D)), () bool: finite and factorable).
    """
    n = x.shape[0]
    offsets = jnp.arange(-(-n // chunk_size), dtype=jnp.int32) * chunk_size

    def chunk_body(total, offset):
        rows = offset + jnp.arange(chunk_size, dtype=jnp.int32)
        xc = jnp.take(x, jnp.minimum(rows, n - 1), axis=0)
        wc = (rows < n).astype(jnp.float32)
        if sharding is not None:
            xc = jax.lax.with_sharding_constraint(xc, sharding)
            wc = jax.lax.with_sharding_constraint(wc, sharding)
        noise = vae_lib.row_normal_noise(key, rows, 1, model.latent_dim)
        return gmm_lib.merge_stats(total, model.gmm_stats(params, xc, noise, wc, total.shift)), None

    def one_pass(shift, _):
        total, _ = jax.lax.scan(chunk_body, _zero_stats(shift), offsets)
        mixture = gmm_lib.params_from_stats(total)
        return mixture.mu, mixture

    zero_shift = jnp.zeros((model.n_gmm, _mixture_dim(model)), jnp.float32)
    _, passes = jax.lax.scan(one_pass, zero_shift, None, length=2)  # pass 1 around 0, pass 2 around the means
    mixture = jax.tree.map(lambda a: a[1], passes)
    return mixture, gmm_lib.params_are_finite(mixture, model.eps)


def _mixture_dim(model: GMMAutoencoder) -> int:
    return model.latent_dim + model.recon_features(np.zeros((1, 1)), np.ones((1, 1))).shape[-1]


def _zero_stats(shift: jax.Array) -> gmm_lib.GMMStats:
    k, d = shift.shape
    return gmm_lib.GMMStats(
        count=jnp.zeros((), jnp.float32), weight=jnp.zeros((k,), jnp.float32),
        sum_z=jnp.zeros((k, d), jnp.float32), sum_zz=jnp.zeros((k, d, d), jnp.float32), shift=shift,
    )


_params_from_stats = jax.jit(gmm_lib.params_from_stats)
_params_are_finite = jax.jit(gmm_lib.params_are_finite, static_argnums=1)


__all__ = ["fit_mixture", "mixture_from_device_array", "device_mixture_program", "mixture_chunk"]
