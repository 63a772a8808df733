"""Detectors: the friendly, alibi-detect-compatible classes over the functional core."""

from vaegmm_jax.detectors.base import BaseDetector, NonFiniteLossError, default_optimizer
from vaegmm_jax.detectors.gmm_detectors import OutlierAEGMM, OutlierVAEGMM
from vaegmm_jax.engine.mixture import fit_mixture
from vaegmm_jax.detectors.vae_detector import OutlierVAE

__all__ = ["BaseDetector", "NonFiniteLossError", "OutlierAEGMM", "OutlierVAEGMM", "default_optimizer", "fit_mixture"]
__all__ += ["OutlierVAE"]
from vaegmm_jax.detectors import presets
from vaegmm_jax.detectors.loading import load_detector

__all__ += ["presets", "load_detector"]
