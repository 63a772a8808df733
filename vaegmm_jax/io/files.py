"""File helpers of the checkpoint format: its error type, JSON reading with clear errors,
digests, fsync, and removing or copying folder entries. Nothing here prints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint folder is missing parts, corrupt, or from an incompatible version."""


def short_error(err: BaseException, limit: int = 300) -> str:
    """``err``'s message on one line, at most ``limit`` characters (its type's name when empty)."""
    text = " ".join((str(err) or type(err).__name__).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(file: Path) -> Any:
    """A JSON file's content; CheckpointError naming the file when it is not UTF-8 JSON.

    Raises:
      FileNotFoundError: ``file`` does not exist.
      CheckpointError: it cannot be read, or is not UTF-8 JSON.
    """
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


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path, directory: bool = False) -> None:
    """Flushes a file (or, with ``directory``, a folder's entries) to the disk, where the
    system allows it.

    Durability across a power cut: the pointer must never name a version whose files are
    still only in the page cache. Some file systems (and Windows, for folders) refuse; the
    atomicity for readers does not depend on it.
    """
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


def fsync_tree(folder: Path) -> None:
    """:func:`fsync_path` on every file and folder under ``folder`` (itself included)."""
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath), directory=True)


def remove_entry(path: Path) -> None:
    """Removes a file, link or folder (a folder with everything in it); nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def copy_entry(src: Path, dst: Path) -> None:
    """Copies a file or a folder (links stay links) to ``dst``."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


__all__ = ["CheckpointError", "copy_entry", "fsync_path", "fsync_tree", "read_json", "remove_entry", "sha256_of",
           "short_error"]
