"""vaegmm_jax: deep density-based outlier detection (VAEGMM, DAGMM, VAE) in JAX/Flax.

The detector classes mirror alibi-detect's API; the pure functions underneath
(``vaegmm_jax.core``, ``vaegmm_jax.models``, ``vaegmm_jax.engine.training``) compose with
jax.jit, jax.vmap and jax.grad.

Importing the package changes no global JAX configuration and configures no logger.
"""

from vaegmm_jax._version import __version__

from vaegmm_jax.io.checkpoint import CheckpointError, save_detector
from vaegmm_jax.detectors.loading import load_detector
from vaegmm_jax.core.features import alibi_eucl_cosim_features, dagmm_features
from vaegmm_jax.core.gmm import GMMParams, GMMStats, energy, gmm_params
from vaegmm_jax.detectors import NonFiniteLossError, OutlierAEGMM, OutlierVAEGMM
from vaegmm_jax.detectors import OutlierVAE
from vaegmm_jax.models import GMMAutoencoder, LossWeights
from vaegmm_jax.models import VAEModel
from vaegmm_jax.engine.validation import NotFittedError

__all__ = [
    "__version__",
    "OutlierVAEGMM",
    "OutlierAEGMM",
    "GMMAutoencoder",
    "LossWeights",
    "GMMParams",
    "GMMStats",
    "energy",
    "gmm_params",
    "dagmm_features",
    "alibi_eucl_cosim_features",
    "save_detector",
    "load_detector",
    "CheckpointError",
    "NotFittedError",
    "NonFiniteLossError",
]
__all__ += ["OutlierVAE", "VAEModel"]
