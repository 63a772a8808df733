"""Nested array trees as a checkpoint (or a pickled estimator) stores them, and their
restoration against the tree a model expects.

Storage has no NamedTuples or tuples (Orbax writes the same): a tree's stored form is nested
dicts (a dict key or a NamedTuple field becomes a string key) and lists (a tuple or list
becomes a list), with NumPy arrays as leaves and ``None`` where the tree has an empty node
(an optax ``EmptyState()``, an empty dict). The tree's own structure comes back only from a
target: :func:`check_matches` compares a stored tree with the target, node for node, and
:func:`restore_like` / :func:`cast_like` give the target's structure back (NamedTuples
included). A stored tree that differs from the target in any node (another optimizer whose
state has as many arrays in another tree, another model) is refused, never restored by
position. Nothing here reads files or prints.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.io.files import CheckpointError

#: one step into a stored tree: ("key", name) into a dict (or a NamedTuple's field), or
#: ("index", i) into a list (or a tuple)
PathStep = tuple[str, Any]
_EMPTY = "empty"


def _is_empty_node(node: Any) -> bool:
    """None, an empty dict/list/tuple or an empty NamedTuple (optax's ``EmptyState()``)."""
    return node is None or (isinstance(node, (dict, list, tuple)) and len(node) == 0)


def _path_step(key: Any) -> PathStep:
    if isinstance(key, jax.tree_util.SequenceKey):
        return ("index", key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return ("index", key.key)
    if isinstance(key, jax.tree_util.DictKey):
        return ("key", str(key.key))
    if isinstance(key, jax.tree_util.GetAttrKey):
        return ("key", key.name)
    return ("key", str(key))


def _flat(tree: Any) -> tuple[list[tuple[tuple[PathStep, ...], Any]], Any]:
    """([(path, leaf or empty node)], treedef): a tree's leaves and empty nodes, in order."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_empty_node)
    return [(tuple(_path_step(k) for k in path), leaf) for path, leaf in pairs], treedef


def path_name(prefix: str, path: tuple[PathStep, ...]) -> str:
    """A stored array's name: ``prefix/key/0/key`` (as checkpoint errors print it)."""
    return "/".join([prefix] + [str(name) for _kind, name in path])


def _shape_of(leaf: Any) -> tuple[int, ...] | str:
    """A leaf's shape, or "empty" for an empty node."""
    return _EMPTY if _is_empty_node(leaf) else tuple(np.shape(leaf))


def _describe(leaf: Any) -> str:
    return "nothing" if _is_empty_node(leaf) else f"an array of shape {tuple(np.shape(leaf))}"


def check_matches(target: Any, stored: Any, prefix: str, *, where: str, expects: str) -> None:
    """Refuses a stored tree whose nodes or array shapes differ from ``target``'s.

    Args:
      target: the tree the model expects (``jax.ShapeDtypeStruct`` or array leaves).
      stored: the stored form (nested dicts and lists; leaves with a ``shape``: arrays, or
        Orbax's array metadata).
      prefix: the tree's name in messages, e.g. "params".
      where: where the stored tree is, for messages (a folder, "the pickled estimator").
      expects: what defines the target, for messages ("the model that its detector.json
        describes", "the given optimizer's state").

    Raises:
      CheckpointError: naming the first array or node that differs.
    """
    want = dict(_flat(target)[0])
    have = dict(_flat(stored)[0])
    for path, leaf in want.items():
        name = path_name(prefix, path)
        if path in have:
            got = have[path]
            if _shape_of(got) == _shape_of(leaf):
                continue
            if _is_empty_node(got) or _is_empty_node(leaf):
                raise CheckpointError(f"{where} holds {_describe(got)} at {name!r} where {expects} has "
                                      f"{_describe(leaf)}")
            raise CheckpointError(f"array {name!r} has shape {tuple(np.shape(got))} in {where} but {expects} "
                                  f"expects {tuple(np.shape(leaf))}")
        if any(p[: len(path)] == path for p in have):
            raise CheckpointError(f"{where} holds arrays under {name!r} where {expects} has {_describe(leaf)}")
        above = [p for p in have if path[: len(p)] == p]
        if above:
            raise CheckpointError(f"{where} holds {_describe(have[above[0]])} at {path_name(prefix, above[0])!r} "
                                  f"where {expects} has arrays under it")
        if _is_empty_node(leaf):
            raise CheckpointError(f"{where} has no entry {name!r} (an empty node in {expects})")
        raise CheckpointError(f"{where} has no array {name!r}: it was saved from a different model")
    extra = [path for path in have if path not in want]
    if extra:
        raise CheckpointError(f"{where} holds {_describe(have[extra[0]])} at {path_name(prefix, extra[0])!r} where "
                              f"{expects} has nothing ({len(extra)} stored entries it does not have)")


def drop_empty(tree: Any) -> Any:
    """Nested dicts without their empty entries (None, empty dicts, at any depth)."""
    if not isinstance(tree, dict):
        return tree
    kept = {key: drop_empty(value) for key, value in tree.items()}
    return {key: value for key, value in kept.items() if not _is_empty_node(value)}


def count_arrays(stored: Any) -> int:
    """The number of arrays (leaves that are not empty nodes) in a tree."""
    return sum(not _is_empty_node(leaf) for _path, leaf in _flat(stored)[0])


def cast_like(target: Any, tree: Any) -> Any:
    """``tree`` (already of ``target``'s structure) as jax arrays of ``target``'s dtypes on the
    default device; empty nodes are ``target``'s own."""
    target_leaves, treedef = _flat(target)
    leaves = [leaf if _is_empty_node(want) else jnp.asarray(leaf, dtype=getattr(want, "dtype", None))
              for (_path, want), (_p, leaf) in zip(target_leaves, _flat(tree)[0])]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def restore_like(target: Any, stored: Any, prefix: str, *, where: str, expects: str) -> Any:
    """The stored form of a tree given back in ``target``'s structure (NamedTuples included),
    as jax arrays of ``target``'s dtypes, after :func:`check_matches`."""
    check_matches(target, stored, prefix, where=where, expects=expects)
    have = {path: leaf for path, leaf in _flat(stored)[0]}
    target_leaves, treedef = _flat(target)
    leaves = [want if _is_empty_node(want) else jnp.asarray(have[path], dtype=getattr(want, "dtype", None))
              for path, want in target_leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def stored_form(tree: Any) -> Any:
    """A tree's stored form: nested dicts and lists of ``np.ndarray`` (see the module docstring).

    Example: ``(ScaleByAdamState(count, mu={'w': w}, nu={'w': v}), EmptyState())`` ->
    ``[{'count': count, 'mu': {'w': w}, 'nu': {'w': v}}, None]``.
    """
    if _is_empty_node(tree):
        return None
    if isinstance(tree, (np.ndarray, np.generic, jax.Array, float, int, bool)):
        return np.asarray(tree)
    root: dict[PathStep, Any] = {}
    for path, leaf in _flat(tree)[0]:
        node = root
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = None if _is_empty_node(leaf) else np.asarray(leaf)
    return _lists_and_dicts(root)


def _lists_and_dicts(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if all(kind == "index" for kind, _name in node):
        return [_lists_and_dicts(node[("index", i)]) for i in range(len(node))]
    return {name: _lists_and_dicts(child) for (_kind, name), child in node.items()}


def nest_flat_names(flat: Mapping[str, np.ndarray], prefix: str) -> Any:
    """The nested dicts of the arrays named ``prefix/a/b`` in a flat {name: array} mapping (the
    way format 1 checkpoints and estimators pickled before the nested format stored trees).

    ``{'gmm/phi': a, 'recon_scale/': b}`` with prefix "gmm" -> ``{'phi': a}``; a name with
    nothing after ``prefix/`` is the array itself (prefix "recon_scale" -> ``b``).
    """
    out: dict[str, Any] = {}
    for name, value in flat.items():
        head, _, rest = name.partition("/")
        if head != prefix:
            continue
        if not rest:
            return value
        node = out
        parts = rest.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


__all__ = ["cast_like", "check_matches", "count_arrays", "drop_empty", "nest_flat_names", "path_name", "restore_like",
           "stored_form"]
