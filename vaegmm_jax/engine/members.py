"""The member axis: M independently seeded models computed as one program.

Every detector is an ensemble of M >= 1 members. Member ``i`` is exactly the model a
single detector with seed ``member_seeds[i]`` would train: its keys are
``fold_in(PRNGKey(member_seeds[i]), stream)`` for the streams of
:mod:`vaegmm_jax.detectors.base` (0 init, 1 training, 2 mixture noise, 3 scoring noise).

A member axis exists only when M > 1: then every leaf of the stacked state (parameters,
optimizer state, mixture, calibration) has a leading axis of M and the programs are
``jax.vmap``-ed over it (:func:`over_members`). With M = 1 nothing is stacked and the
programs are the single model's own, so a one-member detector computes bit for bit
what it always did.

Devices: the rows of each minibatch are split over the devices (data parallelism) when
M = 1; with M > 1 the member axis is split instead (:class:`MemberLayout`): each device
trains its own members with no communication, so member ``i`` equals member ``i`` of a
one-device run to float rounding. With D devices each holds ``ceil(M / D)`` members; the
fewest devices that achieve this are used and, when they do not divide M, the member axis
is padded with copies of the last member (computed, then dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBER_AXIS = "members"


def member_seeds(seed: int | Sequence[int], n_members: int | None = None) -> tuple[int, ...]:
    """The members' seeds: ``seed, seed + 1, ..., seed + M - 1`` for an int seed, or the given seeds.

    Args:
      seed: one int (the first member's seed) or a sequence of M ints.
      n_members: M (default 1 for an int seed, ``len(seed)`` for a sequence).
    """
    if n_members is not None and (isinstance(n_members, bool) or not isinstance(n_members, (int, np.integer))
                                  or n_members < 1):
        raise ValueError(f"n_members must be a positive integer, got {n_members!r}")
    if _is_int(seed):
        n = 1 if n_members is None else int(n_members)
        return tuple(int(seed) + i for i in range(n))
    if isinstance(seed, (str, bytes)) or not hasattr(seed, "__iter__") or not all(_is_int(s) for s in seed):
        raise ValueError(f"seed must be an integer or a sequence of integers (one per member), got {seed!r}")
    seeds = tuple(int(s) for s in seed)
    if not seeds:
        raise ValueError("seed is an empty sequence: give one int or at least one seed per member")
    if n_members is not None and int(n_members) != len(seeds):
        raise ValueError(f"n_members={n_members} but {len(seeds)} seeds were given")
    return seeds


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def stream_key(seed: int, stream: int) -> jax.Array:
    """The key of one model with ``seed`` for ``stream`` (0 init, 1 train, 2 stats, 3 score)."""
    return jax.random.fold_in(jax.random.PRNGKey(int(seed)), stream)


def stream_keys(seeds: Sequence[int], stream: int) -> jax.Array:
    """(M, 2) keys for M > 1 members, or the one member's (2,) key."""
    if len(seeds) == 1:
        return stream_key(seeds[0], stream)
    return jnp.stack([stream_key(s, stream) for s in seeds])


def over_members(fn: Callable, in_axes: Sequence[Any], n_members: int, group_size: int | None = None) -> Callable:
    """``fn`` over M members: the function itself for M = 1, else ``jax.vmap(fn, in_axes)``.

    ``group_size=k`` runs the members in groups of k one after the other (``lax.map``) inside
    the same program: vmapping a convolution over its kernels makes XLA's CPU backend run a
    grouped convolution several times slower per member than separate ones.

    Args:
      fn: the per-member function.
      in_axes: 0 for arguments with a member axis, None for shared ones (pytrees allowed).
      n_members: M.
      group_size: members per group, or None to vmap all at once.
    """
    in_axes = tuple(in_axes)
    if n_members == 1:
        return fn
    if group_size is None or group_size >= n_members:
        return jax.vmap(fn, in_axes=in_axes)

    def mapped(*args):
        # one axis (0 or None) per leaf of the arguments, from the in_axes prefixes
        def spread(ax, sub):
            if ax not in (0, None):
                raise ValueError(f"group_size needs in_axes of 0 or None, got {ax!r}")
            return jax.tree.map(lambda _: -1 if ax is None else 0, sub)

        axes = jax.tree.leaves(tuple(jax.tree_util.tree_map(spread, ax, arg, is_leaf=lambda v: v is None)
                                     for ax, arg in zip(in_axes, args)))
        leaves, treedef = jax.tree.flatten(args)
        member_leaves = [leaf for leaf, ax in zip(leaves, axes) if ax == 0]

        def one(per_member):
            it = iter(per_member)
            return fn(*jax.tree.unflatten(treedef, [next(it) if ax == 0 else leaf for leaf, ax in zip(leaves, axes)]))

        return jax.lax.map(one, member_leaves, batch_size=group_size)

    return mapped


def split_devices(n_members: int, n_devices: int) -> tuple[int, int]:
    """(devices used, padding members) for M members over at most D devices.

    Each device gets ceil(M / D) members; of the device counts that achieve this the
    smallest is taken, which also minimises the padding:
    M=4, D=4 -> (4, 0); M=3, D=4 -> (3, 0); M=5, D=4 -> (3, 1); M=7, D=4 -> (4, 1).
    """
    per_device = -(-n_members // max(n_devices, 1))
    used = -(-n_members // per_device)
    return used, used * per_device - n_members


@dataclass(frozen=True)
class MemberLayout:
    """Where (M_pad, ...) stacked member arrays live: ``mesh`` over the devices used,
    ``n_pad`` copies of the last member appended to the M real ones."""

    mesh: Mesh
    n_members: int
    n_pad: int

    @classmethod
    def make(cls, n_members: int, devices: Sequence[jax.Device]) -> "MemberLayout":
        used, n_pad = split_devices(n_members, len(devices))
        return cls(Mesh(np.asarray(list(devices)[:used]), (MEMBER_AXIS,)), n_members, n_pad)

    @property
    def n_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def members(self) -> NamedSharding:
        """Leading (member) axis split over the mesh."""
        return NamedSharding(self.mesh, PartitionSpec(MEMBER_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def put(self, tree):
        """Every (M, ...) leaf padded to (M_pad, ...) with the last member and split by members."""
        if self.n_pad:
            idx = np.minimum(np.arange(self.n_members + self.n_pad), self.n_members - 1)
            take = lambda a: jnp.take(a, idx, axis=0) if isinstance(a, jax.Array) else np.asarray(a)[idx]  # noqa: E731
            tree = jax.tree.map(take, tree)
        return jax.device_put(tree, self.members)

    def unpad(self, tree):
        """(M_pad, ...) -> (M, ...) as ordinary (uncommitted) arrays of the default device."""
        n = self.n_members
        return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[:n]), tree)


def stack(trees: Sequence[Any]) -> Any:
    """M pytrees of the same structure -> one pytree of (M, ...) NumPy leaves (the tree itself for M = 1)."""
    if len(trees) == 1:
        return trees[0]
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(a) for a in leaves]), *trees)


def take_member(tree: Any, i: int, n_members: int) -> Any:
    """Member ``i`` of a stacked pytree (the tree itself when M = 1)."""
    if n_members == 1:
        if i != 0:
            raise IndexError(f"member {i} of a one-member detector")
        return tree
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[i]), tree)


def per_member(values, n_members: int) -> np.ndarray:
    """A per-member host value as an (M, ...) array (adds the axis M = 1 programs do not have)."""
    values = np.asarray(values)
    return values[None] if n_members == 1 else values


#: the independent PRNG streams of a member's seed: parameter initialisation, training
#: (shuffling, sampling), the after-fit statistics (the mixture) and the scoring noise
STREAM_INIT, STREAM_TRAIN, STREAM_STATS, STREAM_SCORE = 0, 1, 2, 3


def stacked_shape(one: jax.ShapeDtypeStruct, n_members: int) -> jax.ShapeDtypeStruct:
    """The shape of M members' stacked array given one member's (unchanged for M = 1)."""
    if n_members == 1:
        return one
    return jax.ShapeDtypeStruct((n_members,) + tuple(one.shape), one.dtype)


__all__ = [
    "MEMBER_AXIS", "MemberLayout", "member_seeds", "over_members", "per_member", "split_devices", "stack",
    "stream_key", "stream_keys", "take_member",
]
