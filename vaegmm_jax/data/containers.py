"""The containers the loaders return: a tabular data set and a set of images, as NumPy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TabularDataset", "ImageDataset"]


@dataclass(frozen=True)
class TabularDataset:
    """A tabular data set as NumPy arrays.

    Attributes:
        X: (N, F) float32 features, unscaled.
        y: (N,) int64 binary labels; ``1`` marks the anomaly class of the
            protocol the loader was asked for (see ``anomaly``).
        feature_names: F column names, or ``None`` when the file has none.
        continuous: (F,) bool, ``True`` for columns that should be scaled
            (numeric columns), ``False`` for one-hot indicator columns.
        name: short data set name.
        anomaly: plain-words description of what ``y == 1`` means.
        label_names: for KDD, the sorted distinct raw labels (``"normal."``,
            ``"smurf."``, ...); ``None`` otherwise.
        label_codes: for KDD, (N,) int16 index into ``label_names`` per row;
            ``None`` otherwise.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...] | None
    continuous: np.ndarray
    name: str
    anomaly: str
    label_names: tuple[str, ...] | None = None
    label_codes: np.ndarray | None = None


@dataclass(frozen=True)
class ImageDataset:
    """Images as NumPy arrays.

    Attributes:
        images: (N, 28, 28, 1) float32 in [0, 1] (raw bytes / 255).
        labels: (N,) int64 class labels 0..9.
        class_names: the 10 class names, indexed by label.
        name: short data set name and split, e.g. ``"mnist-test"``.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
