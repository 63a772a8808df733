"""The version folders of a model folder and the ``CURRENT`` pointer that names the live one.

``CURRENT`` is ``{"format": 1, "version": "v-...", "previous": "v-..." | null}`` (plus, while
a conversion of the unversioned layout is unfinished, ``"legacy"``: the earlier layout's
entries still to remove). It is the only file a save changes in place, and it is replaced
atomically (a temporary file, fsync, ``os.replace``). See :mod:`vaegmm_jax.io.checkpoint`
for the whole layout and the order of a save. Nothing here prints.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from vaegmm_jax.io.files import CheckpointError, fsync_path, read_json, remove_entry

POINTER_FORMAT = 1
POINTER_FILE = "CURRENT"
#: a version's description (see :mod:`vaegmm_jax.io.metadata`); its presence at the top of a
#: model folder without ``CURRENT`` marks the earlier, unversioned layout
META_FILE = "detector.json"
# Strict names: a save deletes stale folders by name, so a user's own folder must never match.
_VERSION_RE = re.compile(r"v-\d{8}T\d{6}Z-[0-9a-f]{12}")
_POINTER_TMP_RE = re.compile(r"\.CURRENT\.tmp-[0-9a-f]{12}")
#: how often a read starts again when a concurrent save replaced the version it was reading
READ_ATTEMPTS = 10

T = TypeVar("T")


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


def read_pointer(file: Path) -> dict:
    """The checked content of a ``CURRENT`` file; CheckpointError naming the file and field."""
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


def resolve_live(path: Path) -> LiveVersion:
    """The live version of the model folder ``path`` (absolute), read from ``CURRENT`` once.

    Raises:
      FileNotFoundError: nothing at ``path``.
      CheckpointError: ``path`` is no model folder, or its pointer is damaged.
    """
    if not path.exists():
        raise FileNotFoundError(f"no saved detector at {path}{_old_sibling_hint(path)}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a detector folder")
    pointer_file = path / POINTER_FILE
    if pointer_file.is_file():
        pointer = read_pointer(pointer_file)
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
    for attempt in range(READ_ATTEMPTS):
        before = _generation(path)
        try:
            return fn(resolve_live(path))
        except Exception:
            if attempt + 1 < READ_ATTEMPTS and _generation(path) != before:
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The folder holding the live version of the model at ``path``: ``detector.json``,
    ``arrays/`` and the files saved with it (``path`` itself for the unversioned layout).

    A later save may replace that version (it is kept until the save after that): read
    with :func:`read_live` to be safe against concurrent saves.
    """
    return resolve_live(Path(path).absolute()).folder


def is_save_debris(name: str) -> bool:
    """Whether a model folder's entry ``name`` is a save's own (a version folder or a pointer
    draft): not a user's file."""
    return bool(_VERSION_RE.fullmatch(name) or _POINTER_TMP_RE.fullmatch(name))


def new_version_name() -> str:
    """A fresh version folder name, ``v-<UTC time>-<12 hex>``."""
    return f"v-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"


def write_pointer(root: Path, pointer: dict, step: Callable[[str], None],
                  discard: Callable[[Path], None]) -> None:
    """Replaces ``root/CURRENT`` atomically: a reader sees the old pointer or the new one.

    Args:
      root: the model folder.
      pointer: the new pointer's content.
      step: called with "pointer written" between writing the draft and moving it in place
        (the save's crash-test seam, see :mod:`vaegmm_jax.io.checkpoint`).
      discard: removes the draft when writing fails.
    """
    tmp = root / f".{POINTER_FILE}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(pointer, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        step("pointer written")
        os.replace(tmp, root / POINTER_FILE)
    except BaseException:
        discard(tmp)
        raise
    fsync_path(root, directory=True)


def current_state(root: Path) -> tuple[LiveVersion | None, bool]:
    """(the live version or None, whether the folder's versions can be told apart).

    A damaged pointer cannot say which version folder is live: the save then replaces the
    pointer but removes no version folder (the next save does), so nothing is lost to it.
    """
    try:
        return resolve_live(root), True
    except (CheckpointError, FileNotFoundError):
        return None, not (root / POINTER_FILE).exists()


def clean_debris(root: Path, keep: Iterable[str | None], legacy: Iterable[str] = ()) -> None:
    """Removes what earlier or killed saves left: version folders other than ``keep``,
    temporary pointer files, the unversioned layout's entries in ``legacy``, and the hidden
    sibling folders ``.<name>.tmp-*`` / ``.<name>.old-*`` of earlier releases."""
    keep = {k for k in keep if k}
    for entry in list(root.iterdir()) if root.is_dir() else []:
        if entry.name in keep:
            continue
        if is_save_debris(entry.name):
            remove_entry(entry)
    for name in legacy:
        remove_entry(root / name)
    sibling = re.compile(rf"\.{re.escape(root.name)}\.(tmp|old)-[0-9a-f]{{8}}")
    for entry in list(root.parent.iterdir()):
        if sibling.fullmatch(entry.name):
            remove_entry(entry)


__all__ = ["LiveVersion", "META_FILE", "POINTER_FILE", "POINTER_FORMAT", "READ_ATTEMPTS", "clean_debris",
           "current_state", "is_save_debris", "new_version_name", "read_live", "read_pointer", "resolve_checkpoint",
           "resolve_live", "write_pointer"]
