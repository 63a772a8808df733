"""Default fully connected networks, sized from the data (DAGMM paper shapes)."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

ACTIVATIONS = {
    "tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "sigmoid": jax.nn.sigmoid, "linear": lambda v: v,
}

# Dense kernel initialisers by name, so that a configuration (and a checkpoint's config)
# stays a plain string. The frameworks whose models we reproduce differ here:
# Flax's default is LeCun normal (truncated normal, variance 1 / fan_in); TensorFlow /
# Keras layers (alibi-detect, the TensorFlow DAGMM ports) use Glorot uniform (variance
# 2 / (fan_in + fan_out)); PyTorch's nn.Linear draws U(+-1 / sqrt(fan_in)) (variance
# 1 / (3 fan_in)). Biases start at zero in all of them here.
KERNEL_INITS = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "glorot_uniform": nn.initializers.glorot_uniform(),
    "torch_uniform": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}
DEFAULT_KERNEL_INIT = "lecun_normal"


def kernel_initializer(name: str):
    """The initialiser called ``name`` (one of :data:`KERNEL_INITS`), with a clear error otherwise."""
    try:
        return KERNEL_INITS[name]
    except (KeyError, TypeError):
        raise ValueError(f"kernel_init must be one of {sorted(KERNEL_INITS)}, got {name!r}") from None


class MLP(nn.Module):
    """Dense layers with an activation after every hidden layer.

    Input (B, ...) is flattened to (B, F). Output (B, features[-1]) with
    ``out_activation`` (linear by default). Optional dropout after each hidden
    layer, active only when ``train=True``. ``kernel_init`` names the weights'
    initialiser (:data:`KERNEL_INITS`).
    """

    features: Sequence[int]
    activation: str = "tanh"
    out_activation: str = "linear"
    dropout: float = 0.0
    kernel_init: str = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        act = ACTIVATIONS[self.activation]
        init = kernel_initializer(self.kernel_init)
        for width in self.features[:-1]:
            x = act(nn.Dense(width, kernel_init=init)(x))
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.features[-1], kernel_init=init)(x)
        return ACTIVATIONS[self.out_activation](x)


class GaussianHeads(nn.Module):
    """Two linear heads (mean, log-variance) of size ``latent_dim`` on a hidden code.

    Returns ((B, d), (B, d)).
    """

    latent_dim: int
    kernel_init: str = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, h):
        h = h.reshape((h.shape[0], -1))
        init = kernel_initializer(self.kernel_init)
        return (nn.Dense(self.latent_dim, kernel_init=init, name="mean")(h),
                nn.Dense(self.latent_dim, kernel_init=init, name="logvar")(h))


def default_hidden_sizes(n_features: int) -> tuple[int, int, int]:
    """The DAGMM KDD encoder 120-60-30-10 scaled to ``n_features`` (each layer >= 4)."""
    return (
        max(4, math.ceil(n_features / 2)),
        max(4, math.ceil(n_features / 4)),
        max(4, math.ceil(n_features / 12)),
    )


def default_encoder(n_features: int, hidden: Sequence[int] | None = None, activation: str = "tanh",
                    kernel_init: str = DEFAULT_KERNEL_INIT) -> MLP:
    """Encoder trunk F -> hidden... (the mean/log-variance or latent head is added by the model)."""
    hidden = tuple(hidden or default_hidden_sizes(n_features))
    return MLP(features=hidden, activation=activation, out_activation=activation, kernel_init=kernel_init)


def default_decoder(n_features: int, hidden: Sequence[int] | None = None, activation: str = "tanh",
                    kernel_init: str = DEFAULT_KERNEL_INIT) -> MLP:
    """Decoder latent -> reversed hidden... -> F (linear output)."""
    hidden = tuple(hidden or default_hidden_sizes(n_features))
    return MLP(features=tuple(reversed(hidden)) + (n_features,), activation=activation, kernel_init=kernel_init)


def default_gmm_density_net(n_gmm: int, hidden: int = 10, dropout: float = 0.5, activation: str = "tanh",
                            kernel_init: str = DEFAULT_KERNEL_INIT) -> MLP:
    """Estimation network z -> hidden (tanh) -> dropout -> K logits (the paper's)."""
    return MLP(features=(hidden, n_gmm), activation=activation, dropout=dropout, kernel_init=kernel_init)
