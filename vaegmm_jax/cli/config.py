"""The detector ``fit`` trains and its training settings, from a preset, the ``--config`` file
and the flags (preset < config < flags), all checked before any training.

A configuration file is a JSON object::

    {"type": "vaegmm"|"aegmm"|"vae", "preset": NAME,
     "detector": {constructor keyword arguments},
     "fit": {fit keyword arguments, "learning_rate": ...},
     "scaling": "minmax"|"standard"|"none",
     "threshold_perc": P | "contamination": C}
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optax

from vaegmm_jax.cli.args import check_positive_int
from vaegmm_jax.detectors.fit_driver import FitRun
from vaegmm_jax.cli.errors import InputError, input_errors
from vaegmm_jax.detectors import presets
from vaegmm_jax.detectors.loading import detector_class
from vaegmm_jax.io.preprocessing import Scaler

__all__ = ["DETECTORS", "CONFIG_KEYS", "load_config", "build_detector", "fit_detector"]

#: --detector's choices and the classes they build
DETECTORS = {"vaegmm": "OutlierVAEGMM", "aegmm": "OutlierAEGMM", "vae": "OutlierVAE"}
_CLASS_TO_KIND = {v: k for k, v in DETECTORS.items()}
CONFIG_KEYS = {"type", "preset", "detector", "fit", "scaling", "threshold_perc", "contamination"}
#: the reconstruction likelihoods a fit's ``cov_elbo`` names (one of them)
_COV_ELBO_KINDS = ("sim", "cov_diag", "cov_full")


def load_config(path: str | None) -> dict[str, Any]:
    """The --config file's object ({} without one), its keys and their types checked."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config file {p} not found")
    try:
        cfg = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"--config file {p} is not valid JSON: {err}") from err
    if not isinstance(cfg, dict):
        raise InputError(f"--config file {p} must hold a JSON object")
    unknown = set(cfg) - CONFIG_KEYS
    if unknown:
        raise InputError(f"--config: unknown keys {sorted(unknown)}; allowed: {sorted(CONFIG_KEYS)}")
    for key in ("detector", "fit"):
        if key in cfg and not isinstance(cfg[key], dict):
            raise InputError(f"--config: {key!r} must be an object of keyword arguments")
    if cfg.get("type") is not None and cfg["type"] not in DETECTORS:
        raise InputError(f"--config: unknown type {cfg['type']!r}; use one of {', '.join(DETECTORS)}")
    if cfg.get("scaling") is not None and cfg["scaling"] not in Scaler.KINDS:
        raise InputError(f"--config: unknown scaling {cfg['scaling']!r}; use one of {', '.join(Scaler.KINDS)}")
    return cfg


def _optimizer(lr: Any, name: str):
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"{name} must be a positive number, got {lr!r}")
    return optax.adam(float(lr))


def _from_preset(preset: str, kind: str | None, det_kw: dict):
    """(detector, its fit keyword arguments, the preset's learning rate, its kind)."""
    if preset not in presets.PRESETS:
        raise InputError(f"unknown preset {preset!r}; available: {', '.join(sorted(presets.PRESETS))}")
    # the configuration's detector settings: checked by the constructor
    with input_errors("bad detector setting in the configuration: ", also=(TypeError,)):
        det = presets.make_detector(preset, **det_kw)
    actual = _CLASS_TO_KIND[type(det).__name__]
    if kind is not None and actual != kind:
        raise InputError(f"preset {preset!r} builds a {type(det).__name__}, not --detector {kind}")
    return det, dict(presets.fit_kwargs(preset)), presets.PRESETS[preset].learning_rate, actual


def build_detector(
    kind: str | None,
    preset: str | None,
    detector_kwargs: dict | None,
    fit_kwargs: dict | None,
    *,
    seed: int | None,
    epochs: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    members: int | None = None,
):
    """The detector and the keyword arguments for its fit (preset < config < flags).

    Returns (detector, fit kwargs, description of the training settings).
    """
    det_kw = dict(detector_kwargs or {})
    if seed is not None:
        det_kw["seed"] = int(seed)
    if members is not None:
        det_kw["n_members"] = int(members)
    fit_kw: dict[str, Any] = {}
    preset_lr = None
    if preset is not None:
        det, fit_kw, preset_lr, kind = _from_preset(preset, kind, det_kw)
    else:
        if kind is None:
            raise InputError("choose a model with --detector vaegmm|aegmm|vae (or --preset NAME)")
        cls = detector_class(DETECTORS[kind])
        with input_errors("bad detector setting in the configuration: ", also=(TypeError,)):
            det = cls(**det_kw)
    fit_kw.update(dict(fit_kwargs or {}))
    lr = fit_kw.pop("learning_rate", None)
    if learning_rate is not None:
        lr = learning_rate
    if epochs is not None:
        fit_kw["epochs"] = int(epochs)
    if batch_size is not None:
        fit_kw["batch_size"] = int(batch_size)
    if lr is not None:
        fit_kw["optimizer"] = _optimizer(lr, "learning_rate")
    if isinstance(fit_kw.get("cov_elbo"), dict):
        fit_kw["cov_elbo"] = dict(fit_kw["cov_elbo"])
    _check_fit_settings(det, fit_kw)
    settings = {
        "detector_kind": kind,
        "preset": preset,
        # None: the detector's default optimizer (recorded in its fit_config)
        "learning_rate": lr if lr is not None else preset_lr,
        "fit_kwargs": {k: v for k, v in fit_kw.items() if k != "optimizer"},
    }
    return det, fit_kw, settings


def _check_fit_settings(det, fit_kw: dict) -> None:
    """The fit settings of the configuration (and the flags), checked against the detector's
    ``fit``: known names, positive integer epochs and batch size, finite numbers where the
    fit's default is a number, and a one-entry ``cov_elbo``."""
    name = type(det).__name__
    params = {name: p for name, p in inspect.signature(det.fit).parameters.items()
              if name != "X" and p.kind is not inspect.Parameter.VAR_KEYWORD}
    # the engine's arguments every detector's fit takes as keywords (**run)
    params.update({name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in FitRun.__annotations__})
    unknown = sorted(set(fit_kw) - set(params))
    if unknown:
        raise InputError(f"bad fit setting for {name}: unexpected {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(sorted(params))}, learning_rate")
    for key in ("epochs", "batch_size"):
        if fit_kw.get(key) is not None:
            fit_kw[key] = check_positive_int(fit_kw[key], f"fit setting {key!r}")
    for key, value in fit_kw.items():
        default = params[key].default
        if isinstance(default, float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
                raise InputError(f"fit setting {key!r} must be a finite number, got {value!r}")
    cov = fit_kw.get("cov_elbo")
    if cov is not None:
        if not (isinstance(cov, dict) and len(cov) == 1 and next(iter(cov)) in _COV_ELBO_KINDS):
            raise InputError(f"fit setting 'cov_elbo' must be an object with one of {', '.join(_COV_ELBO_KINDS)}, "
                             f"got {cov!r}")
        sim = cov.get("sim")
        if "sim" in cov and (isinstance(sim, bool) or not isinstance(sim, (int, float)) or not sim > 0
                             or not math.isfinite(sim)):
            raise InputError(f"fit setting 'cov_elbo': sim must be a positive number, got {sim!r}")


def fit_detector(det, X: np.ndarray, fit_kw: dict, verbose: bool) -> dict:
    """Trains the detector (its settings were checked by :func:`build_detector`)."""
    kw = dict(fit_kw)
    kw.setdefault("verbose", verbose)
    return det.fit(X, **kw)
