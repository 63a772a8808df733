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


class MLP(nn.Module):
    """Dense layers with an activation after every hidden layer.

    Input (B, ...) is flattened to (B, F). Output (B, features[-1]) with
    ``out_activation`` (linear by default). Optional dropout after each hidden
    layer, active only when ``train=True``.
    """

    features: Sequence[int]
    activation: str = "tanh"
    out_activation: str = "linear"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        act = ACTIVATIONS[self.activation]
        for width in self.features[:-1]:
            x = act(nn.Dense(width)(x))
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = nn.Dense(self.features[-1])(x)
        return ACTIVATIONS[self.out_activation](x)


class GaussianHeads(nn.Module):
    """Two linear heads (mean, log-variance) of size ``latent_dim`` on a hidden code.

    Returns ((B, d), (B, d)).
    """

    latent_dim: int

    @nn.compact
    def __call__(self, h):
        h = h.reshape((h.shape[0], -1))
        return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="logvar")(h)


def default_hidden_sizes(n_features: int) -> tuple[int, int, int]:
    """The DAGMM KDD encoder 120-60-30-10 scaled to ``n_features`` (each layer >= 4)."""
    return (
        max(4, math.ceil(n_features / 2)),
        max(4, math.ceil(n_features / 4)),
        max(4, math.ceil(n_features / 12)),
    )


def default_encoder(n_features: int, hidden: Sequence[int] | None = None, activation: str = "tanh") -> MLP:
    """Encoder trunk F -> hidden... (the mean/log-variance or latent head is added by the model)."""
    hidden = tuple(hidden or default_hidden_sizes(n_features))
    return MLP(features=hidden, activation=activation, out_activation=activation)


def default_decoder(n_features: int, hidden: Sequence[int] | None = None, activation: str = "tanh") -> MLP:
    """Decoder latent -> reversed hidden... -> F (linear output)."""
    hidden = tuple(hidden or default_hidden_sizes(n_features))
    return MLP(features=tuple(reversed(hidden)) + (n_features,), activation=activation)


def default_gmm_density_net(n_gmm: int, hidden: int = 10, dropout: float = 0.5, activation: str = "tanh") -> MLP:
    """Estimation network z -> hidden (tanh) -> dropout -> K logits (the paper's)."""
    return MLP(features=(hidden, n_gmm), activation=activation, dropout=dropout)
