"""Saving and loading detectors: Orbax for arrays, JSON for everything else.

Layout of a saved detector folder::

    path/
      detector.json    format version, detector class, configuration, fit settings,
                       threshold, history, input shape, library versions
      arrays/          an Orbax checkpoint of a flat {name: array} dict
                       (params, optimizer state leaves, mixture, likelihood scale)

Nothing is ever unpickled: a model file from a stranger cannot run code. The
folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint at ``path``; ``detector.json`` is written last
and a folder without it is refused. Arrays are restored as NumPy (then placed on
the default device), so a checkpoint written on a GPU loads on a CPU.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT_VERSION = 1
_META_FILE = "detector.json"
_ARRAYS_DIR = "arrays"


class CheckpointError(ValueError):
    """A checkpoint folder is missing parts, corrupt, or from an incompatible version."""


def _flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = prefix + "/" + "/".join(_key_str(k) for k in path)
        flat[name] = np.asarray(leaf)
    return flat


def _key_str(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _unflatten_like(template: Any, flat: dict[str, np.ndarray], prefix: str) -> Any:
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths_leaves:
        name = prefix + "/" + "/".join(_key_str(k) for k in path)
        if name not in flat:
            raise CheckpointError(f"checkpoint has no array {name!r}: it was saved from a different model")
        value = flat[name]
        if tuple(np.shape(value)) != tuple(np.shape(leaf)):
            raise CheckpointError(
                f"array {name!r} has shape {np.shape(value)} in the checkpoint but the model expects {np.shape(leaf)}"
            )
        leaves.append(jnp.asarray(value, dtype=getattr(leaf, "dtype", None)))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _versions() -> dict[str, str]:
    import flax
    import optax
    import orbax.checkpoint as ocp

    from vaegmm_jax import __version__

    return {
        "vaegmm_jax": __version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax": getattr(ocp, "__version__", "unknown"),
        "python": platform.python_version(),
        "device": str(jax.devices()[0].device_kind),
    }


def _local_checkpointer():
    """An Orbax PyTree checkpointer that involves this process only.

    Orbax's default is collective across a ``jax.distributed`` session (every process
    must call save/restore), which hangs a save or load made by one process alone. The
    arrays here are host NumPy arrays: any process can restore them on its own, and
    process 0 can write them on its own (Orbax writes NumPy arrays from process 0 only,
    whatever the options; `save_detector` refuses other processes).
    """
    import orbax.checkpoint as ocp

    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=local),
                            multiprocessing_options=local)


def _write_arrays(directory: Path, flat: dict[str, np.ndarray]) -> None:
    # Orbax wants string keys without slashes at one level; keep the names in a list.
    names = sorted(flat)
    tree = {f"a{i:05d}": flat[n] for i, n in enumerate(names)}
    with _local_checkpointer() as ckptr:
        ckptr.save(directory / _ARRAYS_DIR, tree)
    (directory / "array_names.json").write_text(json.dumps(names))


def _read_arrays(directory: Path) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    names_file = directory / "array_names.json"
    if not names_file.is_file() or not (directory / _ARRAYS_DIR).is_dir():
        raise CheckpointError(f"{directory} is not a complete checkpoint: missing arrays")
    names = json.loads(names_file.read_text())
    with _local_checkpointer() as ckptr:
        meta = ckptr.metadata(directory / _ARRAYS_DIR)
        tree_meta = getattr(meta, "item_metadata", None) or getattr(meta, "tree", None) or meta
        try:
            keys = list(tree_meta.keys())
        except AttributeError:
            keys = [f"a{i:05d}" for i in range(len(names))]
        restore_args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in keys}
        tree = ckptr.restore(directory / _ARRAYS_DIR, restore_args=restore_args)
    if len(tree) != len(names):
        raise CheckpointError(f"{directory}: {len(tree)} arrays stored but {len(names)} names listed")
    return {n: np.asarray(tree[f"a{i:05d}"]) for i, n in enumerate(names)}


def save_detector(detector, path: str | os.PathLike) -> Path:
    """Saves a fitted detector to the folder ``path`` (replaced atomically if it exists).

    Files that are not part of the checkpoint (a model card, preprocessing settings,
    plots) are carried over from an existing folder.

    Stores params, mixture parameters, threshold, configuration (JSON, with a format
    version), fit settings, history and optimizer state.
    """
    detector._check_fitted()
    if jax.process_index() != 0:
        # Orbax writes NumPy arrays from process 0 only: elsewhere the folder would lack them.
        raise CheckpointError(
            f"save_detector is called in process {jax.process_index()} of a jax.distributed "
            "session; save from process 0 (every process holds the same fitted state)")
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        flat = _flatten(detector.params, "params")
        for name, tree in detector.extra_arrays().items():
            flat.update(_flatten(tree, name))
        if detector.opt_state is not None:
            leaves = jax.tree_util.tree_leaves(detector.opt_state)
            flat.update({f"opt_state/{i}": np.asarray(v) for i, v in enumerate(leaves)})
        _write_arrays(tmp, flat)
        meta = {
            "format_version": FORMAT_VERSION,
            "detector": type(detector).__name__,
            "config": detector.config_dict(),
            "fit": detector.fit_config,
            "threshold": detector.threshold,
            "input_shape": list(detector.input_shape),
            "epochs_done": detector.epochs_done,
            "history": detector.history,
            "n_opt_state_leaves": 0 if detector.opt_state is None else len(jax.tree_util.tree_leaves(detector.opt_state)),
            "meta": detector.meta,
            "versions": _versions(),
        }
        if detector.n_members > 1:  # an ensemble: every member's training record
            meta["members"] = {
                "history": detector.member_history,
                "failed_epoch": np.asarray(detector.member_failed_epoch).tolist(),
                "after_fit_ok": np.asarray(detector.member_after_fit_ok).tolist(),
            }
        (tmp / _META_FILE).write_text(json.dumps(meta, indent=2, default=_json_default))
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_OWN_ENTRIES = {_META_FILE, _ARRAYS_DIR, "array_names.json"}


def _swap_into_place(tmp: Path, path: Path) -> None:
    if path.exists():
        # Keep what others stored beside the model (a model card, preprocessing, plots):
        # re-saving a detector must not lose a user's files.
        if path.is_dir():
            for entry in path.iterdir():
                if entry.name not in _OWN_ENTRIES and not (tmp / entry.name).exists():
                    if entry.is_dir():
                        shutil.copytree(entry, tmp / entry.name)
                    else:
                        shutil.copy2(entry, tmp / entry.name)
        old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _read_meta(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no saved detector at {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a detector folder")
    meta_file = path / _META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{path} is not a complete detector checkpoint: {_META_FILE} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_file} is corrupt: {err}") from err
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version!r}; this library reads format {FORMAT_VERSION}")
    return meta


def load_detector(path: str | os.PathLike, **networks):
    """Loads a detector saved by :func:`save_detector`.

    Args:
      path: the folder.
      **networks: the same ``encoder_net`` / ``decoder_net`` / ``gmm_density_net``
        (or ``vaegmm``/``aegmm``/``vae`` model) objects the detector was built with, when
        they were custom (their code is not stored, only their parameters). Default
        networks are rebuilt from the stored configuration.

    Returns:
      The detector, with scores bit-identical to the saved one's on the same device.
    """
    path = Path(path).absolute()  # Orbax needs absolute paths
    meta = _read_meta(path)
    cls = _detector_class(meta["detector"])
    det = cls.from_config(meta["config"], **networks)
    _apply_meta(det, meta)
    _restore_arrays(det, path, meta)
    return det


def _detector_class(name: str):
    import vaegmm_jax

    cls = getattr(vaegmm_jax, name, None)
    if cls is None:
        raise CheckpointError(f"unknown detector class {name!r} in checkpoint")
    return cls


def _apply_meta(det, meta: dict) -> None:
    det.threshold = meta["threshold"]
    det.input_shape = tuple(meta["input_shape"])
    det.epochs_done = int(meta["epochs_done"])
    det.history = {k: list(v) for k, v in meta["history"].items()}
    det.fit_config = dict(meta["fit"])
    record = meta.get("members")
    if record is not None:
        det.member_history = {k: [list(map(float, row)) for row in v] for k, v in record["history"].items()}
        det.member_failed_epoch = np.asarray(record["failed_epoch"], np.int64)
        det.member_after_fit_ok = np.asarray(record["after_fit_ok"], bool)


def _restore_arrays(det, path: Path, meta: dict, optimizer=None) -> None:
    flat = _read_arrays(path)
    sample = np.zeros((2,) + tuple(meta["input_shape"]), np.float32)
    det._build(sample)
    from vaegmm_jax import members

    n_members = det.n_members
    one = jax.eval_shape(lambda: det.model.init(jax.random.PRNGKey(0), jnp.asarray(sample)))
    # an ensemble's arrays carry a leading member axis
    template = one if n_members == 1 else jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((n_members,) + a.shape, a.dtype), one)
    det.params = _unflatten_like(template, flat, "params")
    det.set_extra_arrays(_group(flat))
    n_opt = int(meta.get("n_opt_state_leaves", 0))
    if optimizer is not None and n_opt:
        opt_template = jax.eval_shape(members.over_members(optimizer.init, (0,), n_members), template)
        leaves, treedef = jax.tree_util.tree_flatten(opt_template)
        if len(leaves) != n_opt:
            raise CheckpointError(
                f"the optimizer state in {path} has {n_opt} arrays but the given optimizer needs {len(leaves)}: "
                "resume with the optimizer the detector was trained with"
            )
        det.opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(flat[f"opt_state/{i}"]) for i in range(n_opt)])
    else:
        det.opt_state_leaves = [flat[f"opt_state/{i}"] for i in range(n_opt)]
    det._score_jit = {}


def _group(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    """{'gmm/phi': a, 'recon_scale/': b} -> {'gmm': {'phi': a}, 'recon_scale': b}."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        head, _, rest = name.partition("/")
        if head in ("params", "opt_state"):
            continue
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out


def _restore_into(det, path: str | os.PathLike, optimizer) -> None:
    """Loads a checkpoint into an existing detector (used by fit(resume=True))."""
    path = Path(path).absolute()
    meta = _read_meta(path)
    if meta["detector"] != type(det).__name__:
        raise CheckpointError(f"{path} holds a {meta['detector']}, not a {type(det).__name__}")
    if det.input_shape is not None and tuple(meta["input_shape"]) != tuple(det.input_shape):
        raise CheckpointError(f"{path} was trained on rows of shape {meta['input_shape']}, not {det.input_shape}")
    _apply_meta(det, meta)
    _restore_arrays(det, path, meta, optimizer=optimizer)
