"""Fixed-size, padded chunks over any row source, for scoring and statistics.

Every chunk has the same shape (the last is padded, its padding rows flagged by
weight 0), so a jitted per-chunk function compiles once.

Host sources (NumPy arrays, memmaps, iterables of blocks) go through a pipeline:
for an accelerator, a background thread cuts the chunks and hands their transfers to a
small thread pool, several chunks ahead of the computation (on a CPU the copies run
inline: they would compete with the computation for the same cores); each result starts its copy back
as soon as it is computed (``copy_to_host_async``) and is collected a few chunks
later, so cutting, transfer, compute and copy-back of different chunks overlap and
no pass over the whole array runs on the host. A score program may check its own
chunk for NaN/inf on the device (:func:`map_chunks` ``checked=True``): the error
then names the first bad row, and no result is returned.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, NamedTuple

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
        release_pages(view)
        yield block


def release_pages(view: np.memmap) -> None:
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


#: chunks a host pipeline keeps ahead of the computation (cut and transferring), and results
#: it leaves in flight before reading them back
PIPELINE_DEPTH = 4
#: threads that transfer chunks to the device: several copies in flight reach more of the
#: link than one (an H200 took a 3.84 GB array at 9.3 GB/s in one piece, 32.7 GB/s in 32)
TRANSFER_THREADS = 4


class NonFiniteInputError(ValueError):
    """A row to score holds NaN or inf (found on the device, inside the score program)."""


class _Failed(NamedTuple):
    error: BaseException


_DONE = object()


def _host_chunks_on_device(source, chunk_size: int, dtype, sharding, depth: int,
                           threads: int) -> Iterator[tuple[jax.Array, Chunk]]:
    """(chunk on the device, chunk) in order: cut by a background thread, transferred by a
    pool of ``threads``, at most ``depth`` chunks ahead of the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    transfers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vaegmm-transfer")

    def put(x):
        return jax.device_put(x) if sharding is None else jax.device_put(x, sharding)

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for chunk in iter_chunks(source, chunk_size, dtype):
                if not offer((transfers.submit(put, chunk.x), chunk)):
                    return
            offer(_DONE)
        except BaseException as err:  # a bad block of an iterable: raised in the consumer
            offer(_Failed(err))

    producer = threading.Thread(target=produce, name="vaegmm-chunks", daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            future, chunk = item
            yield future.result(), chunk
    finally:
        stop.set()
        producer.join()
        transfers.shutdown(wait=True, cancel_futures=True)


def _targets_cpu(sharding) -> bool:
    devices = sharding.device_set if sharding is not None else {jax.devices()[0]}
    return all(d.platform == "cpu" for d in devices)


def _chunks_on_device(source, chunk_size: int, dtype, sharding, depth: int,
                      threads: int | None) -> Iterator[tuple[jax.Array, Chunk]]:
    if threads is None:
        # on a CPU the "transfer" is a copy on the same cores that compute: threads only add
        # hand-offs (measured on a 2-core CPU: benchmarks/host_pipeline.py)
        threads = 0 if _targets_cpu(sharding) else TRANSFER_THREADS
    if isinstance(source, jax.Array):  # sliced on the device: nothing to transfer
        for chunk in _device_chunks(source, chunk_size):
            yield (chunk.x if sharding is None else jax.device_put(chunk.x, sharding)), chunk
    elif threads == 0:
        for chunk in iter_chunks(source, chunk_size, dtype):
            # a NumPy chunk goes to the jitted program as it is: on a CPU that is faster than a
            # device_put first (1.6x more rows/s for a trivial program, 2-core CPU)
            yield (chunk.x if sharding is None else jax.device_put(chunk.x, sharding)), chunk
    else:
        yield from _host_chunks_on_device(source, chunk_size, dtype, sharding, depth, threads)


def map_chunks(fn: Callable, source, chunk_size: int, dtype=np.float32, sharding=None, row_offset: int = 0, *,
               checked: bool = False, name: str = "X", depth: int = PIPELINE_DEPTH,
               transfer_threads: int | None = None) -> np.ndarray:
    """Applies ``fn(x_chunk (C, *S), offset ()) -> (C, ...)`` to every chunk; returns the rows, unpadded.

    ``fn`` should be jitted; all calls share one shape, so it compiles once. Host sources
    (numpy, memmap, iterables) go through the pipeline of the module docstring; a ``jax.Array``
    source is sliced on the device without a round trip.

    Args:
      fn: the per-chunk function; with ``checked`` it returns ``(out, bad)`` where ``bad`` is
        :func:`vaegmm_jax.engine.validation.nonfinite_rows` of the chunk ((C,) bool).
      source: rows (see :func:`iter_chunks`) or a jax.Array.
      chunk_size: C.
      dtype: host dtype of chunks.
      sharding: optional sharding of a chunk's rows over several devices.
      row_offset: global index of the source's first row (multi-host scoring).
      checked: raise :class:`NonFiniteInputError` naming the first row with NaN or inf (its
        global index), and return nothing, if ``fn`` reports one.
      name: how the rows are called in that error.
      depth: chunks in flight ahead of, and behind, the computation.
      transfer_threads: threads transferring host chunks (None: :data:`TRANSFER_THREADS` for an
        accelerator, 0 (inline) for CPU devices).

    Returns:
      (N, ...) the outputs of the real rows, in order, on the host.
    """
    in_flight: deque = deque()
    results: list[np.ndarray] = []

    def collect(count: int) -> None:
        # the oldest `count` chunks, read back in one batched device_get (their copies started
        # when they were dispatched, so this rarely waits)
        batch = [in_flight.popleft() for _ in range(count)]
        outs, bads = jax.device_get(([out for out, _, _ in batch], [bad for _, bad, _ in batch]))
        for (_, _, chunk), out, bad in zip(batch, outs, bads):
            if bad is not None and bad[: chunk.n_valid].any():
                first = int(np.argmax(bad[: chunk.n_valid]))
                kind = "NaN" if np.isnan(np.asarray(chunk.x[first])).any() else "inf"
                raise NonFiniteInputError(f"{name} contains {kind} values (first bad row {row_offset + chunk.offset + first})")
            results.append(np.asarray(out)[: chunk.n_valid])

    for x, chunk in _chunks_on_device(source, chunk_size, dtype, sharding, depth, transfer_threads):
        out = fn(x, np.int32(row_offset + chunk.offset))
        out, bad = out if checked else (out, None)
        out.copy_to_host_async()
        if bad is not None:
            bad.copy_to_host_async()
        in_flight.append((out, bad, chunk))
        if len(in_flight) >= 2 * depth:
            collect(depth)
    collect(len(in_flight))
    if not results:
        return np.zeros((0,), np.float32)
    return np.concatenate(results, axis=0)


def effective_chunk_size(n_rows: int | None, requested: int) -> int:
    """The chunk size to use: ``requested``, or the next power of two >= n_rows if smaller.

    Rounding small inputs to powers of two bounds the number of distinct shapes
    (and so of compilations) while never padding more than 2x.
    """
    if n_rows is None or n_rows >= requested:
        return requested
    return max(8, 1 << max(0, (n_rows - 1).bit_length()))


__all__ = ["Chunk", "iter_chunks", "map_chunks", "effective_chunk_size", "release_pages", "NonFiniteInputError",
           "PIPELINE_DEPTH", "TRANSFER_THREADS"]
