"""The ``vaegmm`` command line: fit, score, evaluate and inspect detectors."""

from vaegmm_jax.cli.app import main

__all__ = ["main"]
