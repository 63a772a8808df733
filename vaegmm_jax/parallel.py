"""Data parallelism over the local devices with ``jax.sharding``.

Rows are split over a 1-D mesh axis ``"data"``; parameters and the (small)
training set are replicated. Because every per-batch reduction in the model is a
plain sum over rows (losses, gradients and the GMM sufficient statistics), XLA's
SPMD partitioner turns them into all-reduces: the statistics are *summed* across
devices, never averaged per device, so results equal the single-device ones up to
float summation order.

Several hosts: start each process with ``jax.distributed.initialize(...)``; each
host then scores its own rows on its local devices, passing the global index of
its first row (``row_offset``) so every row draws the same latent noise as in a
single-process run. See README "Many devices and hosts".
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh over ``devices`` (default: all local devices), or None for one device."""
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


def put(x, sharding):
    """device_put onto a sharding, or onto the default device when sharding is None."""
    return jax.device_put(x) if sharding is None else jax.device_put(x, sharding)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
