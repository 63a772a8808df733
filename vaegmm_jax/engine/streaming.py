"""Fixed-size, padded chunks over any row source, for scoring and statistics.

Every chunk has the same shape (the last is padded, its padding rows flagged by
weight 0), so a jitted per-chunk function compiles once. JAX dispatch is
asynchronous: the next chunk is transferred while the previous one computes, and
results are copied back to the host only after all chunks are dispatched
(``copy_to_host_async`` starts each copy as soon as it is ready).
"""

from __future__ import annotations

import mmap
from typing import Iterable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Chunk(NamedTuple):
    """One padded chunk.

    Attributes:
      x: (C, *S) rows (numpy, or a jax.Array when the source is one) (padding rows repeat the last real row, so they stay finite).
      weights: (C,) float32, 1 for real rows and 0 for padding.
      offset: global index of the chunk's first row.
      n_valid: number of real rows.
    """

    x: np.ndarray
    weights: np.ndarray
    offset: int
    n_valid: int


def _pad(block: np.ndarray, chunk_size: int) -> np.ndarray:
    n = block.shape[0]
    if n == chunk_size:
        return block
    pad = np.repeat(block[-1:], chunk_size - n, axis=0)
    return np.concatenate([block, pad], axis=0)


def iter_chunks(source, chunk_size: int, dtype=np.float32) -> Iterator[Chunk]:
    """Yields padded chunks of ``chunk_size`` rows.

    Args:
      source: an array-like with rows on axis 0 (numpy array, ``np.memmap``,
        jax array), or an iterable of such blocks (each of any length; they are
        re-cut into fixed chunks without ever holding more than one chunk plus
        one block in memory).
      chunk_size: C.
      dtype: host dtype of the chunks.
    """
    if isinstance(source, jax.Array):  # slice on the device: no round trip through the host
        yield from _device_chunks(source, chunk_size)
        return
    if isinstance(source, np.memmap):
        blocks: Iterable = _memmap_blocks(source, chunk_size, dtype)
    elif hasattr(source, "shape") and hasattr(source, "__getitem__"):
        blocks = (source[i : i + chunk_size] for i in range(0, source.shape[0], chunk_size))
    else:
        blocks = source
    offset = 0
    pending: list[np.ndarray] = []
    pending_rows = 0
    for block in blocks:
        block = np.asarray(block, dtype=dtype)
        if block.shape[0] == 0:
            continue
        pending.append(block)
        pending_rows += block.shape[0]
        while pending_rows >= chunk_size:
            joined = np.concatenate(pending, axis=0) if len(pending) > 1 else pending[0]
            head, rest = joined[:chunk_size], joined[chunk_size:]
            yield Chunk(head, np.ones((chunk_size,), np.float32), offset, chunk_size)
            offset += chunk_size
            pending = [rest] if rest.shape[0] else []
            pending_rows = rest.shape[0]
    if pending_rows:
        joined = np.concatenate(pending, axis=0) if len(pending) > 1 else pending[0]
        weights = np.zeros((chunk_size,), np.float32)
        weights[:pending_rows] = 1.0
        yield Chunk(_pad(joined, chunk_size), weights, offset, pending_rows)


def _memmap_blocks(source: np.memmap, chunk_size: int, dtype) -> Iterator[np.ndarray]:
    """Copies a memmap out block by block and drops each block's pages afterwards.

    Pages of a mapped file that have been read stay resident and count towards the
    process's memory; releasing them keeps host memory bounded by the chunk size
    however large the file.
    """
    for start in range(0, source.shape[0], chunk_size):
        view = source[start : start + chunk_size]
        block = np.array(view, dtype=dtype, copy=True)
        _release_pages(view)
        yield block


def _release_pages(view: np.memmap) -> None:
    """Best effort madvise(MADV_DONTNEED) on the pages behind ``view`` (no-op where unsupported)."""
    m = getattr(view, "_mmap", None)
    if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        base = np.frombuffer(m, dtype=np.uint8).ctypes.data
        start = view.ctypes.data - base
        page = mmap.PAGESIZE
        first = (start // page) * page
        end = start + view.nbytes
        length = ((end - first) // page) * page  # only whole pages inside the view's range
        if length > 0:
            m.madvise(mmap.MADV_DONTNEED, first, length)
    except (ValueError, OSError, BufferError):
        pass


def _device_chunks(source: jax.Array, chunk_size: int) -> Iterator[Chunk]:
    n = source.shape[0]
    for start in range(0, n, chunk_size):
        block = source[start : start + chunk_size]
        n_valid = block.shape[0]
        if n_valid < chunk_size:
            pad = jnp.broadcast_to(block[-1:], (chunk_size - n_valid,) + block.shape[1:])
            block = jnp.concatenate([block, pad], axis=0)
        weights = np.zeros((chunk_size,), np.float32)
        weights[:n_valid] = 1.0
        yield Chunk(block, weights, start, n_valid)


def map_chunks(fn, source, chunk_size: int, dtype=np.float32, sharding=None, row_offset: int = 0) -> np.ndarray:
    """Applies ``fn(x_chunk (C, *S), offset ()) -> (C, ...)`` to every chunk; returns the rows, unpadded.

    ``fn`` should be jitted; all calls share one shape, so it compiles once. Host
    sources (numpy, memmap, iterables) are cut on the host and transferred chunk
    by chunk (at most one chunk per device in flight beyond the results); a
    ``jax.Array`` source is sliced on the device without a round trip.

    Args:
      fn: the per-chunk function.
      source: rows (see :func:`iter_chunks`) or a jax.Array.
      chunk_size: C.
      dtype: host dtype of chunks.
      sharding: optional sharding of a chunk's rows over several devices.
      row_offset: global index of the source's first row (multi-host scoring).
    """
    pending = []
    for chunk in iter_chunks(source, chunk_size, dtype):
        x = chunk.x if sharding is None else jax.device_put(chunk.x, sharding)
        out = fn(x, np.int32(row_offset + chunk.offset))
        out.copy_to_host_async()
        pending.append((out, chunk.n_valid))
    if not pending:
        return np.zeros((0,), np.float32)
    return np.concatenate([np.asarray(out)[:n] for out, n in pending], axis=0)


def effective_chunk_size(n_rows: int | None, requested: int) -> int:
    """The chunk size to use: ``requested``, or the next power of two >= n_rows if smaller.

    Rounding small inputs to powers of two bounds the number of distinct shapes
    (and so of compilations) while never padding more than 2x.
    """
    if n_rows is None or n_rows >= requested:
        return requested
    return max(8, 1 << max(0, (n_rows - 1).bit_length()))
