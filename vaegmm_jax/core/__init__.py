"""The functional core: pure, jit-able maths over arrays and pytrees."""

from vaegmm_jax.core import features, gmm, vae

__all__ = ["features", "gmm", "vae"]
