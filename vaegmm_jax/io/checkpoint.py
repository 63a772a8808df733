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
                           and SHA-256 of every file of the arrays
        array_names.json   the arrays' names, in storage order
        arrays/            an Orbax checkpoint of a flat {name: array} dict
                           (params, optimizer state leaves, mixture, likelihood scale)
        ...                files that belong with this version: the command line's
                           preprocessing.json, model_card.json and plots/ (see ``add_files``)
      v-<older>/           the version the live one replaced, kept until the next save

A save writes a new version folder completely (and fsyncs it) before ``CURRENT`` moves
to it, so a reader sees the old model or the new one, whole, at every moment, and a save
killed at any point leaves the old model loadable. Readers resolve ``CURRENT`` once and
read everything from that version folder; a reader that was mid-read when a second save
removed its version (the previous one is kept for one save) resolves the pointer again and
retries. Files of the previous version that are not part of the checkpoint (a model card,
preprocessing, plots, anything a user put there) are copied into the new version unless
the caller replaces them. Whatever sits at the top of ``path`` besides ``CURRENT`` and the
version folders is the user's: saves never touch it and loads never read it. To add a
file to a model, write it into the new version with ``save_detector(..., add_files=...)``
or into the live version's folder, :func:`resolve_checkpoint` (then it is carried along).
Read with :func:`load_detector`, :func:`read_metadata` or, for several files of one
version, :func:`read_live`.

One writer at a time per folder (as with any file): a save removes version folders that
are neither live nor the previous one (left by killed saves), the hidden sibling folders
``.<name>.tmp-*`` / ``.<name>.old-*`` that earlier releases used, and temporary pointer files.

The earlier layout (``detector.json``, ``arrays/`` and ``array_names.json`` directly in
``path``) still loads. Saving over such a folder converts it: the new version and the old
folder's other files (copied into it) are written first, ``CURRENT`` is created, and only
then are the old top-level entries removed; a save killed in between leaves ``CURRENT``
naming a complete version (loads use it) and the next save finishes the removal.

Nothing is ever unpickled: a model file from a stranger cannot run code. A hand-edited or
damaged checkpoint raises :class:`CheckpointError` naming the file and the field. Arrays
are restored as NumPy (then placed on the default device), so a checkpoint written on a
GPU loads on a CPU. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax._version import __version__
from vaegmm_jax.engine import members
from vaegmm_jax.engine.validation import NotFittedError

FORMAT_VERSION = 1
POINTER_FORMAT = 1
POINTER_FILE = "CURRENT"
META_FILE = "detector.json"
_ARRAYS_DIR = "arrays"
_NAMES_FILE = "array_names.json"
#: the entries of a version folder that are the checkpoint itself (never copied between versions)
_OWN_ENTRIES = (META_FILE, _ARRAYS_DIR, _NAMES_FILE)
# Strict names: a save deletes stale folders by name, so a user's own folder must never match.
_VERSION_RE = re.compile(r"v-\d{8}T\d{6}Z-[0-9a-f]{12}")
_POINTER_TMP_RE = re.compile(r"\.CURRENT\.tmp-[0-9a-f]{12}")
#: how often a read starts again when a concurrent save replaced the version it was reading
_READ_ATTEMPTS = 10

T = TypeVar("T")


class CheckpointError(ValueError):
    """A checkpoint folder is missing parts, corrupt, or from an incompatible version."""


# --------------------------------------------------------------------------- #
# Arrays
# --------------------------------------------------------------------------- #


def flatten_tree(tree: Any, prefix: str) -> dict[str, np.ndarray]:
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


def unflatten_like(template: Any, flat: dict[str, np.ndarray], prefix: str, where: str = "checkpoint") -> Any:
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths_leaves:
        name = prefix + "/" + "/".join(_key_str(k) for k in path)
        if name not in flat:
            raise CheckpointError(f"{where} has no array {name!r}: it was saved from a different model")
        value = flat[name]
        if tuple(np.shape(value)) != tuple(np.shape(leaf)):
            raise CheckpointError(
                f"array {name!r} has shape {np.shape(value)} in {where} but the model that its "
                f"{META_FILE} describes expects {np.shape(leaf)}"
            )
        leaves.append(jnp.asarray(value, dtype=getattr(leaf, "dtype", None)))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _versions() -> dict[str, str]:
    import flax
    import optax
    import orbax.checkpoint as ocp

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
    (directory / _NAMES_FILE).write_text(json.dumps(names))


def _file_digests(directory: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {'size': bytes, 'sha256': hex}} of array_names.json and every file under arrays/.

    Orbax checks some of its own files (a CRC on OCDBT nodes) but not all, and a damaged
    file it does notice fails inside its thread pool with pages of asyncio noise on stderr:
    checking these digests first turns any damage into one CheckpointError naming the file.
    """
    files = [directory / _NAMES_FILE] + sorted(p for p in (directory / _ARRAYS_DIR).rglob("*") if p.is_file())
    return {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_arrays_present(directory: Path) -> None:
    if not (directory / _NAMES_FILE).is_file() or not (directory / _ARRAYS_DIR).is_dir():
        raise CheckpointError(f"{directory} is not a complete checkpoint: missing arrays "
                              f"({_NAMES_FILE} or {_ARRAYS_DIR}/ is not there)")


def _verify_files(folder: Path, digests: dict | None, meta_file: Path) -> None:
    """Refuses missing, truncated or altered array files (checkpoints older than the digests: no check)."""
    _check_arrays_present(folder)
    if digests is None:
        return
    for rel, want in digests.items():
        file = folder / rel
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {meta_file} 'array_files'): the checkpoint is incomplete")
        size = file.stat().st_size
        if size != want["size"]:
            raise CheckpointError(f"{file} is truncated or altered: {size} bytes, {want['size']} saved")
        if _sha256(file) != want["sha256"]:
            raise CheckpointError(f"{file} is damaged: its SHA-256 differs from the one saved in {meta_file}")


def _read_arrays(directory: Path) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    names_file = directory / _NAMES_FILE
    arrays_dir = directory / _ARRAYS_DIR
    _check_arrays_present(directory)
    names = read_json(names_file)
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)):
        raise CheckpointError(f"{names_file} is corrupt: expected a list of distinct array names")
    try:
        with _local_checkpointer() as ckptr:
            meta = ckptr.metadata(arrays_dir)
            tree_meta = getattr(meta, "item_metadata", None) or getattr(meta, "tree", None) or meta
            try:
                keys = list(tree_meta.keys())
            except AttributeError:
                keys = [f"a{i:05d}" for i in range(len(names))]
            restore_args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in keys}
            tree = ckptr.restore(arrays_dir, restore_args=restore_args)
    except Exception as err:  # TensorStore / Orbax errors of every kind: one clear error instead
        raise CheckpointError(f"the arrays in {arrays_dir} cannot be read: {short_error(err)}") from err
    if not isinstance(tree, dict) or len(tree) != len(names):
        raise CheckpointError(f"{directory}: {len(tree)} arrays stored but {len(names)} names listed in {names_file}")
    missing = [f"a{i:05d}" for i in range(len(names)) if f"a{i:05d}" not in tree]
    if missing:
        raise CheckpointError(f"{arrays_dir} lacks the stored arrays {missing[:3]} listed in {names_file}")
    return {n: np.asarray(tree[f"a{i:05d}"]) for i, n in enumerate(names)}


def short_error(err: BaseException, limit: int = 300) -> str:
    text = " ".join((str(err) or type(err).__name__).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- #
# The live version: resolving CURRENT
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class LiveVersion:
    """Where the live version of a model folder is.

    Attributes:
      root: the model folder (absolute).
      folder: the folder holding the live version's files (``detector.json``, ``arrays/``,
        and the files saved with it); ``root`` itself for the earlier, unversioned layout.
      version: the version folder's name, or None for the unversioned layout.
      pointer: the parsed ``CURRENT`` file, or None.
    """

    root: Path
    folder: Path
    version: str | None
    pointer: dict | None


def read_json(file: Path) -> Any:
    """A JSON file's content; CheckpointError naming the file when it is not UTF-8 JSON."""
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise CheckpointError(f"{file} cannot be read: {short_error(err)}") from err
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{file} is corrupt: not UTF-8 text ({short_error(err)})") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is corrupt: not valid JSON ({err})") from err


def _read_pointer(file: Path) -> dict:
    pointer = read_json(file)
    if not isinstance(pointer, dict):
        raise CheckpointError(f"{file} is corrupt: expected a JSON object naming the live version")
    if pointer.get("format") != POINTER_FORMAT:
        raise CheckpointError(f"{file} has pointer format {pointer.get('format')!r}; this library reads "
                              f"format {POINTER_FORMAT}")
    version = pointer.get("version")
    # a pointer names a sibling folder by a strict pattern: never a path elsewhere ("../x")
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise CheckpointError(f"{file}: field 'version' must name a version folder like v-20250101T000000Z-<12 hex>, "
                              f"got {version!r}")
    previous = pointer.get("previous")
    if previous is not None and (not isinstance(previous, str) or not _VERSION_RE.fullmatch(previous)):
        raise CheckpointError(f"{file}: field 'previous' must name a version folder or be null, got {previous!r}")
    legacy = pointer.get("legacy", [])
    if not (isinstance(legacy, list) and all(isinstance(n, str) and n and "/" not in n and "\\" not in n
                                             and n not in (".", "..") for n in legacy)):
        raise CheckpointError(f"{file}: field 'legacy' must be a list of names in the model folder")
    return pointer


def _old_sibling_hint(path: Path) -> str:
    """Names a folder that an interrupted save of an earlier release left beside ``path``."""
    if not path.parent.is_dir():
        return ""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.old-[0-9a-f]{{8}}")
    for entry in sorted(path.parent.iterdir()):
        if pattern.fullmatch(entry.name) and (entry / META_FILE).is_file():
            return (f" (an interrupted save of an earlier release left the previous model in {entry}: "
                    f"rename it to {path.name} to recover it)")
    return ""


def _resolve(path: Path) -> LiveVersion:
    if not path.exists():
        raise FileNotFoundError(f"no saved detector at {path}{_old_sibling_hint(path)}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a detector folder")
    pointer_file = path / POINTER_FILE
    if pointer_file.is_file():
        pointer = _read_pointer(pointer_file)
        folder = path / pointer["version"]
        if not folder.is_dir():
            raise CheckpointError(f"{pointer_file} names the version {pointer['version']!r} but {folder} is missing")
        return LiveVersion(path, folder, pointer["version"], pointer)
    if (path / META_FILE).exists():
        return LiveVersion(path, path, None, None)  # the earlier, unversioned layout
    raise CheckpointError(f"{path} is not a complete detector checkpoint: {META_FILE} is missing "
                          f"(and there is no {POINTER_FILE} naming a version)")


def _generation(path: Path) -> bytes | None:
    """The pointer's bytes (None without one): a change means a save replaced the live version."""
    try:
        return (path / POINTER_FILE).read_bytes()
    except OSError:
        return None


def read_live(path: str | os.PathLike, fn: Callable[[LiveVersion], T]) -> T:
    """``fn(live)`` for the model folder's live version, read consistently.

    ``fn`` should read everything it needs from ``live.folder``: that is one version, whole.
    When ``fn`` fails because a concurrent save replaced that version meanwhile (the pointer
    moved), it is called again on the new live version (up to a few times); any other error
    is raised as is.
    """
    path = Path(path).absolute()
    for attempt in range(_READ_ATTEMPTS):
        before = _generation(path)
        try:
            return fn(_resolve(path))
        except Exception:
            if attempt + 1 < _READ_ATTEMPTS and _generation(path) != before:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The folder holding the live version of the model at ``path``: ``detector.json``,
    ``arrays/`` and the files saved with it (``path`` itself for the unversioned layout).

    A later save may replace that version (it is kept until the save after that): read
    with :func:`read_live` to be safe against concurrent saves.
    """
    return _resolve(Path(path).absolute()).folder


# --------------------------------------------------------------------------- #
# Saving
# --------------------------------------------------------------------------- #


def _step(name: str) -> None:
    """A point between two steps of a save. Does nothing; the tests replace it to stop a save
    there (a crash at every step must leave the old or the new model loadable)."""


def _discard(path: Path) -> None:
    """Removes what a failed save wrote (the tests replace it to leave the debris a kill would)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _fsync_path(path: Path, directory: bool = False) -> None:
    # Durability across a power cut: the pointer must never name a version whose files are
    # still only in the page cache. Some file systems (and Windows, for folders) refuse; the
    # atomicity for readers does not depend on it.
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath), directory=True)


def _new_version_name() -> str:
    return f"v-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"


def _write_pointer(root: Path, pointer: dict) -> None:
    """Replaces ``root/CURRENT`` atomically: a reader sees the old pointer or the new one."""
    tmp = root / f".{POINTER_FILE}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(pointer, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        _step("pointer written")
        os.replace(tmp, root / POINTER_FILE)
    except BaseException:
        _discard(tmp)
        raise
    _fsync_path(root, directory=True)


def _copy_entry(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def is_save_debris(name: str) -> bool:
    return bool(_VERSION_RE.fullmatch(name) or _POINTER_TMP_RE.fullmatch(name))


def _current_state(root: Path) -> tuple[LiveVersion | None, bool]:
    """(the live version or None, whether the folder's versions can be told apart).

    A damaged pointer cannot say which version folder is live: the save then replaces the
    pointer but removes no version folder (the next save does), so nothing is lost to it.
    """
    try:
        return _resolve(root), True
    except (CheckpointError, FileNotFoundError):
        return None, not (root / POINTER_FILE).exists()


def _clean(root: Path, keep: Iterable[str | None], legacy: Iterable[str] = ()) -> None:
    """Removes what earlier or killed saves left: version folders other than ``keep``,
    temporary pointer files, the unversioned layout's entries in ``legacy``, and the hidden
    sibling folders of earlier releases."""
    keep = {k for k in keep if k}
    for entry in list(root.iterdir()) if root.is_dir() else []:
        if entry.name in keep:
            continue
        if is_save_debris(entry.name):
            _remove(entry)
    for name in legacy:
        _remove(root / name)
    sibling = re.compile(rf"\.{re.escape(root.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    for entry in list(root.parent.iterdir()):
        if sibling.fullmatch(entry.name):
            _remove(entry)


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
        detector is saved; :func:`load_detector` gives the detector back).
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
    previous, known = _current_state(root)
    pointer = previous.pointer if previous is not None else None
    if known:
        # debris of killed saves (and of a conversion that a kill interrupted) goes before the
        # new version adds to the disk; the live version and the one it replaced stay. Debris
        # that cannot be removed (permissions) does not stop the save.
        try:
            _clean(root, keep=[previous and previous.version, pointer and pointer.get("previous")],
                   legacy=(pointer or {}).get("legacy", ()))
        except OSError:
            pass
    replace = set(replace)
    version = _new_version_name()
    folder = root / version
    folder.mkdir()
    try:
        _step("version folder created")
        flat = flatten_tree(detector.params, "params")
        for name, tree in detector.extra_arrays().items():
            flat.update(flatten_tree(tree, name))
        if detector.opt_state is not None:
            leaves = jax.tree_util.tree_leaves(detector.opt_state)
            flat.update({f"opt_state/{i}": np.asarray(v) for i, v in enumerate(leaves)})
        _write_arrays(folder, flat)
        _step("arrays written")
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
            "array_files": _file_digests(folder),
        }
        if detector.n_members > 1:  # an ensemble: every member's training record
            meta["members"] = {
                "history": detector.member_history,
                "failed_epoch": np.asarray(detector.member_failed_epoch).tolist(),
                "after_fit_ok": np.asarray(detector.member_after_fit_ok).tolist(),
            }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=json_default))
        _step("detector.json written")
        if add_files is not None:
            add_files(folder)
            _step("files added")
        _carry_files(previous, folder, replace)
        _step("files carried")
        _fsync_tree(folder)
        new_pointer: dict[str, Any] = {"format": POINTER_FORMAT, "version": version,
                                       "previous": previous.version if previous is not None else None}
        if previous is not None and previous.version is None:
            # converting the unversioned layout: all of its top-level entries (the checkpoint,
            # the files now copied into the new version, and those it replaces) are removed once
            # the pointer is in place; recorded so that the next save finishes that if a kill stops it
            new_pointer["legacy"] = sorted(e.name for e in root.iterdir()
                                           if e.name != POINTER_FILE and not is_save_debris(e.name))
        _write_pointer(root, new_pointer)
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
                _remove(root / name)
                _step("legacy entry removed")
            # the listed names are gone: a later file of the same name at the top is the user's
            new_pointer.pop("legacy")
            _write_pointer(root, new_pointer)
        if known:
            _clean(root, keep=[version, new_pointer["previous"]])
    except OSError:
        pass
    _step("old versions removed")
    return root


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
        _copy_entry(entry, folder / name)


def json_default(obj):
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- #
# Reading and checking detector.json
# --------------------------------------------------------------------------- #


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_meta(meta: Any, meta_file: Path) -> dict:
    """Every field a load uses, checked: CheckpointError naming the file and the field."""

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{meta_file}: field {field!r} {problem}")

    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file} is corrupt: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{meta_file.parent} has checkpoint format {version!r}; this library reads format "
                              f"{FORMAT_VERSION}")
    for field in ("detector", "config", "input_shape", "threshold", "history", "epochs_done", "fit"):
        if field not in meta:
            raise bad(field, "is missing")
    if not isinstance(meta["detector"], str):
        raise bad("detector", f"must be a detector class name, got {meta['detector']!r}")
    for field in ("config", "fit", "history"):
        if not isinstance(meta[field], dict):
            raise bad(field, f"must be a JSON object, got {type(meta[field]).__name__}")
    shape = meta["input_shape"]
    if not (isinstance(shape, list) and shape and all(_is_int(s) and s > 0 for s in shape)):
        raise bad("input_shape", f"must be a list of positive integers (one row's shape), got {shape!r}")
    thr = meta["threshold"]
    if thr is not None and not (_is_number(thr) and math.isfinite(thr)):
        raise bad("threshold", f"must be a finite number or null, got {thr!r}")
    if not (_is_int(meta["epochs_done"]) and meta["epochs_done"] >= 0):
        raise bad("epochs_done", f"must be a non-negative integer, got {meta['epochs_done']!r}")
    for term, values in meta["history"].items():
        if not (isinstance(values, list) and all(v is None or _is_number(v) for v in values)):
            raise bad("history", f"entry {term!r} must be a list of numbers")
    n_opt = meta.get("n_opt_state_leaves", 0)
    if not (_is_int(n_opt) and n_opt >= 0):
        raise bad("n_opt_state_leaves", f"must be a non-negative integer, got {n_opt!r}")
    members = meta.get("members")
    if members is not None:
        if not isinstance(members, dict):
            raise bad("members", "must be a JSON object")
        history = members.get("history")
        if not (isinstance(history, dict) and all(
                isinstance(rows, list) and all(isinstance(r, list) and all(v is None or _is_number(v) for v in r)
                                               for r in rows) for rows in history.values())):
            raise bad("members", "entry 'history' must map each loss term to a list of per-member lists of numbers")
        failed = members.get("failed_epoch")
        if not (isinstance(failed, list) and all(_is_int(v) for v in failed)):
            raise bad("members", "entry 'failed_epoch' must be a list of integers")
        ok = members.get("after_fit_ok")
        if not (isinstance(ok, list) and all(isinstance(v, bool) for v in ok)):
            raise bad("members", "entry 'after_fit_ok' must be a list of true/false")
    digests = meta.get("array_files")
    if digests is not None:
        if not isinstance(digests, dict):
            raise bad("array_files", "must be a JSON object")
        for rel, want in digests.items():
            parts = Path(rel).parts
            if (not parts or Path(rel).is_absolute() or ".." in parts or parts[0] not in (_ARRAYS_DIR, _NAMES_FILE)
                    or not (isinstance(want, dict) and _is_int(want.get("size"))
                            and isinstance(want.get("sha256"), str))):
                raise bad("array_files", f"has a bad entry {rel!r}")
    return meta


def read_meta(folder: Path) -> dict:
    """The checked ``detector.json`` of a version folder (or of an unversioned model folder)."""
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{folder} is not a complete detector checkpoint: {META_FILE} is missing")
    return _check_meta(read_json(meta_file), meta_file)


def read_metadata(path: str | os.PathLike) -> dict:
    """The checked ``detector.json`` of the model's live version (no arrays are read)."""
    return read_live(path, lambda live: read_meta(live.folder))


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def apply_meta(det, meta: dict, meta_file: Path | None = None) -> None:
    det.threshold = None if meta["threshold"] is None else float(meta["threshold"])
    det.input_shape = tuple(meta["input_shape"])
    det.epochs_done = int(meta["epochs_done"])
    det.history = {k: list(v) for k, v in meta["history"].items()}
    det.fit_config = dict(meta["fit"])
    record = meta.get("members")
    if record is not None:
        n = det.n_members
        if len(record["failed_epoch"]) != n or len(record["after_fit_ok"]) != n:
            raise CheckpointError(f"{meta_file}: field 'members' records {len(record['failed_epoch'])} members but "
                                  f"the configuration has {n}")
        det.member_history = {k: [list(map(float, row)) for row in v] for k, v in record["history"].items()}
        det.member_failed_epoch = np.asarray(record["failed_epoch"], np.int64)
        det.member_after_fit_ok = np.asarray(record["after_fit_ok"], bool)


def restore_arrays(det, path: Path, meta: dict, optimizer=None) -> None:
    meta_file = path / META_FILE
    _verify_files(path, meta.get("array_files"), meta_file)
    flat = _read_arrays(path)

    n_members = det.n_members
    try:  # an ensemble's arrays carry a leading member axis
        template = det.params_like(meta["input_shape"])
    except Exception as err:  # a hand-edited configuration or input shape the networks cannot take
        raise CheckpointError(f"{meta_file}: fields 'config' and 'input_shape' {meta['input_shape']} do not build a "
                              f"{type(det).__name__}: {short_error(err)}") from err
    det.params = unflatten_like(template, flat, "params", where=str(path / _ARRAYS_DIR))
    try:
        det.set_extra_arrays(_group(flat))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"the arrays in {path / _ARRAYS_DIR} do not fit a {type(det).__name__} "
                              f"(see {path / _NAMES_FILE}): {short_error(err)}") from err
    n_opt = int(meta.get("n_opt_state_leaves", 0))
    missing = [f"opt_state/{i}" for i in range(n_opt) if f"opt_state/{i}" not in flat]
    if missing:
        raise CheckpointError(f"{meta_file}: field 'n_opt_state_leaves' is {n_opt} but the arrays lack {missing[:3]}")
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
    det.clear_compiled()


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


def restore_training_state(det, path: str | os.PathLike, optimizer) -> None:
    """Loads a checkpoint into an existing detector (used by fit(resume=True))."""

    def restore(live: LiveVersion) -> None:
        meta = read_meta(live.folder)
        if meta["detector"] != type(det).__name__:
            raise CheckpointError(f"{path} holds a {meta['detector']}, not a {type(det).__name__}")
        if det.input_shape is not None and tuple(meta["input_shape"]) != tuple(det.input_shape):
            raise CheckpointError(f"{path} was trained on rows of shape {meta['input_shape']}, not {det.input_shape}")
        apply_meta(det, meta, live.folder / META_FILE)
        restore_arrays(det, live.folder, meta, optimizer=optimizer)

    read_live(path, restore)
