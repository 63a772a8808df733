"""Convolutional encoder/decoder for images (N, H, W, C): the teaching notebook's nets.

Encoder: Conv(32, 3x3, stride 2, relu, same) -> Conv(64, 3x3, stride 2, relu, same)
-> flatten -> Dense(16, relu). The model adds the mean/log-variance (or latent) heads.

Decoder: Dense(H/4 * W/4 * 64, relu) -> reshape (H/4, W/4, 64) -> ConvT(64, 3x3, s2, relu)
-> ConvT(32, 3x3, s2, relu) -> ConvT(C, 3x3, s1) -> sigmoid / logits / linear.
For 28x28x1 (MNIST) this is exactly the notebook's Dense(7*7*64) decoder. Each
stride-2 layer halves (encoder) or doubles (decoder) the spatial size with 'SAME'
padding, so H and W must be divisible by 2 ** len(features) (4 by default).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
from flax import linen as nn

from vaegmm_jax.nets.conv_ops import conv_transpose
from vaegmm_jax.nets.dense import ACTIVATIONS, KERNEL_INITS


#: LeCun normal (Flax's default), drawn flat: XLA's CPU compiler took seconds per rank-4 random
#: draw and a fraction of a second for a flat one (same weights: see nets.dense.variance_scaling)
kernel_init = KERNEL_INITS["lecun_normal"]


class ConvTranspose(nn.Module):
    """Flax's ``nn.ConvTranspose`` (SAME padding, bias) computed by :func:`conv_ops.conv_transpose`.

    Same parameters ('kernel' (kh, kw, C_in, C_out), 'bias' (C_out,) zeros), same maths;
    only the strided case is computed in the sub-pixel form on CPU, where XLA's kernel
    gradient of a dilated convolution is slow. The decoder names the layers
    ``ConvTranspose_i`` as Flax's auto-naming did, so saved parameter trees are unchanged.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: (sh, sw).
      kernel_init: kernel initializer.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    kernel_init: Callable = kernel_init

    @nn.compact
    def __call__(self, x):
        kh, kw = (int(k) for k in self.kernel_size)
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        dtype = jnp.result_type(x, kernel, bias)  # Flax's promote_dtype
        y = conv_transpose(x.astype(dtype), kernel.astype(dtype), self.strides)
        return y + bias.astype(dtype)


#: decoder output transforms: 'sigmoid' (mean of pixels in [0, 1]), 'logits' (for
#: the Bernoulli likelihood: the BCE is computed from logits), 'linear' (a Gaussian mean).
CONV_OUTPUTS = ("sigmoid", "logits", "linear")


class ConvEncoder(nn.Module):
    """Strided convolutions then a dense layer: (B, H, W, C) -> (B, hidden).

    Attributes:
      features: channels of the stride-2 conv layers.
      hidden: width of the final dense layer (its output is the trunk code h).
      kernel_size: square kernel size.
      activation: name in ``vaegmm_jax.nets.dense.ACTIVATIONS``.
    """

    features: Sequence[int] = (32, 64)
    hidden: int = 16
    kernel_size: int = 3
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4:
            raise ValueError(f"ConvEncoder expects images (B, H, W, C), got shape {x.shape}")
        act = ACTIVATIONS[self.activation]
        k = (self.kernel_size, self.kernel_size)
        for width in self.features:
            x = act(nn.Conv(width, k, strides=(2, 2), padding="SAME", kernel_init=kernel_init)(x))
        x = x.reshape((x.shape[0], -1))
        return act(nn.Dense(self.hidden)(x))


class ConvDecoder(nn.Module):
    """Dense then transposed convolutions: (B, d) -> (B, H, W, channels).

    Attributes:
      image_shape: (H, W, C) of the images to reconstruct.
      features: channels of the stride-2 transposed conv layers (the dense layer
        reshapes to ``features[0]`` channels).
      channels: output channels (default C; 2C for a decoder that outputs mean and
        log-variance, split along the last axis by the VAE model).
      output: 'sigmoid', 'logits' or 'linear' (see :data:`CONV_OUTPUTS`).
      kernel_size: square kernel size.
      activation: hidden activation.
    """

    image_shape: Sequence[int]
    features: Sequence[int] = (64, 32)
    channels: int | None = None
    output: str = "sigmoid"
    kernel_size: int = 3
    activation: str = "relu"

    @nn.compact
    def __call__(self, z):
        h, w, c = (int(v) for v in self.image_shape)
        scale = 2 ** len(self.features)
        act = ACTIVATIONS[self.activation]
        k = (self.kernel_size, self.kernel_size)
        z = z.reshape((z.shape[0], -1))
        x = act(nn.Dense((h // scale) * (w // scale) * self.features[0])(z))
        x = x.reshape((z.shape[0], h // scale, w // scale, self.features[0]))
        for i, width in enumerate(self.features):
            x = act(ConvTranspose(width, k, strides=(2, 2), name=f"ConvTranspose_{i}")(x))
        x = ConvTranspose(self.channels or c, k, strides=(1, 1), name=f"ConvTranspose_{len(self.features)}")(x)
        if self.output == "sigmoid":
            return nn.sigmoid(x)
        return x  # 'logits' and 'linear' are both the raw output


def conv_encoder(hidden: int = 16, features: Sequence[int] = (32, 64), kernel_size: int = 3,
                 activation: str = "relu") -> ConvEncoder:
    """The notebook's image encoder trunk (B, H, W, C) -> (B, hidden); heads are added by the model."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    return ConvEncoder(features=tuple(int(f) for f in features), hidden=int(hidden), kernel_size=int(kernel_size),
                       activation=activation)


def conv_decoder(image_shape: Sequence[int], output: str = "sigmoid", channels: int | None = None,
                 features: Sequence[int] = (64, 32), kernel_size: int = 3, activation: str = "relu") -> ConvDecoder:
    """The notebook's image decoder (B, d) -> (B, H, W, channels).

    Args:
      image_shape: (H, W, C); H and W must be divisible by 2 ** len(features).
      output: 'sigmoid' (notebook), 'logits' (Bernoulli likelihood) or 'linear'.
      channels: output channels (default C).
      features: transposed-conv channels, (64, 32) as in the notebook.
      kernel_size, activation: as the encoder.

    Raises:
      ValueError: a bad image shape or option.
    """
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    scale = 2 ** len(features)
    if shape[0] % scale or shape[1] % scale:
        raise ValueError(
            f"conv_decoder needs H and W divisible by {scale} (one halving per stride-2 layer), got {shape[:2]}; "
            "pad or crop the images, or use a dense decoder"
        )
    if output not in CONV_OUTPUTS:
        raise ValueError(f"output must be one of {CONV_OUTPUTS}, got {output!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    return ConvDecoder(image_shape=shape, features=tuple(int(f) for f in features),
                       channels=None if channels is None else int(channels), output=output,
                       kernel_size=int(kernel_size), activation=activation)


def conv_compatible(image_shape: Sequence[int], n_halvings: int = 2) -> bool:
    """True when (H, W, C) works with the default conv nets (H, W divisible by 2 ** n_halvings)."""
    shape = tuple(image_shape)
    scale = 2**n_halvings
    return len(shape) == 3 and shape[0] % scale == 0 and shape[1] % scale == 0


__all__ = [
    "ConvEncoder", "ConvDecoder", "conv_encoder", "conv_decoder", "conv_compatible", "kernel_init", "CONV_OUTPUTS",
]
