"""Networks: the Linen/NNX adapter and the default architectures."""

from vaegmm_jax.nets.adapter import Network, as_network, from_linen, from_nnx
from vaegmm_jax.nets.conv import ConvDecoder, ConvEncoder, conv_decoder, conv_encoder
from vaegmm_jax.nets.dense import (
    MLP,
    GaussianHeads,
    default_decoder,
    default_encoder,
    default_gmm_density_net,
    default_hidden_sizes,
)

__all__ = [
    "Network", "as_network", "from_linen", "from_nnx", "MLP", "GaussianHeads",
    "default_encoder", "default_decoder", "default_gmm_density_net", "default_hidden_sizes",
]
__all__ += ["ConvEncoder", "ConvDecoder", "conv_encoder", "conv_decoder"]
