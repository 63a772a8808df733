"""Strided transposed convolution, fast to differentiate on every platform.

``jax.lax.conv_transpose`` with stride s > 1 is a convolution of the input dilated
by s (``lhs_dilation``). XLA's CPU backend computes the *kernel* gradient of such a
convolution an order of magnitude slower than the forward pass (measured on the
conv VAE's decoder, batch 128, 2-core CPU: 260 ms and 460 ms for the two stride-2
layers' kernel gradients against 20-55 ms forward), which made the image VAE
train at seconds per step. The same map can be written without dilation
("sub-pixel" form): output pixel (s p + a, s q + b) only sees input pixels
(p + d, q + e) for a few offsets d, e, through the kernel taps t with
``(a + t - pad) % s == 0``. Gathering those taps into a small stride-1 kernel with
s*s*C_out output channels, one stride-1 convolution (written as im2col plus one
matmul, whose gradients are matmuls too) followed by a depth-to-space reshape
gives exactly ``lax.conv_transpose(x, kernel, (s, s), 'SAME')``: the same sums,
in another order (agreement to float rounding; tested).

:func:`conv_transpose` picks the form per platform with ``lax.platform_dependent``
(decided when the program is lowered, so the compiler never sees a branch): the
sub-pixel form on CPU, XLA's own transposed convolution elsewhere (cuDNN on GPU).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")


def same_transpose_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """``lax.conv_transpose``'s 'SAME' padding (before, after) of the dilated input, per spatial dim."""
    pad_len = kernel_size + stride - 2
    before = kernel_size - 1 if stride > kernel_size - 1 else math.ceil(pad_len / 2)
    return before, pad_len - before


def subpixel_taps(kernel_size: int, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Which kernel tap feeds each (input offset, output phase) pair, for one spatial dim.

    Returns:
      taps: (n_offsets, stride) int array; ``taps[d, a]`` is the tap t of the
        original kernel that multiplies input pixel ``p + d - pad_before`` for output
        pixel ``stride * p + a``, or ``kernel_size`` (a zero tap) where none does.
      padding: (before, after) padding of the input for the stride-1 convolution.
    """
    pad_a, _ = same_transpose_padding(kernel_size, stride)
    entries = [(a, t, (a + t - pad_a) // stride)
               for a in range(stride) for t in range(kernel_size) if (a + t - pad_a) % stride == 0]
    lo = min(d for _, _, d in entries)
    hi = max(d for _, _, d in entries)
    taps = np.full((hi - lo + 1, stride), kernel_size, dtype=np.int32)
    for a, t, d in entries:
        taps[d - lo, a] = t
    return taps, (-lo, hi)


def _im2col_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Stride-1 convolution as shifted slices and one matmul: (B, H, W, C) -> (B, H', W', O)."""
    kh, kw, cin, cout = kernel.shape
    xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    h = xp.shape[1] - kh + 1
    w = xp.shape[2] - kw + 1
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return jnp.matmul(cols, kernel.reshape(kh * kw * cin, cout), precision=None)


def subpixel_conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, 'SAME')`` without input dilation.

    Args:
      x: (B, H, W, C_in) images (NHWC).
      kernel: (kh, kw, C_in, C_out), Flax/``lax.conv_transpose`` layout (not transposed).
      strides: (sh, sw).

    Returns:
      (B, sh * H, sw * W, C_out).
    """
    sh, sw = (int(s) for s in strides)
    kh, kw, cin, cout = kernel.shape
    taps_h, pad_h = subpixel_taps(kh, sh)
    taps_w, pad_w = subpixel_taps(kw, sw)
    # a zero tap at index k, so that "no tap" gathers a zero (a gather: exact on every platform)
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    sub = padded[taps_h[:, :, None, None], taps_w[None, None, :, :]]  # (dh, sh, dw, sw, C_in, C_out)
    sub = sub.transpose(0, 2, 4, 1, 3, 5).reshape(taps_h.shape[0], taps_w.shape[0], cin, sh * sw * cout)
    y = _im2col_conv(x, sub, (pad_h, pad_w))  # (B, H, W, sh * sw * C_out), channels ordered (a, b, o)
    b, h, w, _ = y.shape
    y = y.reshape(b, h, w, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, h * sh, w * sw, cout)


def xla_conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """XLA's transposed convolution, as Flax's ``nn.ConvTranspose`` computes it (SAME padding)."""
    return lax.conv_transpose(x, kernel, tuple(int(s) for s in strides), "SAME", dimension_numbers=_DIMS)


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """Transposed convolution with 'SAME' padding: (B, H, W, C_in) -> (B, sh H, sw W, C_out).

    Equal to ``lax.conv_transpose(x, kernel, strides, 'SAME')`` (Flax's ``nn.ConvTranspose``
    without bias). Strided layers use :func:`subpixel_conv_transpose` on CPU, whose
    gradient is fast there; stride 1 and other platforms use XLA's convolution.

    Args:
      x: (B, H, W, C_in).
      kernel: (kh, kw, C_in, C_out).
      strides: (sh, sw).
    """
    strides = tuple(int(s) for s in strides)
    if max(strides) == 1:
        return xla_conv_transpose(x, kernel, strides)
    return lax.platform_dependent(
        x, kernel,
        cpu=lambda x, k: subpixel_conv_transpose(x, k, strides),
        default=lambda x, k: xla_conv_transpose(x, k, strides),
    )
