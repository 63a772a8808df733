"""A folder of per-run results, so that a long accuracy table can be resumed instead of recomputed.

``accuracy.py --store DIR`` writes every run (one seed of one detector on one data set) it
finishes to ``DIR`` as a small JSON file, and on the next invocation reuses every run whose
key matches and trains only the missing seeds. A 20-seed table can thus be filled in over
several short device sessions, or survive an interruption (``--seed-chunk`` stores runs as
each chunk of seeds finishes), and the same command then renders the whole table.

A run's key hashes everything that decides its result:

* the run's rows (:meth:`vaegmm_jax.evaluation.RunData.fingerprint`: the training and
  evaluation rows themselves, labels, the feature transform's definition, threshold rule;
  platform-independent, so runs made on a GPU are found on a CPU and back);
* the detector (:class:`vaegmm_jax.evaluation.DetectorSpec` name, description, fit
  arguments, restarts, and the detector's own scalar settings);
* the caller's ``settings`` (anything else it wants a run to depend on; ``accuracy.py``
  passes none, since the rows and the spec already carry its options);
* the seed and :data:`STORE_FORMAT`.

The library's code is *not* in the key: a run stays reusable across commits that do not
change it. Each stored run records the commit, platform and device that made it, and the
report lists them, so a reader sees which runs were made where. After changing the
training code, start a new folder.

Files are written atomically (temporary file, then ``os.replace``): an interrupted run
never leaves a half-written result behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: bump when the stored rows or the key change meaning. 2: a run's rows are fingerprinted by their
#: feature transform's definition, not its fitted floats (format 1 hashed those, and a GPU and a
#: CPU round them differently, so runs made on the H100 did not match on the CPU);
#: :meth:`RunStore.adopt_format1` carries format-1 runs over.
STORE_FORMAT = 2


def _stable(obj: Any) -> Any:
    """A JSON-able, address-free image of ``obj`` for hashing (objects become their type name)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return repr(obj)  # nan and inf included
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return _stable(obj.item())
    if isinstance(obj, dict):
        return {str(k): _stable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_stable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"ndarray": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest(),
                "shape": list(obj.shape), "dtype": str(obj.dtype)}
    return f"<{type(obj).__module__}.{type(obj).__qualname__}>"


def detector_identity(spec, seed: int) -> dict:
    """What of ``spec`` decides a run's result, as stable JSON-able values."""
    ident = {
        "name": spec.name, "description": spec.description, "fit_args": _stable(spec.fit_args),
        "restarts": int(spec.restarts), "restart_select": spec.restart_select,
        "kind": "vaegmm_jax" if spec.factory is not None else "sklearn",
    }
    make = spec.factory if spec.factory is not None else spec.sklearn_factory
    if make is not None:  # the detector's own scalar settings (sizes, weights, L, ...)
        det = make(int(seed))
        attrs = det.get_params() if hasattr(det, "get_params") else vars(det)
        ident["settings"] = {k: _stable(v) for k, v in sorted(attrs.items())
                             if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
    return ident


def _key_parts(data, i: int, spec, settings: dict) -> dict:
    return {
        "format": STORE_FORMAT, "seed": int(data.seeds[i]), "rows": data.fingerprint(i),
        "detector": detector_identity(spec, data.seeds[i]), "settings": _stable(settings),
    }


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def run_key(data, i: int, spec, settings: dict) -> str:
    """SHA-256 hex key of run ``i`` of ``data`` trained with ``spec`` under ``settings``."""
    return _sha(_key_parts(data, i, spec, settings))


def _data_label(data) -> str:
    """Folder name of a run's data: the data set, and the contamination when there is some (readability only:
    the key alone decides a match)."""
    c = float(data.info.get("contamination") or 0.0)
    return data.dataset + (f"-contaminated-{100 * c:g}pct" if c else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class RunStore:
    """Per-run JSON files under ``root/<data set>[-contaminated-<c>pct]/<detector>/seed<seed>-<key[:16]>.json``.

    Args:
      root: the folder (created on the first write).
      settings: benchmark settings that shape the specs (hashed into every key).
    """

    def __init__(self, root: str | os.PathLike, settings: dict):
        self.root = Path(root)
        self.settings = dict(settings)
        self.commit = _git_commit()

    def _path(self, data, i: int, spec) -> tuple[Path, str, dict]:
        """(file, key, the key's parts) of run ``i``: the parts once, since they build a detector."""
        parts = _key_parts(data, i, spec, self.settings)
        key = _sha(parts)
        folder = self.root / _slug(_data_label(data)) / _slug(spec.name)
        return folder / f"seed{int(data.seeds[i])}-{key[:16]}.json", key, parts

    def load(self, data, i: int, spec) -> dict | None:
        """The stored result row of run ``i``, or None if there is none (or it does not match)."""
        path, key, _ = self._path(data, i, spec)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"run store file {path} is unreadable ({err}); delete it to recompute the run") from err
        if stored.get("key") != key or stored.get("format") != STORE_FORMAT:
            return None  # a 16-hex-digit prefix collision, or an older format
        row = dict(stored["row"])
        row["_store"] = {k: stored.get(k) for k in ("device", "commit", "date")} | {"path": str(path)}
        return row

    def save(self, data, i: int, spec, row: dict, device: str) -> Path:
        """Writes run ``i``'s result row atomically (without any ``_store`` note); returns the path."""
        path, key, parts = self._path(data, i, spec)
        row = {k: v for k, v in row.items() if k != "_store"}
        record = {
            "format": STORE_FORMAT, "key": key, "seed": int(data.seeds[i]), "dataset": data.dataset,
            "detector": spec.name, "settings": _stable(self.settings), "commit": self.commit, "device": device,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            # the key's two halves, so a run that stops matching can be told apart: other rows or other detector
            "rows_fingerprint": parts["rows"], "detector_hash": _sha(parts["detector"]), "row": row,
        }
        self._write(path, record)
        return path

    def adopt_format1(self, data, i: int, spec) -> dict | None:
        """Carries a format-1 run of run ``i`` over to the current format, or returns None.

        Format 1 keyed rows by their fitted transform's floats, which differ between platforms,
        so its keys cannot be recomputed. A format-1 file is adopted when it is the only one for
        this seed in the run's folder (data set and detector name) and its stored row agrees
        with this run on protocol, data set, detector, seed, training and test sizes, test
        anomaly ratio, epochs and contamination. It is rewritten in the current format (its
        commit, device and date kept, its old key noted); returns its row like :meth:`load`.
        """
        path, key, parts = self._path(data, i, spec)
        seed = int(data.seeds[i])
        old = []
        for candidate in sorted(path.parent.glob(f"seed{seed}-*.json")):
            try:
                stored = json.loads(candidate.read_text())
            except (OSError, ValueError) as err:
                raise ValueError(f"run store file {candidate} is unreadable ({err}); delete it to recompute the run") from err
            if stored.get("format") == 1:
                old.append((candidate, stored))
        if len(old) != 1:
            return None
        candidate, stored = old[0]
        row = stored["row"]
        want = {"protocol": data.protocol, "dataset": data.dataset, "detector": spec.name, "seed": seed,
                "n_train": data.n_train, "n_test": int(data.labels("test").shape[1]),
                "contamination": float(data.info.get("contamination", 0.0))}
        if any(row.get(k) != v for k, v in want.items()):
            return None
        if abs(row.get("test_anomaly_ratio", -1.0) - float(data.labels("test")[i].mean())) > 1e-12:
            return None
        if spec.factory is not None and row.get("epochs") != spec.fit_args.get("epochs"):
            return None
        record = dict(stored, format=STORE_FORMAT, key=key, settings=_stable(self.settings),
                      rows_fingerprint=parts["rows"], detector_hash=_sha(parts["detector"]),
                      adopted_from={"format": 1, "key": stored.get("key"), "file": candidate.name})
        self._write(path, record)
        if candidate != path:
            candidate.unlink()
        row = dict(record["row"])
        row["_store"] = {k: record.get(k) for k in ("device", "commit", "date")} | {"path": str(path)}
        return row

    @staticmethod
    def _write(path: Path, record: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, indent=1, default=_json_default) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in a run record")


def provenance(rows: list[dict]) -> str:
    """'k on <device> (commit c); ...' over result rows, from their ``_store`` notes (see :meth:`RunStore.load`)."""
    groups: dict[tuple, int] = {}
    for r in rows:
        prov = r.get("_store") or {}
        k = (prov.get("device") or "?", prov.get("commit") or "?")
        groups[k] = groups.get(k, 0) + 1
    return "; ".join(f"{n} on {dev} (commit {c})" for (dev, c), n in sorted(groups.items()))
