"""Saving and loading detectors: Orbax for arrays, JSON for everything else.

Layout of a saved model folder::

    path/
      CURRENT              {"format": 1, "version": "v-...", "previous": "v-..." | null}:
                           names the live version; the only file a save changes in place,
                           and it is replaced atomically (a temporary file, fsync, os.replace).
                           While a conversion (below) is unfinished it also lists the earlier
                           layout's entries still to remove ("legacy").
      v-<UTC time>-<id>/   one complete version of the model:
        detector.json      format version, detector class, configuration, fit settings,
                           threshold, history, input shape, library versions, and the size
                           and SHA-256 of every file of the arrays (:mod:`.metadata`)
        arrays/            an Orbax checkpoint of one nested tree (:mod:`.array_store`):
                           {'params': the model's parameters, 'opt_state': the optimizer
                           state (when there is one), 'extra': ``extra_arrays()`` (mixture,
                           input scaling, likelihood scale, calibration)}; an ensemble's
                           (M > 1) params and optimizer state have a leading member axis
        ...                files that belong with this version: the command line's
                           preprocessing.json, model_card.json and plots/ (see ``add_files``)
      v-<older>/           the version the live one replaced, kept until the next save

A save writes a new version folder completely (and fsyncs it) before ``CURRENT`` moves
to it, so a reader sees the old model or the new one, whole, at every moment, and a save
killed at any point leaves the old model loadable. Readers resolve ``CURRENT`` once and
read everything from that version folder; a reader that was mid-read when a second save
removed its version (the previous one is kept for one save) resolves the pointer again and
retries (:mod:`.versions`). Files of the previous version that are not part of the
checkpoint (a model card, preprocessing, plots, anything a user put there) are copied into
the new version unless the caller replaces them. Whatever sits at the top of ``path``
besides ``CURRENT`` and the version folders is the user's: saves never touch it and loads
never read it. To add a file to a model, write it into the new version with
``save_detector(..., add_files=...)`` or into the live version's folder,
:func:`resolve_checkpoint` (then it is carried along). Read with ``load_detector``
(:mod:`vaegmm_jax.detectors.loading`), :func:`read_metadata` or, for several files of one
version, :func:`read_live`.

One writer at a time per folder (as with any file): a save removes version folders that
are neither live nor the previous one (left by killed saves), the hidden sibling folders
``.<name>.tmp-*`` / ``.<name>.old-*`` that earlier releases used, and temporary pointer files.

Restoring: the parameters are read against ``det.params_like(input_shape)`` and the optimizer
state against the state that the given optimizer's ``init`` builds for them
(``jax.eval_shape``, member axis included), node for node: a checkpoint of another model or
optimizer (even one whose state has as many arrays) raises :class:`CheckpointError` naming
the first difference. A load without an optimizer (``load_detector``) does not read the
optimizer state: ``det.opt_state`` is None, and ``fit(resume=True)`` reads it from the
checkpoint with the optimizer it is given (:func:`restore_training_state`).

Earlier checkpoints load: format 1 (flat arrays named in ``array_names.json``; its optimizer
state is a list of arrays, checked by count and shapes: it stored no structure) and the
unversioned layout (``detector.json``, ``arrays/`` and ``array_names.json`` directly in
``path``). A save always writes format 2. Saving over an unversioned folder converts it: the
new version and the old folder's other files (copied into it) are written first, ``CURRENT``
is created, and only then are the old top-level entries removed; a save killed in between
leaves ``CURRENT`` naming a complete version (loads use it) and the next save finishes the
removal.

Nothing is ever unpickled: a model file from a stranger cannot run code. A hand-edited or
damaged checkpoint raises :class:`CheckpointError` naming the file and the field. Arrays
are restored as NumPy (then placed on the default device), so a checkpoint written on a
GPU loads on a CPU. The detector is used through its public interface only. Nothing here
prints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import jax
import numpy as np

from vaegmm_jax.engine import members
from vaegmm_jax.engine.validation import NotFittedError
from vaegmm_jax.io import array_store
from vaegmm_jax.io.files import CheckpointError, copy_entry, fsync_tree, read_json, remove_entry, short_error
from vaegmm_jax.io.metadata import (
    ARRAYS_DIR,
    FORMAT_VERSION,
    NAMES_FILE,
    apply_meta,
    detector_record,
    json_default,
    read_meta,
)
from vaegmm_jax.io.model_card import library_versions
from vaegmm_jax.io.pytrees import cast_like, check_matches, count_arrays, drop_empty, nest_flat_names, restore_like
from vaegmm_jax.io.versions import (
    META_FILE,
    POINTER_FILE,
    POINTER_FORMAT,
    LiveVersion,
    clean_debris,
    current_state,
    is_save_debris,
    new_version_name,
    read_live,
    resolve_checkpoint,
    write_pointer,
)

#: the entries of a version folder that are the checkpoint itself (never copied between versions)
_OWN_ENTRIES = (META_FILE, ARRAYS_DIR, NAMES_FILE)


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #


def _step(name: str) -> None:
    """A point between two steps of a save. Does nothing; the tests replace it to stop a save
    there (a crash at every step must leave the old or the new model loadable)."""


def _discard(path: Path) -> None:
    """Removes what a failed save wrote (the tests replace it to leave the debris a kill would)."""
    remove_entry(path)


def save_detector(
    detector,
    path: str | os.PathLike,
    *,
    add_files: Callable[[Path], Any] | None = None,
    replace: Iterable[str] = (),
) -> Path:
    """Saves a fitted detector to the folder ``path``, replacing its model atomically.

    Stores params, mixture parameters, threshold, configuration (JSON, with a format
    version), fit settings, history and optimizer state as a new version folder, then
    points ``path/CURRENT`` at it (see the module docstring): readers see the old model or
    the new one, whole, and a crash or kill at any moment leaves one of them loadable.
    The previous version is kept until the next save (a reader may be mid-read).

    Args:
      detector: a fitted detector, or a fitted :mod:`vaegmm_jax.sklearn` estimator (its
        detector is saved; ``load_detector`` gives the detector back).
      path: the model folder (created if missing; an unversioned folder is converted).
      add_files: called as ``add_files(folder)`` with the new version's folder (a Path)
        after the checkpoint is written there and before it goes live: it writes the files
        that belong with this checkpoint (e.g. ``preprocessing.json``, a model card,
        plots), which go live together with it. If it raises, nothing changes.
      replace: names of the previous version's other files and folders that the new
        version must not inherit (``add_files`` writes them anew, or they are stale);
        every other file of the previous version (a model card, preprocessing, plots a
        user added) is copied into the new version.

    Returns:
      The model folder ``path`` (absolute).
    """
    detector = _unwrap_estimator(detector)
    detector.check_fitted()
    if jax.process_index() != 0:
        # Orbax writes NumPy arrays from process 0 only: elsewhere the folder would lack them.
        raise CheckpointError(
            f"save_detector is called in process {jax.process_index()} of a jax.distributed "
            "session; save from process 0 (every process holds the same fitted state)")
    root = Path(path).absolute()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"cannot save a detector to {root}: it is a file, not a folder")
    root.mkdir(parents=True, exist_ok=True)
    previous, known = current_state(root)
    pointer = previous.pointer if previous is not None else None
    if known:
        # debris of killed saves (and of a conversion that a kill interrupted) goes before the
        # new version adds to the disk; the live version and the one it replaced stay. Debris
        # that cannot be removed (permissions) does not stop the save.
        try:
            clean_debris(root, keep=[previous and previous.version, pointer and pointer.get("previous")],
                         legacy=(pointer or {}).get("legacy", ()))
        except OSError:
            pass
    replace = set(replace)
    version = new_version_name()
    folder = root / version
    folder.mkdir()
    try:
        _step("version folder created")
        array_store.write_arrays(folder, _array_tree(detector))
        _step("arrays written")
        meta = {
            "format_version": FORMAT_VERSION,
            **detector_record(detector),
            "n_opt_state_leaves": 0 if detector.opt_state is None else count_arrays(detector.opt_state),
            "versions": library_versions(device=True),
            "array_files": array_store.file_digests(folder),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=json_default))
        _step("detector.json written")
        if add_files is not None:
            add_files(folder)
            _step("files added")
        _carry_files(previous, folder, replace)
        _step("files carried")
        fsync_tree(folder)
        new_pointer: dict[str, Any] = {"format": POINTER_FORMAT, "version": version,
                                       "previous": previous.version if previous is not None else None}
        if previous is not None and previous.version is None:
            # converting the unversioned layout: all of its top-level entries (the checkpoint,
            # the files now copied into the new version, and those it replaces) are removed once
            # the pointer is in place; recorded so that the next save finishes that if a kill stops it
            new_pointer["legacy"] = sorted(e.name for e in root.iterdir()
                                           if e.name != POINTER_FILE and not is_save_debris(e.name))
        write_pointer(root, new_pointer, step=_step, discard=_discard)
    except BaseException:
        _discard(folder)
        raise
    _step("pointer moved")
    # From here the new version is live: what follows is tidying. A file-system error in it
    # leaves debris that the next save removes, never a model that does not load, so it does
    # not fail the save.
    try:
        if "legacy" in new_pointer:
            for name in [META_FILE] + new_pointer["legacy"]:  # detector.json first: the old layout ends at once
                remove_entry(root / name)
                _step("legacy entry removed")
            # the listed names are gone: a later file of the same name at the top is the user's
            new_pointer.pop("legacy")
            write_pointer(root, new_pointer, step=_step, discard=_discard)
        if known:
            clean_debris(root, keep=[version, new_pointer["previous"]])
    except OSError:
        pass
    _step("old versions removed")
    return root


def _array_tree(detector) -> dict[str, Any]:
    """{'params', 'opt_state' (when there is one), 'extra' (when ``extra_arrays()`` has any)}:
    the one tree of arrays a version stores (empty entries of ``extra`` left out)."""
    tree = {"params": detector.params}
    if detector.opt_state is not None:
        tree["opt_state"] = detector.opt_state
    extra = drop_empty(detector.extra_arrays())
    if extra:
        tree["extra"] = extra
    return tree


def _unwrap_estimator(detector):
    """The detector inside a scikit-learn style estimator (``detector_``), or the detector itself."""
    if type(detector).__module__ == "vaegmm_jax.sklearn" and hasattr(detector, "get_params"):
        inner = getattr(detector, "detector_", None)
        if inner is None:
            raise NotFittedError(f"{type(detector).__name__} is not fitted: call fit(X) before saving it")
        return inner
    if all(callable(getattr(detector, name, None)) for name in ("config_dict", "extra_arrays", "check_fitted")):
        return detector
    raise TypeError(f"save_detector saves a vaegmm_jax detector or estimator, got {type(detector).__name__}")


def _carry_files(previous: LiveVersion | None, folder: Path, replace: set[str]) -> None:
    """Copies the previous version's other files into the new version (those not written anew
    or replaced)."""
    if previous is None:
        return
    for entry in sorted(previous.folder.iterdir()):
        name = entry.name
        if name in _OWN_ENTRIES or name in replace or (folder / name).exists():
            continue
        if previous.version is None and (name == POINTER_FILE or is_save_debris(name)):
            continue  # the unversioned folder is also the new layout's root
        copy_entry(entry, folder / name)


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def read_metadata(path: str | os.PathLike) -> dict:
    """The checked ``detector.json`` of the model's live version (no arrays are read)."""
    return read_live(path, lambda live: read_meta(live.folder))


def restore_arrays(det, path: Path, meta: dict, optimizer=None) -> None:
    """Sets a detector's arrays from the version folder ``path`` whose checked
    ``detector.json`` is ``meta``: ``params`` (read against ``det.params_like``), the extra
    arrays (``set_extra_arrays``) and, when ``optimizer`` is given and the checkpoint holds
    one, ``opt_state`` (read against ``optimizer.init``'s state; None otherwise).

    Raises:
      CheckpointError: missing, damaged or mismatched arrays, naming the file or array.
    """
    meta_file = path / META_FILE
    flat_names = meta["format_version"] == 1
    array_store.verify_files(path, meta.get("array_files"), meta_file, flat_names)
    try:  # an ensemble's arrays carry a leading member axis
        params_target = det.params_like(meta["input_shape"])
    except Exception as err:  # a hand-edited configuration or input shape the networks cannot take
        raise CheckpointError(f"{meta_file}: fields 'config' and 'input_shape' {meta['input_shape']} do not build a "
                              f"{type(det).__name__}: {short_error(err)}") from err
    n_opt = int(meta.get("n_opt_state_leaves", 0))
    opt_target = None
    if optimizer is not None and n_opt:
        opt_target = jax.eval_shape(members.over_members(optimizer.init, (0,), det.n_members), params_target)
        if count_arrays(opt_target) != n_opt:
            raise CheckpointError(
                f"the optimizer state in {path} has {n_opt} arrays but the given optimizer needs "
                f"{count_arrays(opt_target)}: resume with the optimizer the detector was trained with")
    read = _read_flat if flat_names else _read_nested
    params, opt_state, extra = read(path, meta_file, params_target, opt_target, n_opt)
    try:
        det.set_extra_arrays(extra)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        names = f" (see {path / NAMES_FILE})" if flat_names else ""
        raise CheckpointError(f"the arrays in {path / ARRAYS_DIR} do not fit a {type(det).__name__}{names}: "
                              f"{short_error(err)}") from err
    det.params = params
    det.opt_state = opt_state
    det.clear_compiled()


def _model_expects() -> str:
    return f"the model that its {META_FILE} describes"


def _optimizer_mismatch(path: Path, err: CheckpointError) -> CheckpointError:
    return CheckpointError(f"the optimizer state in {path} does not match the given optimizer's: {err}; resume "
                           "with the optimizer the detector was trained with")


def _read_nested(path: Path, meta_file: Path, params_target, opt_target, n_opt: int):
    """(params, opt_state or None, extra arrays) of a format 2 version folder."""
    where = str(path / ARRAYS_DIR)
    stored = array_store.stored_structure(path)
    check_matches(params_target, stored["params"], "params", where=where, expects=_model_expects())
    stored_opt = stored.get("opt_state")
    n_stored = 0 if stored_opt is None else count_arrays(stored_opt)
    if n_stored != n_opt:
        raise CheckpointError(f"{meta_file}: field 'n_opt_state_leaves' is {n_opt} but {where} holds {n_stored} "
                              "optimizer state arrays")
    target = {"params": params_target}
    if opt_target is not None:
        try:
            check_matches(opt_target, stored_opt, "opt_state", where="the checkpoint",
                          expects="the given optimizer's state")
        except CheckpointError as err:
            raise _optimizer_mismatch(path, err) from None
        target["opt_state"] = opt_target
    stored_extra = drop_empty(stored.get("extra"))
    if stored_extra:
        target["extra"] = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), stored_extra)
    arrays = array_store.read_arrays(path, target)
    opt_state = None if opt_target is None else cast_like(opt_target, arrays["opt_state"])
    return cast_like(params_target, arrays["params"]), opt_state, arrays.get("extra", {})


def _read_flat(path: Path, meta_file: Path, params_target, opt_target, n_opt: int):
    """(params, opt_state or None, extra arrays) of a format 1 version folder."""
    flat = array_store.read_flat_arrays(path)
    params = restore_like(params_target, nest_flat_names(flat, "params"), "params", where=str(path / ARRAYS_DIR),
                          expects=_model_expects())
    heads = sorted({name.partition("/")[0] for name in flat} - {"params", "opt_state"})
    extra = {head: nest_flat_names(flat, head) for head in heads}
    missing = [f"opt_state/{i}" for i in range(n_opt) if f"opt_state/{i}" not in flat]
    if missing:
        raise CheckpointError(f"{meta_file}: field 'n_opt_state_leaves' is {n_opt} but the arrays lack {missing[:3]}")
    if opt_target is None:
        return params, None, extra
    # format 1 stored the optimizer state's arrays in order, without its tree: count and shapes are checked
    wanted, treedef = jax.tree_util.tree_flatten(opt_target)
    leaves = [flat[f"opt_state/{i}"] for i in range(n_opt)]
    for i, (leaf, want) in enumerate(zip(leaves, wanted)):
        if np.shape(leaf) != tuple(want.shape):
            raise _optimizer_mismatch(path, CheckpointError(
                f"array 'opt_state/{i}' has shape {np.shape(leaf)} but the given optimizer's state expects "
                f"{tuple(want.shape)}"))
    return params, cast_like(opt_target, jax.tree_util.tree_unflatten(treedef, leaves)), extra


def restore_training_state(det, path: str | os.PathLike, optimizer) -> None:
    """Loads a checkpoint into an existing detector (used by fit(resume=True)): its settings,
    history, arrays and the optimizer state, read against ``optimizer``'s."""

    def restore(live: LiveVersion) -> None:
        meta = read_meta(live.folder)
        if meta["detector"] != type(det).__name__:
            raise CheckpointError(f"{path} holds a {meta['detector']}, not a {type(det).__name__}")
        if det.input_shape is not None and tuple(meta["input_shape"]) != tuple(det.input_shape):
            raise CheckpointError(f"{path} was trained on rows of shape {meta['input_shape']}, not {det.input_shape}")
        apply_meta(det, meta, live.folder / META_FILE)
        restore_arrays(det, live.folder, meta, optimizer=optimizer)

    read_live(path, restore)


__all__ = ["CheckpointError", "FORMAT_VERSION", "LiveVersion", "META_FILE", "POINTER_FILE", "apply_meta",
           "is_save_debris", "read_json", "read_live", "read_meta", "read_metadata", "resolve_checkpoint",
           "restore_arrays", "restore_training_state", "save_detector", "short_error"]
