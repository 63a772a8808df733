"""The engine: how models train and score, independent of any one detector.

``training`` (the jitted epoch and its state), ``members`` (running M seeded members as one
program), ``parallel`` (devices and shardings), ``streaming`` (fixed-size padded chunks over
any row source), ``validation`` (input checks that run before anything is compiled).
"""

from vaegmm_jax.engine import members, parallel, streaming, training, validation

__all__ = ["members", "parallel", "streaming", "training", "validation"]
