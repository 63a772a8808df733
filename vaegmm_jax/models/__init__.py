"""Model definitions: static descriptions plus pure forward/loss functions."""

from vaegmm_jax.models.gmm_autoencoder import (
    LOSS_TERMS,
    GMMAutoencoder,
    LossWeights,
    MixtureInput,
    gmm_autoencoder_loss,
    squared_error_sum,
)

__all__ = ["GMMAutoencoder", "LossWeights", "MixtureInput", "LOSS_TERMS", "gmm_autoencoder_loss", "squared_error_sum"]
