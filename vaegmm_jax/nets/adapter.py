"""One pure interface over Flax Linen and Flax NNX modules.

The library's maths only ever sees a :class:`Network`: a pair of pure functions
``init(key, x) -> params`` and ``apply(params, x, train, key) -> y``. Users may
hand us a Linen module, an NNX module, or a ready-made :class:`Network`.

Modules whose ``__call__`` accepts a ``train`` (or ``deterministic``) keyword get
it; dropout in training draws from the ``key`` given to ``apply``.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import jax
from flax import linen as nn

if TYPE_CHECKING:
    from flax import nnx


@dataclass(frozen=True, eq=False)
class Network:
    """A network as two pure functions.

    Attributes:
      init: (key, x (B, ...)) -> params pytree.
      apply: (params, x (B, ...), train: bool, key: PRNG key or None) -> (B, ...) outputs.
      kind: 'linen', 'nnx' or 'custom' (informational).
      module: the wrapped module, if any (kept so a saved config can describe it).
    """

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[..., jax.Array]
    kind: str = "custom"
    module: Any = None


def _call_flag(fn) -> str | None:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    for name in ("train", "deterministic", "training"):
        if name in params:
            return name
    return None


def _flag_kwargs(flag: str | None, train: bool) -> dict:
    if flag is None:
        return {}
    return {flag: (not train) if flag == "deterministic" else train}


def from_linen(module: nn.Module) -> Network:
    """Wraps a Linen module; its 'params' collection is the trainable state."""
    flag = _call_flag(module.__call__)

    def init(key, x):
        variables = module.init({"params": key, "dropout": key}, x, **_flag_kwargs(flag, False))
        return variables["params"]

    def apply(params, x, train=False, key=None):
        rngs = {"dropout": key} if (train and key is not None) else None
        return module.apply({"params": params}, x, rngs=rngs, **_flag_kwargs(flag, train))

    return Network(init=init, apply=apply, kind="linen", module=module)


def from_nnx(module: "nnx.Module") -> Network:
    """Wraps an (already initialised) NNX module.

    The module's ``nnx.Param`` leaves become the params pytree; everything else
    (RNG streams, constants) is held fixed. Train and eval graphs are split once so
    dropout behaves as in ``module.train()`` / ``module.eval()``; ``init`` returns
    the module's own parameters (NNX initialises at construction, with the user's
    rngs), so the detector seed does not re-draw them.
    """
    from flax import nnx  # imported when used: it adds 0.3 s to every start of the library and the CLI

    flag = _call_flag(module.__call__)
    module.train()
    graph_train, params, rng_keys, rest = nnx.split(module, nnx.Param, nnx.RngKey, ...)
    module.eval()
    graph_eval = nnx.split(module, nnx.Param, nnx.RngKey, ...)[0]
    key_leaves, key_def = jax.tree_util.tree_flatten(rng_keys)

    def init(key, x):
        del key, x
        return params

    def apply(params, x, train=False, key=None):
        keys = rng_keys
        if train and key is not None and key_leaves:
            # Fresh RNG streams from the step key (NNX's own streams are state that a
            # pure function cannot advance).
            typed = key if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
            keys = jax.tree_util.tree_unflatten(key_def, [jax.random.fold_in(typed, i) for i in range(len(key_leaves))])
        m = nnx.merge(graph_train if train else graph_eval, params, keys, rest, copy=True)
        return m(x, **_flag_kwargs(flag, train))

    return Network(init=init, apply=apply, kind="nnx", module=module)


def as_network(obj: Any, name: str = "network") -> Network:
    """Converts a Linen module, an NNX module or a Network into a Network."""
    if isinstance(obj, Network):
        return obj
    if isinstance(obj, nn.Module):
        return from_linen(obj)
    nnx_module = getattr(sys.modules.get("flax.nnx"), "Module", None)  # an NNX module means flax.nnx is loaded
    if nnx_module is not None and isinstance(obj, nnx_module):
        return from_nnx(obj)
    raise TypeError(
        f"{name} must be a flax.linen.Module, a flax.nnx.Module or a vaegmm_jax.nets.Network, "
        f"got {type(obj).__name__}"
    )
def with_output_shape(module, shape: tuple[int, ...]) -> Network:
    """A flat network (B, F) -> (B, F) whose output is reshaped to (B, *shape) (default nets on images)."""
    net = as_network(module)

    def apply(params, z, train=False, key=None):
        out = net.apply(params, z, train, key)
        return out.reshape((out.shape[0],) + shape)

    return Network(init=net.init, apply=apply, kind=net.kind, module=module)


