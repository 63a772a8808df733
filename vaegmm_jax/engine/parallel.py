"""Data parallelism with ``jax.sharding``: over the local devices, or over the devices
of several processes (``jax.distributed``) for training.

Rows are split over a 1-D mesh axis ``"data"``; parameters and the (small)
training set are replicated. Because every per-batch reduction in the model is a
plain sum over rows (losses, gradients and the GMM sufficient statistics), XLA's
SPMD partitioner turns them into all-reduces: the statistics are *summed* across
devices, never averaged per device, so results equal the single-device ones up to
float summation order.

Several hosts: start each process with ``jax.distributed.initialize(...)``.

* Scoring: each host scores its own rows on its local devices, passing the global
  index of its first row (``row_offset``) so every row draws the same latent noise
  as in a single-process run.
* Training (opt-in): pass ``devices=jax.devices()`` (or set ``det.devices``) (the devices of all
  processes) in every process and call ``fit`` with the SAME full training set X in
  every process. The mesh then spans all processes (:func:`global_mesh`); each
  process places its own replicated copies of X and of the train state
  (:func:`put`, no communication), each minibatch's rows are split over all
  devices and XLA all-reduces gradients across processes. Afterwards the fitted
  state is turned back into ordinary per-process arrays (:func:`to_local`), so
  scoring, the mixture fit and saving run on each process's own devices, as
  after a single-process fit. Results equal a single process with the same total
  number of devices.

See README "Many devices and hosts".
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

DATA_AXIS = "data"


def process_devices(devices: Sequence[jax.Device] | None = None) -> list[jax.Device]:
    """This process's devices among ``devices`` (default: all local devices), in their order."""
    if devices is None:
        return jax.local_devices()
    me = jax.process_index()
    return [d for d in devices if d.process_index == me]


def spans_processes(devices: Sequence[jax.Device] | None) -> bool:
    """True when ``devices`` belong to more than one process (multi-process training)."""
    return devices is not None and len({d.process_index for d in devices}) > 1


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over this process's devices among ``devices`` (default: all local
    devices), or None for one device. Devices of other processes are left out, so a
    device list spanning several processes gives each process its own share."""
    devices = process_devices(devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def global_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over all of ``devices``, whichever process they belong to (default:
    all local devices), or None for one device. Equals :func:`local_mesh` in one process."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def mesh_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def row_sharding(mesh: Mesh | None):
    """Sharding that splits axis 0 (rows) over the mesh; None for one device."""
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh | None):
    return None if mesh is None else NamedSharding(mesh, PartitionSpec())


def local_replicated(devices: Sequence[jax.Device] | None = None):
    """Sharding that replicates over this process's devices among ``devices`` (a
    single-device sharding for one; None when this process has none of them)."""
    mesh = local_mesh(devices)
    if mesh is not None:
        return replicated(mesh)
    mine = process_devices(devices)
    return SingleDeviceSharding(mine[0]) if mine else None


def put(x, sharding):
    """device_put onto a sharding, or onto the default device when sharding is None (an
    array already committed to a device stays there: ``jax.device_put(x)`` does not move it).

    A sharding over devices of several processes needs the same ``x`` in every
    process: each process fills its own devices from its copy (no communication).
    """
    if sharding is None:
        return jax.device_put(x)
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    return jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index])


def to_local(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
    """This process's copy of the arrays in ``tree`` that span several processes.

    A replicated global array becomes an ordinary array replicated over this
    process's devices among ``devices`` (its own shards, not copied); one that is not
    replicated is gathered from all processes (a collective: every process must
    call this in the same order). Fully addressable leaves are returned unchanged.
    """
    sharding = None

    def one(a):
        nonlocal sharding
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return a
        if sharding is None:
            sharding = local_replicated(devices)
        if not a.is_fully_replicated:
            from jax.experimental import multihost_utils

            return put(np.asarray(multihost_utils.process_allgather(a, tiled=True)), sharding)
        shards = [s.data for s in a.addressable_shards]
        if sharding is not None and {s.device for s in a.addressable_shards} == set(sharding.device_set):
            return jax.make_array_from_single_device_arrays(a.shape, sharding, shards)
        return put(np.asarray(shards[0]), sharding)

    return jax.tree.map(one, tree)


def check_same_in_all_processes(x: np.ndarray, name: str = "X") -> None:
    """Raises ValueError unless every process passed the same ``x`` (N, *S).

    Compares the shape and a checksum of up to 1024 evenly spaced rows (cheap for
    large data sets; catches a per-process shard passed by mistake). A collective
    over all processes: every process must call it.
    """
    from jax.experimental import multihost_utils

    rows = np.unique(np.linspace(0, x.shape[0] - 1, num=min(x.shape[0], 1024)).astype(np.int64))
    digest = zlib.crc32(np.ascontiguousarray(x[rows]).tobytes())
    # uint32 parts: the gather runs without 64-bit types
    fingerprint = np.asarray([x.ndim, *x.shape, digest], np.uint64)
    parts = np.concatenate([fingerprint & 0xFFFFFFFF, fingerprint >> 32]).astype(np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(parts)).reshape(-1, parts.size)
    if not (gathered == parts).all():
        raise ValueError(
            f"training across processes needs the same full {name} in every process, but process "
            f"{jax.process_index()}'s {name} (shape {x.shape}) differs from another process's"
        )


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def check_devices(devices) -> tuple[jax.Device, ...] | None:
    """A ``devices`` setting: None (all local devices) or a non-empty tuple of distinct jax Devices."""
    if devices is None:
        return None
    devices = tuple(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"devices must be None or a non-empty sequence of jax Devices (e.g. jax.devices()[:2]), "
                        f"got {devices!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices lists a device twice: {devices!r}")
    return devices


def describe_devices(devices: Sequence[jax.Device]) -> dict:
    """{'platform': ..., 'ids': [...]}: a ``devices`` setting as JSON (for a checkpoint)."""
    return {"platform": devices[0].platform, "ids": [int(d.id) for d in devices]}


def find_devices(description: dict | None) -> tuple[jax.Device, ...] | None:
    """The devices :func:`describe_devices` described, or None (the default: all local devices)
    when there is no description or this machine lacks any of them (a checkpoint moved from an
    8-GPU machine to a laptop scores on the laptop's devices)."""
    if not description:
        return None
    try:
        by_id = {d.id: d for d in jax.devices(description["platform"])}
    except RuntimeError:  # no such platform here
        return None
    found = [by_id.get(i) for i in description["ids"]]
    return None if any(d is None for d in found) else tuple(found)
