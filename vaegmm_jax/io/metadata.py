"""``detector.json``: what a checkpoint says about its detector, written, checked and applied.

Fields: ``format_version`` (:data:`FORMAT_VERSION`), ``detector`` (class name), ``config``
(``config_dict()``), ``fit`` (the fit settings), ``threshold``, ``input_shape`` (one row's
shape), ``epochs_done``, ``history`` ({loss term: per-epoch values}), ``n_opt_state_leaves``
(arrays in the stored optimizer state, 0 without one), ``meta`` (alibi-detect's), ``versions``
(libraries and device that wrote it), ``array_files`` ({file under the version folder:
{size, sha256}}) and, for an ensemble (M > 1), ``members`` (every member's history, failed
epoch and after-fit check). Every field a load uses is checked: a hand-edited or damaged file
raises :class:`CheckpointError` naming the file and the field. Nothing here prints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vaegmm_jax.io.files import CheckpointError, read_json
from vaegmm_jax.io.versions import META_FILE

#: the checkpoint format that saves write: 2 stores the arrays as one nested tree
#: ({'params', 'opt_state', 'extra'}); 1 stored them flat (``a00000`` keys listed in
#: ``array_names.json``) and still loads
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
#: entries of a version folder that ``array_files`` may list (``array_names.json``: format 1)
ARRAYS_DIR = "arrays"
NAMES_FILE = "array_names.json"


def json_default(obj: Any) -> Any:
    """``json.dumps``'s ``default`` for the values a detector's settings may hold: NumPy
    scalars as numbers, arrays (NumPy or jax) as nested lists."""
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def detector_record(detector, with_members: bool | None = None) -> dict[str, Any]:
    """The fields of ``detector.json`` that describe a fitted detector (through its public
    attributes): detector, config, fit, threshold, input_shape, epochs_done, history, meta
    and, when ``with_members`` (default: for an ensemble, M > 1), members. :func:`apply_meta`
    sets them back."""
    record = {
        "detector": type(detector).__name__,
        "config": detector.config_dict(),
        "fit": detector.fit_config,
        "threshold": detector.threshold,
        "input_shape": list(detector.input_shape),
        "epochs_done": int(detector.epochs_done),
        "history": detector.history,
        "meta": detector.meta,
    }
    if detector.n_members > 1 if with_members is None else with_members:
        record["members"] = {
            "history": detector.member_history,
            "failed_epoch": np.asarray(detector.member_failed_epoch).tolist(),
            "after_fit_ok": np.asarray(detector.member_after_fit_ok).tolist(),
        }
    return record


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_meta(meta: Any, meta_file: Path) -> dict:
    """Every field a load uses, checked: CheckpointError naming the file and the field."""

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{meta_file}: field {field!r} {problem}")

    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_file} is corrupt: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version not in READABLE_FORMATS or isinstance(version, bool):
        raise CheckpointError(f"{meta_file.parent} has checkpoint format {version!r}; this library reads formats "
                              f"{' and '.join(map(str, READABLE_FORMATS))}")
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
    _check_members(meta.get("members"), bad)
    digests = meta.get("array_files")
    if digests is not None:
        if not isinstance(digests, dict):
            raise bad("array_files", "must be a JSON object")
        for rel, want in digests.items():
            parts = Path(rel).parts
            if (not parts or Path(rel).is_absolute() or ".." in parts or parts[0] not in (ARRAYS_DIR, NAMES_FILE)
                    or not (isinstance(want, dict) and _is_int(want.get("size"))
                            and isinstance(want.get("sha256"), str))):
                raise bad("array_files", f"has a bad entry {rel!r}")
    return meta


def _check_members(members: Any, bad) -> None:
    """The ``members`` field (an ensemble's records), when there is one."""
    if members is None:
        return
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


def read_meta(folder: Path) -> dict:
    """The checked ``detector.json`` of a version folder (or of an unversioned model folder)."""
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise CheckpointError(f"{folder} is not a complete detector checkpoint: {META_FILE} is missing")
    return check_meta(read_json(meta_file), meta_file)


def apply_meta(det, meta: dict, meta_file: Path | None = None) -> None:
    """Sets a detector's threshold, input shape, epochs, history, fit settings and (an
    ensemble's) member records from a checked ``detector.json`` (or :func:`detector_record`).

    Raises:
      CheckpointError: the member records do not fit the detector's member count.
    """
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


__all__ = ["ARRAYS_DIR", "FORMAT_VERSION", "NAMES_FILE", "READABLE_FORMATS", "apply_meta", "check_meta",
           "detector_record", "json_default", "read_meta"]
