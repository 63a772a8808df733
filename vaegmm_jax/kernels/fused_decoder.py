"""A fused GPU kernel (Pallas, Triton backend) for the scoring hot spot: decoder + reconstruction sums.

Scoring decodes every row L times. Written with XLA ops, each of the L x B
reconstructions (F wide) goes to device memory and is read back to reduce it to three
numbers per row-sample; on an H100 that traffic, not the arithmetic, bounds scoring.
This kernel keeps one block of rows in registers/shared memory from the latent sample to
the three sums

    sum (x - x')^2,   sum x'^2,   sum x x'        (x' = decoder(z_lat))

so the reconstruction never leaves the chip. Everything else (encoder, features from
the sums, estimation net, energy) stays in XLA, which fuses it well.

Only a plain dense decoder (:class:`vaegmm_jax.nets.dense.MLP`) qualifies: its
weights are zero-padded to the power-of-two sizes (>= 16) that Triton's matrix units
need. Padding is exact: padded hidden units feed zero weights, padded output columns
are masked out of the sums. Wide decoders get fewer rows per program, so that a block
stays within shared memory; one too wide for that takes the XLA path (:func:`supports`).

Shapes: B rows (a multiple of the row block after padding), L samples, d latent dims,
F features.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from vaegmm_jax.core.features import reconstruction_sums
from vaegmm_jax.nets.dense import ACTIVATIONS, MLP

#: rows per kernel program and Triton warps per program. On an H100 (KDD shape, L = 10,
#: benchmarks/fused_kernel.py --sweep) 128 rows x 8 warps was the fastest in bf16 (106M rows/s)
#: and near the best in fp32; 2 warps spilled registers (10x slower).
BLOCK_ROWS = 128
NUM_WARPS = 8
_MIN_DIM = 16  # Triton's tl.dot needs every matrix dimension >= 16
#: the largest (rows x padded width) tile, and padded weight matrix, one program holds: the
#: tuned KDD shape's input block (128 rows x 128 padded features, 64 KiB in float32). Wider
#: data get fewer rows per program: at 128 rows, Arrhythmia's 274 features (512 padded) asked
#: Triton for 256 KiB of shared memory, more than an H100 block may have (227 KiB), and the
#: kernel failed to launch with RESOURCE_EXHAUSTED.
MAX_TILE_ELEMENTS = 128 * 128


class DenseStack(NamedTuple):
    """A dense decoder as plain, padded arrays.

    Attributes:
      weights: per layer (in_padded, out_padded) matrices.
      biases: per layer (1, out_padded) rows.
      in_dim: d, the unpadded input width.
      out_dim: F, the unpadded output width.
      activation: name of the hidden activation (a key of ``nets.dense.ACTIVATIONS``).
      out_activation: name of the output activation.
    """

    weights: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    in_dim: int
    out_dim: int
    activation: str
    out_activation: str


def _padded(n: int) -> int:
    return max(_MIN_DIM, int(pl.next_power_of_2(n)))


def padded_widths(decoder_module: MLP, in_dim: int) -> tuple[int, ...]:
    """The padded widths (input, then each layer's output) the kernel computes with."""
    return tuple(_padded(w) for w in (in_dim, *decoder_module.features))


def block_rows_for(widths: Sequence[int]) -> int:
    """Rows per program for a decoder of these padded widths: BLOCK_ROWS, halved until the
    widest (rows x width) tile fits in MAX_TILE_ELEMENTS (at least _MIN_DIM rows)."""
    rows = BLOCK_ROWS
    while rows > _MIN_DIM and rows * max(widths) > MAX_TILE_ELEMENTS:
        rows //= 2
    return rows


def supports(decoder_module: Any, in_dim: int) -> bool:
    """True when this kernel can run ``decoder_module`` on ``in_dim``-wide latents: a dense MLP
    (dropout is off at eval) whose tiles fit on chip: every padded weight matrix, and a block of
    at least _MIN_DIM rows of the widest layer, within MAX_TILE_ELEMENTS. Wider decoders (e.g.
    flattened images) take the XLA path."""
    if not isinstance(decoder_module, MLP):
        return False
    widths = padded_widths(decoder_module, in_dim)
    weights_fit = all(a * b <= MAX_TILE_ELEMENTS for a, b in zip(widths[:-1], widths[1:]))
    return weights_fit and block_rows_for(widths) * max(widths) <= MAX_TILE_ELEMENTS


def dense_stack(decoder_module: MLP, decoder_params: Any, in_dim: int) -> DenseStack:
    """Zero-pads an MLP decoder's parameters ({'Dense_i': {'kernel', 'bias'}}) for the kernel."""
    n_layers = len(decoder_module.features)
    weights, biases = [], []
    width = in_dim
    for i in range(n_layers):
        layer = decoder_params[f"Dense_{i}"]
        w, b = layer["kernel"], layer["bias"]
        if w.shape[0] != width:
            raise ValueError(f"decoder layer {i} expects {w.shape[0]} inputs, the previous layer gives {width}")
        out = w.shape[1]
        weights.append(jnp.pad(w, ((0, _padded(width) - width), (0, _padded(out) - out))))
        biases.append(jnp.pad(b, (0, _padded(out) - out))[None, :])
        width = out
    return DenseStack(tuple(weights), tuple(biases), in_dim, width, decoder_module.activation,
                      decoder_module.out_activation)


def _sums_kernel(*refs, n_layers: int, activation: str, out_activation: str, out_dim: int, mask_output: bool):
    z_ref, x_ref = refs[0], refs[1]
    w_refs, b_refs = refs[2:2 + n_layers], refs[2 + n_layers:2 + 2 * n_layers]
    sq_diff_ref, sq_recon_ref, dot_ref = refs[2 + 2 * n_layers:]
    act, out_act = ACTIVATIONS[activation], ACTIVATIONS[out_activation]
    h = z_ref[...]
    for i in range(n_layers):
        w = w_refs[i][...]
        h = jnp.dot(h.astype(w.dtype), w, preferred_element_type=jnp.float32) + b_refs[i][...].astype(jnp.float32)
        h = act(h) if i < n_layers - 1 else out_act(h)
    x = x_ref[...].astype(jnp.float32)
    if mask_output:  # padded output columns are act(0), which need not be 0
        h = jnp.where(jax.lax.broadcasted_iota(jnp.int32, h.shape, 1) < out_dim, h, 0.0)
    diff = x - h
    sq_diff_ref[...] = jnp.sum(diff * diff, axis=1)
    sq_recon_ref[...] = jnp.sum(h * h, axis=1)
    dot_ref[...] = jnp.sum(x * h, axis=1)


def decoder_sums(
    stack: DenseStack, x: jax.Array, z_lat: jax.Array, *, block_rows: int | None = None, interpret: bool = False,
    num_warps: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The three reconstruction sums of every row and latent sample, decoded on chip.

    Args:
      stack: the padded decoder (:func:`dense_stack`); its dtype is the compute dtype
        (bf16 weights: bf16 matrix inputs, float32 accumulation and sums).
      x: (B, F) inputs (any float dtype; the sums are float32).
      z_lat: (L, B, d) latent samples.
      block_rows: rows per program (a power of two; default :func:`block_rows_for` the
        decoder's widths: BLOCK_ROWS unless the layers are wide).
      interpret: run the kernel in Pallas' interpreter (any backend; for tests).
      num_warps: Triton warps per program (default NUM_WARPS).

    Returns:
      (sq_diff, sq_recon, dot), each (L, B) float32: sum (x - x')^2, sum x'^2, sum x x'.
    """
    widths = (stack.weights[0].shape[0], *(w.shape[1] for w in stack.weights))
    block_rows = block_rows_for(widths) if block_rows is None else block_rows
    num_warps = NUM_WARPS if num_warps is None else num_warps
    n_samples, n_rows, in_dim = z_lat.shape
    if x.shape != (n_rows, stack.out_dim):
        raise ValueError(f"x has shape {x.shape}; expected ({n_rows}, {stack.out_dim})")
    if in_dim != stack.in_dim:
        raise ValueError(f"z_lat has {in_dim} latent dims; the decoder takes {stack.in_dim}")
    rows_padded = -(-n_rows // block_rows) * block_rows
    d_pad, f_pad = stack.weights[0].shape[0], stack.weights[-1].shape[1]
    z_p = jnp.pad(z_lat.astype(stack.weights[0].dtype), ((0, 0), (0, rows_padded - n_rows), (0, d_pad - in_dim)))
    x_p = jnp.pad(x, ((0, rows_padded - n_rows), (0, f_pad - stack.out_dim)))
    n_layers = len(stack.weights)
    kernel = functools.partial(
        _sums_kernel, n_layers=n_layers, activation=stack.activation, out_activation=stack.out_activation,
        out_dim=stack.out_dim, mask_output=f_pad != stack.out_dim and ACTIVATIONS[stack.out_activation](0.0) != 0.0,
    )

    def whole(a):  # weights: the same (whole) block for every program
        return pl.BlockSpec(a.shape, lambda l, i: (0, 0))

    # the sample index varies fastest, so the L programs of one row block reuse x from L2
    grid = (n_samples, rows_padded // block_rows)
    out_block = pl.BlockSpec((None, block_rows), lambda l, i: (l, i))
    out = jax.ShapeDtypeStruct((n_samples, rows_padded), jnp.float32)
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as pl_triton

        compiler_params = pl_triton.CompilerParams(num_warps=num_warps, num_stages=1)
    sums = pl.pallas_call(
        kernel,
        out_shape=(out, out, out),
        grid=grid,
        in_specs=[
            pl.BlockSpec((None, block_rows, d_pad), lambda l, i: (l, i, 0)),
            pl.BlockSpec((block_rows, f_pad), lambda l, i: (i, 0)),
            *[whole(w) for w in stack.weights],
            *[whole(b) for b in stack.biases],
        ],
        out_specs=(out_block, out_block, out_block),
        interpret=interpret,
        compiler_params=compiler_params,
        name="vaegmm_decoder_sums",
    )(z_p, x_p, *stack.weights, *stack.biases)
    return tuple(s[:, :n_rows] for s in sums)


def xla_decoder_sums(decoder: Any, decoder_params: Any, x: jax.Array, z_lat: jax.Array):
    """The same sums as :func:`decoder_sums` with plain XLA ops (reference and derivatives).

    Args:
      decoder: the :class:`~vaegmm_jax.nets.dense.MLP` module.
      decoder_params: its 'params' collection.
      x: (B, F) inputs.
      z_lat: (L, B, d) latent samples.

    Returns:
      (sq_diff, sq_recon, dot), each (L, B).
    """
    x_recon = jax.vmap(lambda z: decoder.apply({"params": decoder_params}, z))(z_lat)
    return reconstruction_sums(jnp.broadcast_to(x, x_recon.shape), x_recon)


def differentiable_decoder_sums(decoder: Any, x: jax.Array, z_lat: jax.Array, decoder_params: Any, *,
                                interpret: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`decoder_sums` of an MLP decoder straight from its Flax parameters, with derivatives.

    The values come from the kernel; derivatives (jax.grad / jax.jvp with respect to
    any of x, z_lat or the parameters) come from :func:`xla_decoder_sums`, since a
    Pallas kernel has no autodiff rule of its own.

    Args:
      decoder: the :class:`~vaegmm_jax.nets.dense.MLP` module.
      x: (B, F) inputs.
      z_lat: (L, B, d) latent samples.
      decoder_params: its 'params' collection.
      interpret: run the kernel in Pallas' interpreter (tests).

    Returns:
      (sq_diff, sq_recon, dot), each (L, B) float32.
    """
    @jax.custom_jvp
    def sums(params, x, z_lat):
        return decoder_sums(dense_stack(decoder, params, z_lat.shape[-1]), x, z_lat, interpret=interpret)

    @sums.defjvp
    def _(primals, tangents):
        return sums(*primals), jax.jvp(functools.partial(xla_decoder_sums, decoder), primals, tangents)[1]

    return sums(decoder_params, x, z_lat)


__all__: Sequence[str] = ("BLOCK_ROWS", "NUM_WARPS", "MAX_TILE_ELEMENTS", "DenseStack", "padded_widths",
                          "block_rows_for", "supports", "dense_stack", "decoder_sums",
                          "xla_decoder_sums", "differentiable_decoder_sums")
