"""Default fully connected networks, sized from the data (DAGMM paper shapes)."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from vaegmm_jax.core import draws

ACTIVATIONS = {
    "tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu, "sigmoid": jax.nn.sigmoid, "linear": lambda v: v,
}


def variance_scaling(scale: float, mode: str, distribution: str):
    """``jax.nn.initializers.variance_scaling(scale, mode, distribution)`` for real kernels
    (..., fan_in, fan_out), with its draw made flat (:mod:`vaegmm_jax.core.draws`).

    The same arithmetic as JAX's, so the same weights bit for bit (tested against Flax's
    initialisers); the initialisation program compiles faster on CPUs.

    Args:
      scale: variance scale.
      mode: 'fan_in' or 'fan_avg'.
      distribution: 'truncated_normal' (truncated to two standard deviations) or 'uniform'.
    """
    if mode not in ("fan_in", "fan_avg") or distribution not in ("truncated_normal", "uniform"):
        raise ValueError(f"variance_scaling supports mode fan_in/fan_avg and distribution truncated_normal/uniform, "
                         f"got {mode!r}, {distribution!r}")

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"variance_scaling initialises kernels (..., fan_in, fan_out), got shape {shape}")
        receptive_field = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive_field, shape[-1] * receptive_field
        variance = jnp.array(scale / (fan_in if mode == "fan_in" else (fan_in + fan_out) / 2), dtype=dtype)
        if distribution == "truncated_normal":
            # the standard deviation of a standard normal truncated to (-2, 2)
            stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
            return draws.truncated_normal(key, -2, 2, shape, dtype) * stddev
        return draws.uniform(key, shape, dtype, -1) * jnp.sqrt(3 * variance)

    return init


# Dense kernel initialisers by name, so that a configuration (and a checkpoint's config)
# stays a plain string. The frameworks whose models we reproduce differ here:
# Flax's default is LeCun normal (truncated normal, variance 1 / fan_in); TensorFlow /
# Keras layers (alibi-detect, the TensorFlow DAGMM ports) use Glorot uniform (variance
# 2 / (fan_in + fan_out)); PyTorch's nn.Linear draws U(+-1 / sqrt(fan_in)) (variance
# 1 / (3 fan_in)). Biases start at zero in all of them here.
KERNEL_INITS = {
    "lecun_normal": variance_scaling(1.0, "fan_in", "truncated_normal"),
    "glorot_uniform": variance_scaling(1.0, "fan_avg", "uniform"),
    "torch_uniform": variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}
DEFAULT_KERNEL_INIT = "lecun_normal"


def kernel_initializer(name: str):
    """The initialiser called ``name`` (one of :data:`KERNEL_INITS`), with a clear error otherwise."""
    try:
        return KERNEL_INITS[name]
    except (KeyError, TypeError):
        raise ValueError(f"kernel_init must be one of {sorted(KERNEL_INITS)}, got {name!r}") from None


class Dropout(nn.Dropout):
    """``flax.linen.Dropout`` with its mask drawn flat (:func:`vaegmm_jax.core.draws.bernoulli`).

    The same masks as Flax's layer (same name, same rng stream, same numbers), in a program that
    compiles much faster on CPUs. Broadcast dimensions (``broadcast_dims``) are not supported.
    """

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:  # as Flax: no division by a zero keep probability
            return jnp.zeros_like(inputs)
        if self.broadcast_dims:
            raise ValueError("Dropout with broadcast_dims: use flax.linen.Dropout")
        keep_prob = 1.0 - self.rate
        rng = self.make_rng(self.rng_collection) if rng is None else rng
        mask = draws.bernoulli(rng, keep_prob, inputs.shape)
        return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


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
                x = Dropout(self.dropout, deterministic=not train)(x)
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
