"""Random draws of any shape, made as one flat vector.

``jax.random.normal(key, (B, d))`` and ``jax.random.normal(key, (B * d,)).reshape(B, d)`` give
the same numbers (the counters of the threefry generator are the row-major index of each
element, in both of JAX's threefry modes; tested), but not the same program: XLA's CPU backend
compiles the generator's loop for a 2-D shape with an odd last axis slowly (0.59 s for a
(128, 10) draw against 0.12 s for (1280,) on the 2-core development machine, jax 0.10), and a
training step makes several such draws. The models' training draws (reparameterisation noise,
dropout masks) and the dense initialisers go through here; the scoring noise does not (see
:func:`vaegmm_jax.core.vae.row_normal_noise`).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp


def normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``shape`` standard normal numbers, equal to ``jax.random.normal(key, shape, dtype)``."""
    shape = tuple(shape)
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def bernoulli(key: jax.Array, p, shape: Sequence[int]) -> jax.Array:
    """``shape`` booleans, True with probability ``p``; equal to ``jax.random.bernoulli(key, p, shape)``."""
    shape = tuple(shape)
    return jax.random.bernoulli(key, p, (math.prod(shape),)).reshape(shape)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """``shape`` uniform numbers in [minval, maxval); equal to ``jax.random.uniform``'s."""
    shape = tuple(shape)
    return jax.random.uniform(key, (math.prod(shape),), dtype, minval, maxval).reshape(shape)


def truncated_normal(key: jax.Array, lower, upper, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """``shape`` standard normal numbers truncated to [lower, upper]; equal to ``jax.random.truncated_normal``'s."""
    shape = tuple(shape)
    return jax.random.truncated_normal(key, lower, upper, (math.prod(shape),), dtype).reshape(shape)


__all__ = ["normal", "bernoulli", "uniform", "truncated_normal"]
