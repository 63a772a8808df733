"""``model_card.json``: a human- and machine-readable description of a saved model.

Written into the model folder's version beside the checkpoint (``detector.json`` +
``arrays/``, see :mod:`vaegmm_jax.io.checkpoint`) by the command line, in the same atomic save.
From Python do the same: ``save_detector(det, path, add_files=lambda version:
write_model_card(version, build_model_card(det)))``, or write it into the live version's
folder, ``checkpoint.resolve_checkpoint(path)`` (later saves carry it along).

Sections: detector class and configuration, training settings, data (rows,
row shape, feature names, source file), scaling, threshold and how it was
chosen, training history (full per-epoch values and a summary), metrics (when
labels were available), library versions, device, creation time.

Nothing here prints.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

from vaegmm_jax._version import __version__

__all__ = ["MODEL_CARD_FILE", "build_model_card", "write_model_card", "read_model_card", "add_metrics", "history_summary",
           "library_versions", "device_info"]

MODEL_CARD_FILE = "model_card.json"
CARD_FORMAT = 1


def library_versions(device: bool = False) -> dict[str, str]:
    """Versions of the libraries a model depends on (missing ones omitted), e.g.
    {'python': '3.11.9', 'vaegmm_jax': '0.1.0', 'jax': '0.10.2', 'orbax': '0.12.8', ...};
    with ``device``, also 'device': the default JAX device's kind (e.g. 'cpu', 'NVIDIA H100
    80GB HBM3'), as checkpoints record it."""
    out = {"python": platform.python_version()}
    for dist, key in (
        ("vaegmm_jax", "vaegmm_jax"), ("jax", "jax"), ("jaxlib", "jaxlib"), ("flax", "flax"), ("optax", "optax"),
        ("orbax-checkpoint", "orbax"), ("numpy", "numpy"), ("scikit-learn", "scikit-learn"), ("pandas", "pandas"),
        ("pyarrow", "pyarrow"),
    ):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["vaegmm_jax"] = __version__  # the running code's, also from a source tree that is not installed
    if device:
        out["device"] = str(jax.devices()[0].device_kind)
    return out


def device_info() -> dict[str, Any]:
    """The default JAX backend and device (does not change any JAX configuration)."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": str(devices[0].device_kind),
        "device_count": len(devices),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def history_summary(history: Mapping[str, list[float]]) -> dict[str, dict[str, float | int | None]]:
    """Per term: epochs, first, last, min and the epoch of the min (1-based)."""
    out = {}
    for term, values in history.items():
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            continue
        finite = np.isfinite(v)
        best = int(np.nanargmin(np.where(finite, v, np.nan))) if finite.any() else None
        out[term] = {
            "epochs": int(v.size),
            "first": _num(v[0]),
            "last": _num(v[-1]),
            "min": None if best is None else _num(v[best]),
            "min_epoch": None if best is None else best + 1,
        }
    return out


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return _num(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return repr(obj)


def _input_scaling(detector) -> dict[str, Any] | None:
    scaler = getattr(detector, "scaler", None)
    if scaler is None:
        return None
    return {"kind": (getattr(detector, "fit_config", {}) or {}).get("scaler"),
            "shift": np.asarray(scaler.shift).tolist(), "scale": np.asarray(scaler.scale).tolist()}


def _ensemble(detector) -> dict[str, Any]:
    """How many independently seeded members score, and how their scores are combined."""
    n = int(getattr(detector, "n_members", 1))
    out: dict[str, Any] = {"n_members": n, "member_seeds": [int(s) for s in getattr(detector, "member_seeds", ())]}
    calibration = getattr(detector, "member_calibration", None)
    if n > 1 and calibration is not None:
        out["combination"] = "mean of the members' scores, each standardised by its median and IQR on the training rows"
        out["member_calibration"] = {k: np.asarray(v).tolist() for k, v in calibration.items()}
    failed = getattr(detector, "member_failed_epoch", None)
    if failed is not None and (np.asarray(failed) >= 0).any():
        out["member_failed_epoch"] = np.asarray(failed).tolist()
    return out


def build_model_card(
    detector,
    *,
    data: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    threshold: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    notes: str | None = None,
) -> dict[str, Any]:
    """The card as a dict (JSON-safe).

    Args:
      detector: a fitted detector.
      data: e.g. {'source': path, 'n_rows': N, 'feature_names': [...], 'format': 'csv'}.
      preprocessing: the saved preprocessing (scaler, id/label columns).
      threshold: how the threshold was chosen, e.g. {'method': 'percentile', 'percentile': 95,
        'computed_on': 'training data'}; its value is taken from the detector.
      training: extra training settings (learning rate, epochs requested, ...).
      metrics: metrics computed with labels, e.g. {'auroc': ..., 'on': 'test.csv'}.
      notes: free text.
    """
    try:
        config = detector.config_dict()
    except NotImplementedError:
        config = {}
    history = {k: [float(x) for x in v] for k, v in (getattr(detector, "history", None) or {}).items()}
    thr = dict(threshold or {})
    thr["value"] = None if detector.threshold is None else float(detector.threshold)
    data = dict(data or {})
    if getattr(detector, "input_shape", None) is not None:
        data.setdefault("row_shape", list(detector.input_shape))
    card = {
        "card_format": CARD_FORMAT,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "detector": {
            "class": type(detector).__name__,
            "config": config,
            "data_type": getattr(detector, "data_type", None),
            # the per-feature scaling fitted on the training rows, applied inside every score
            "input_scaling": _input_scaling(detector),
            "ensemble": _ensemble(detector),
        },
        "training": {
            "fit_config": dict(getattr(detector, "fit_config", {}) or {}),
            "epochs_done": int(getattr(detector, "epochs_done", 0) or 0),
            **dict(training or {}),
        },
        "data": data,
        "preprocessing": dict(preprocessing or {}),
        "threshold": thr,
        "history": history,
        "history_summary": history_summary(history),
        "metrics": dict(metrics) if metrics else {},
        "versions": library_versions(),
        "device": device_info(),
    }
    if notes:
        card["notes"] = notes
    return _jsonable(card)


def write_model_card(model_dir: str | os.PathLike, card: Mapping[str, Any]) -> Path:
    """Writes ``model_card.json`` into ``model_dir`` (atomically)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"no model folder {model_dir}")
    path = model_dir / MODEL_CARD_FILE
    tmp = model_dir / (MODEL_CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(_jsonable(card), indent=2, allow_nan=False))
    os.replace(tmp, path)
    return path


def read_model_card(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The card, or None when the folder has none."""
    path = Path(model_dir) / MODEL_CARD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is corrupt: {err}") from err


def add_metrics(model_dir: str | os.PathLike, name: str, metrics: Mapping[str, Any]) -> Path | None:
    """Records an evaluation under ``card['metrics'][name]`` (no-op without a card)."""
    card = read_model_card(model_dir)
    if card is None:
        return None
    entry = dict(metrics)
    entry.setdefault("evaluated_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    card.setdefault("metrics", {})[name] = entry
    return write_model_card(model_dir, card)
