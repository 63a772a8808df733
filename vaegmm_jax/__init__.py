"""vaegmm_jax: deep density-based outlier detection in JAX/Flax."""
