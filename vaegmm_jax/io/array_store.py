"""The arrays of a checkpoint version: an Orbax checkpoint in ``arrays/``, with the size and
SHA-256 of each of its files recorded in ``detector.json`` (``array_files``).

Format 2 (written): one nested tree ``{'params': ..., 'opt_state': ..., 'extra': ...}``
(``opt_state`` only with an optimizer state, ``extra`` only with ``extra_arrays()``), NumPy
leaves, restored against the tree the model expects (see :mod:`vaegmm_jax.io.pytrees`).
Format 1 (read): a flat ``{'a00000': array, ...}`` with the arrays' names
(``params/dense/kernel``, ``opt_state/3``, ``gmm/phi``) in ``array_names.json``.

Arrays are read as NumPy, so a checkpoint written on a GPU reads on a CPU. Orbax itself is
imported only when arrays are read or written (it is slow to import: ``import vaegmm_jax``
stays fast). Any failure of Orbax or TensorStore on a damaged checkpoint becomes one
:class:`CheckpointError` naming the folder. Nothing here prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from vaegmm_jax.io.files import CheckpointError, read_json, sha256_of, short_error
from vaegmm_jax.io.metadata import ARRAYS_DIR, NAMES_FILE


def _local_checkpointer():
    """An Orbax PyTree checkpointer that involves this process only.

    Orbax's default is collective across a ``jax.distributed`` session (every process
    must call save/restore), which hangs a save or load made by one process alone. The
    arrays here are host NumPy arrays: any process can restore them on its own, and
    process 0 can write them on its own (Orbax writes NumPy arrays from process 0 only,
    whatever the options; ``save_detector`` refuses other processes).
    """
    import orbax.checkpoint as ocp  # lazy: a slow import, needed only to read or write arrays

    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=local),
                            multiprocessing_options=local)


def write_arrays(folder: Path, tree: dict[str, Any]) -> None:
    """Writes ``tree`` (a dict of array trees, any leaves NumPy can take) as NumPy into
    ``folder/arrays`` (format 2)."""
    with _local_checkpointer() as checkpointer:
        checkpointer.save(folder / ARRAYS_DIR, jax.tree.map(np.asarray, tree))


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """{path relative to ``folder``: {'size': bytes, 'sha256': hex}} of every file under
    ``arrays/`` (and of ``array_names.json`` when there is one).

    Orbax checks some of its own files (a CRC on OCDBT nodes) but not all, and a damaged
    file it does notice fails inside its thread pool with pages of asyncio noise on stderr:
    checking these digests first turns any damage into one CheckpointError naming the file.
    """
    names = [folder / NAMES_FILE] if (folder / NAMES_FILE).is_file() else []
    files = names + sorted(p for p in (folder / ARRAYS_DIR).rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_of(p)} for p in files}


def check_arrays_present(folder: Path, flat_names: bool) -> None:
    """CheckpointError unless ``arrays/`` (and, for format 1, ``array_names.json``) is there."""
    if (flat_names and not (folder / NAMES_FILE).is_file()) or not (folder / ARRAYS_DIR).is_dir():
        listed = f"{NAMES_FILE} or {ARRAYS_DIR}/" if flat_names else f"{ARRAYS_DIR}/"
        raise CheckpointError(f"{folder} is not a complete checkpoint: missing arrays ({listed} is not there)")


def verify_files(folder: Path, digests: dict | None, meta_file: Path, flat_names: bool) -> None:
    """Refuses missing, truncated or altered array files (checkpoints older than the digests: no check)."""
    check_arrays_present(folder, flat_names)
    if digests is None:
        return
    for rel, want in digests.items():
        file = folder / rel
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {meta_file} 'array_files'): the checkpoint is incomplete")
        size = file.stat().st_size
        if size != want["size"]:
            raise CheckpointError(f"{file} is truncated or altered: {size} bytes, {want['size']} saved")
        if sha256_of(file) != want["sha256"]:
            raise CheckpointError(f"{file} is damaged: its SHA-256 differs from the one saved in {meta_file}")


def stored_structure(folder: Path) -> dict[str, Any]:
    """The nested tree stored in ``folder/arrays`` with Orbax's array metadata as leaves
    (each has ``shape`` and ``dtype``); no array is read."""
    arrays_dir = folder / ARRAYS_DIR
    try:
        with _local_checkpointer() as checkpointer:
            metadata = checkpointer.metadata(arrays_dir)
        tree = getattr(metadata.item_metadata, "tree", metadata.item_metadata)
    except Exception as err:  # TensorStore / Orbax errors of every kind: one clear error instead
        raise CheckpointError(f"the arrays in {arrays_dir} cannot be read: {short_error(err)}") from err
    if not isinstance(tree, dict) or "params" not in tree:
        raise CheckpointError(f"{arrays_dir} is not a detector's arrays: it holds no 'params' tree")
    return dict(tree)


def read_arrays(folder: Path, target: dict[str, Any]) -> dict[str, Any]:
    """The parts of the stored tree that ``target`` names, read against it (format 2).

    Args:
      folder: a version folder.
      target: {part: the tree expected there, with ``jax.ShapeDtypeStruct`` leaves}, a
        subset of the stored parts, already checked against :func:`stored_structure`.

    Returns:
      {part: the stored arrays in the target's structure (NamedTuples included), as NumPy
      arrays of the stored dtypes}.
    """
    import orbax.checkpoint as ocp  # lazy: a slow import, needed only to read or write arrays

    arrays_dir = folder / ARRAYS_DIR
    restore_args = jax.tree.map(lambda _leaf: ocp.RestoreArgs(restore_type=np.ndarray), target)
    try:
        with _local_checkpointer() as checkpointer:
            return checkpointer.restore(arrays_dir, args=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args, partial_restore=True))
    except Exception as err:  # TensorStore / Orbax errors of every kind: one clear error instead
        raise CheckpointError(f"the arrays in {arrays_dir} cannot be read: {short_error(err)}") from err


def read_flat_arrays(folder: Path) -> dict[str, np.ndarray]:
    """{name: array} of a format 1 checkpoint (names from ``array_names.json``)."""
    import orbax.checkpoint as ocp  # lazy: a slow import, needed only to read or write arrays

    names_file = folder / NAMES_FILE
    arrays_dir = folder / ARRAYS_DIR
    check_arrays_present(folder, flat_names=True)
    names = read_json(names_file)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)):
        raise CheckpointError(f"{names_file} is corrupt: expected a list of distinct array names")
    try:
        with _local_checkpointer() as checkpointer:
            meta = checkpointer.metadata(arrays_dir)
            tree_meta = getattr(meta, "item_metadata", None) or getattr(meta, "tree", None) or meta
            try:
                keys = list(tree_meta.keys())
            except AttributeError:
                keys = [f"a{i:05d}" for i in range(len(names))]
            restore_args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in keys}
            tree = checkpointer.restore(arrays_dir, restore_args=restore_args)
    except Exception as err:  # TensorStore / Orbax errors of every kind: one clear error instead
        raise CheckpointError(f"the arrays in {arrays_dir} cannot be read: {short_error(err)}") from err
    if not isinstance(tree, dict) or len(tree) != len(names):
        raise CheckpointError(f"{folder}: {len(tree)} arrays stored but {len(names)} names listed in {names_file}")
    missing = [f"a{i:05d}" for i in range(len(names)) if f"a{i:05d}" not in tree]
    if missing:
        raise CheckpointError(f"{arrays_dir} lacks the stored arrays {missing[:3]} listed in {names_file}")
    return {n: np.asarray(tree[f"a{i:05d}"]) for i, n in enumerate(names)}


__all__ = ["check_arrays_present", "file_digests", "read_arrays", "read_flat_arrays", "stored_structure",
           "verify_files", "write_arrays"]
