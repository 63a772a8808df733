"""The model folder that ``fit`` writes and ``score``/``evaluate``/``info`` read.

It holds the pointer ``CURRENT`` and the version folder it names (see
:mod:`vaegmm_jax.io.checkpoint`); the version holds the detector checkpoint
(``detector.json``, ``arrays/``), ``preprocessing.json``, ``model_card.json`` and ``plots/``.
A new model is written as a whole new version before the pointer moves, and a reader takes
every file from the one version the pointer named when it started.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

from vaegmm_jax.cli.errors import InputError, input_errors
from vaegmm_jax.detectors.loading import load_folder
from vaegmm_jax.io.checkpoint import (
    META_FILE,
    POINTER_FILE,
    is_save_debris,
    read_live,
    resolve_checkpoint,
    save_detector,
)
from vaegmm_jax.io.messages import one_line
from vaegmm_jax.io.model_card import MODEL_CARD_FILE, build_model_card, read_model_card, write_model_card
from vaegmm_jax.io.preprocessing import PREPROCESSING_FILE, Preprocessing, load_preprocessing, save_preprocessing

__all__ = [
    "MODEL_FILES",
    "is_model_dir",
    "check_parents",
    "check_out_dir",
    "check_model_dir",
    "load_model",
    "read_card",
    "save_model",
]

#: what ``fit`` writes beside the checkpoint: a new model defines all of them (a previous
#: model's copies are never carried over, so --no-plots leaves no stale plots)
MODEL_FILES = (PREPROCESSING_FILE, MODEL_CARD_FILE, "plots")


def is_model_dir(p: Path) -> bool:
    """A model folder: a versioned one (with the pointer file) or one of the earlier layout."""
    return (p / POINTER_FILE).is_file() or (p / META_FILE).is_file()


def check_parents(path: Path, flag: str) -> None:
    """Refuses a path whose existing ancestor is a file (``--out afile/x``): found before any work."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuses to replace anything but an earlier model folder (saving replaces the folder)."""
    check_parents(out, "--out")
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    # a folder holding only what a killed first fit left (a half-written version) counts as
    # empty: the save removes that debris
    if all(is_save_debris(e.name) for e in out.iterdir()):
        return
    if not is_model_dir(out):
        raise InputError(f"--out {out} exists and is not a model folder; choose a new or empty folder")
    if not overwrite:
        raise InputError(f"--out {out} already holds a model; pass --overwrite to replace it")


def check_model_dir(model_dir: str | os.PathLike, hint: str = "") -> Path:
    p = Path(model_dir)
    if not p.exists():
        raise FileNotFoundError(f"no model folder {p}")
    if not p.is_dir() or not is_model_dir(p):
        raise InputError(f"{p} is not a model folder (no {POINTER_FILE} or {META_FILE}){hint}")
    return p


def _check_scaling_fits(prep: Preprocessing | None, det, folder: Path) -> None:
    """A preprocessing.json whose scaling was fitted on another number of features than the
    detector reads is damaged (or from another model): named now, not at the first block."""
    n = prep.scaler.n_features if prep is not None else None
    want = math.prod(det.input_shape)
    if n is not None and n != want:
        raise InputError(f"{folder / PREPROCESSING_FILE} does not belong to this model: its scaling has {n} "
                         f"features, the detector reads {want}")


def load_model(model_dir: str | os.PathLike):
    """(detector, preprocessing or None, the version's folder), all of one version of the model."""
    p = check_model_dir(model_dir, "; pass the --out folder of 'vaegmm fit'")

    def read(live):
        # the detector and its scaling from the same version folder: a concurrent fit --overwrite
        # can never pair a new detector with the old preprocessing
        det = load_folder(live.folder, {})
        with input_errors():
            prep = load_preprocessing(live.folder)
        _check_scaling_fits(prep, det, live.folder)
        return det, prep, live.folder

    return read_live(p.resolve(), read)  # Orbax needs an absolute path


def read_card(folder: Path) -> dict | None:
    """The version's model card (None without one); InputError naming a damaged one."""
    try:
        return read_model_card(folder)
    except ValueError as err:  # not UTF-8 (UnicodeDecodeError) or not JSON: name the file
        raise InputError(f"{folder / MODEL_CARD_FILE} is corrupt: {one_line(err)}") from err


def save_model(out: Path, det, prep: Preprocessing, *, data_info: dict, threshold_info: dict, training: dict,
               metrics: dict | None, plots: Callable[[Path], Any] | None = None) -> Path:
    """Saves detector, preprocessing, model card and (``plots(folder)``) plots as one new
    version of the model folder ``out``; returns the version's folder.

    Every file is written into the new version before it goes live: a failure or a kill
    at any point leaves the previous model, all of its files, as it was.
    """
    card = build_model_card(det, data=data_info, preprocessing=prep.to_dict(), threshold=threshold_info,
                            training=training, metrics=metrics)

    def add_files(folder: Path) -> None:
        save_preprocessing(folder, prep)
        write_model_card(folder, card)
        if plots is not None:
            plots(folder / "plots")

    save_detector(det, out, add_files=add_files, replace=MODEL_FILES)
    return resolve_checkpoint(out)
