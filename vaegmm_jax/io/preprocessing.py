"""What the command line does to the rows before a detector sees them, saved with the model:
the feature columns, the identifier and label columns, and a per-feature scaling fitted on
the training rows (``preprocessing.json`` in the model's version folder).

The scaling's statistics are :func:`vaegmm_jax.core.scaling.fit_scaler`'s (the detectors'
own input scaling: one implementation of min-max and z-scoring). They are applied here in
float64 and the result cast to float32, as the files written before this module used them,
so a saved ``preprocessing.json`` transforms rows to the same values it always did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaegmm_jax.core.scaling import fit_scaler
from vaegmm_jax.io.checkpoint import POINTER_FILE, resolve_checkpoint
from vaegmm_jax.io.messages import QUOTE_LIMIT, one_line

__all__ = [
    "PREPROCESSING_FILE",
    "PREPROCESSING_FORMAT",
    "Scaler",
    "Preprocessing",
    "save_preprocessing",
    "load_preprocessing",
]

#: the JSON file, in the model folder, that holds scaling and column choices.
PREPROCESSING_FILE = "preprocessing.json"
PREPROCESSING_FORMAT = 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Scaler:
    """Per-feature affine scaling ``(x - offset) / scale`` fitted on training rows.

    kind: 'minmax' (to [0, 1] on the training rows), 'standard' (zero mean, unit
    variance) or 'none'. The statistics are those of
    :func:`vaegmm_jax.core.scaling.fit_scaler` (float64 sums, stored as float32 values): a
    column that is constant on the training rows gets scale 1 (it is only shifted).
    Rows of any shape are scaled per element of the flattened row.
    """

    kind: str = "none"
    offset: np.ndarray | None = None
    scale: np.ndarray | None = None

    KINDS = ("minmax", "standard", "none")

    @classmethod
    def fit(cls, X: np.ndarray, kind: str = "minmax") -> "Scaler":
        if kind not in cls.KINDS:
            raise ValueError(f"unknown scaling {kind!r}; use one of {', '.join(cls.KINDS)}")
        if kind == "none":
            return cls("none")
        fitted = fit_scaler(np.asarray(X), kind)
        return cls(kind, np.asarray(fitted.shift, np.float64), np.asarray(fitted.scale, np.float64))

    @property
    def n_features(self) -> int | None:
        """How many (flattened) features the scaling was fitted on; None for 'none'."""
        return None if self.offset is None else int(self.offset.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X scaled, float32, in X's shape (float64 arithmetic: the values saved models always gave).

        A scaled value beyond float32's range (a row far outside the training rows' spread)
        saturates at float32's largest value, as the detectors' own input conversion does,
        rather than becoming inf: such a row scores (as the outlier it is) instead of failing.
        """
        if self.kind == "none":
            return np.asarray(X, dtype=np.float32)
        shape = X.shape
        flat = np.asarray(X, dtype=np.float64).reshape(shape[0], -1)
        if flat.shape[1] != self.offset.shape[0]:
            raise ValueError(f"the scaler was fitted on {self.offset.shape[0]} features, got {flat.shape[1]}")
        scaled = (flat - self.offset) / self.scale
        np.clip(scaled, -_FLOAT32_MAX, _FLOAT32_MAX, out=scaled)
        return scaled.astype(np.float32).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "minmax":
            out.update(min=self.offset.tolist(), range=self.scale.tolist())
        elif self.kind == "standard":
            out.update(mean=self.offset.tolist(), std=self.scale.tolist())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaler":
        kind = d.get("kind")
        try:
            if kind == "none":
                return cls("none")
            if kind == "minmax":
                return cls(kind, np.asarray(d["min"], np.float64), np.asarray(d["range"], np.float64))
            if kind == "standard":
                return cls(kind, np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64))
        except KeyError as err:
            raise ValueError(f"scaler entry lacks {err}") from err
        raise ValueError(f"unknown scaler kind {kind!r}")


@dataclass
class Preprocessing:
    """What the command line did to the data before the detector saw it (saved as JSON)."""

    feature_names: list[str] | None
    scaler: Scaler = field(default_factory=Scaler)
    id_column: str | None = None
    label_column: str | None = None
    input_format: str | None = None
    row_shape: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PREPROCESSING_FORMAT,
            "feature_names": self.feature_names,
            "scaler": self.scaler.to_dict(),
            "id_column": self.id_column,
            "label_column": self.label_column,
            "input_format": self.input_format,
            "row_shape": self.row_shape,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        if d.get("format_version") != PREPROCESSING_FORMAT:
            raise ValueError(f"unsupported preprocessing format {d.get('format_version')!r}")
        return cls(
            feature_names=d.get("feature_names"),
            scaler=Scaler.from_dict(d.get("scaler") or {"kind": "none"}),
            id_column=d.get("id_column"),
            label_column=d.get("label_column"),
            input_format=d.get("input_format"),
            row_shape=d.get("row_shape"),
        )


def _version_folder(model_dir: str | os.PathLike) -> Path:
    """The folder of the model's live version when ``model_dir`` is a versioned model folder
    (it holds the pointer file), else ``model_dir`` itself (a version folder, an earlier
    unversioned model folder, or any folder)."""
    model_dir = Path(model_dir)
    if (model_dir / POINTER_FILE).is_file():
        return resolve_checkpoint(model_dir)
    return model_dir


def save_preprocessing(model_dir: str | os.PathLike, prep: Preprocessing) -> Path:
    """Writes ``preprocessing.json`` (atomically) into a model's folder.

    Given a versioned model folder, it goes into the live version, in place. To write it
    together with a new detector (one unit), pass ``add_files`` to
    :func:`vaegmm_jax.save_detector` and call this on the folder it is given, as ``fit`` does.
    """
    path = _version_folder(model_dir) / PREPROCESSING_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(prep.to_dict(), indent=2))
    os.replace(tmp, path)
    return path


def load_preprocessing(model_dir: str | os.PathLike) -> Preprocessing | None:
    """The saved preprocessing (of the live version, for a versioned model folder), or None
    when there is none (a model saved from Python). ValueError naming the file when it is corrupt."""
    path = _version_folder(model_dir) / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return Preprocessing.from_dict(data)
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError, KeyError) as err:
        raise ValueError(f"{path} is corrupt: {one_line(err, QUOTE_LIMIT)}") from err
