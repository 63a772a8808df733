"""Model definitions: static descriptions plus pure forward/loss functions."""

from vaegmm_jax.models.vae_model import VAE_LOSS_TERMS, DecoderOutput, VAEModel, top_percent_mean, vae_loss
from vaegmm_jax.models.gmm_autoencoder import (
    LOSS_TERMS,
    GMMAutoencoder,
    LossWeights,
    MixtureInput,
    gmm_autoencoder_loss,
    squared_error_sum,
)

__all__ = ["GMMAutoencoder", "LossWeights", "MixtureInput", "LOSS_TERMS", "gmm_autoencoder_loss", "squared_error_sum"]
__all__ += ["VAEModel", "DecoderOutput", "VAE_LOSS_TERMS", "vae_loss", "top_percent_mean"]
