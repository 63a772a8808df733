"""Outlier-detection metrics (NumPy / scikit-learn, host side).

Conventions: ``labels`` are binary with 1 = anomaly; ``scores`` are
higher-is-more-anomalous (e.g. sample energy). All inputs are 1-D arrays of the
same length; scores must be finite (a NaN score is a model bug, not a rank).

Argument order follows the project's API: the ratio protocol takes
``(scores, labels, ratio)`` while the scikit-learn style functions take
``(labels, scores)``. Swapped arguments are usually caught by the binary-label
check.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

__all__ = [
    "PRF",
    "check_binary_labels",
    "threshold_at_ratio",
    "precision_recall_f1",
    "precision_recall_f1_at_ratio",
    "auroc",
    "average_precision",
    "f1_optimal_threshold",
]


class PRF(NamedTuple):
    """Precision, recall and F1 of the anomaly class (floats in [0, 1])."""

    precision: float
    recall: float
    f1: float


def _as_1d(x, what: str) -> np.ndarray:
    """``x`` as a non-empty (N,) array; a ValueError naming ``what`` otherwise."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    return arr


def check_binary_labels(x, what: str = "labels") -> np.ndarray:
    """``x`` as an (N,) int64 array of 0 (normal) and 1 (anomaly); a ValueError naming ``what``
    unless it is a non-empty 1-D boolean or numeric array of those two values."""
    arr = _as_1d(x, what)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what} must be numeric or boolean 0/1, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        vals = np.unique(arr[bad])[:5]
        raise ValueError(f"{what} must be binary (0 = normal, 1 = anomaly); found other values, e.g. {vals}")
    return arr.astype(np.int64)


def _check_scores(x, what: str = "scores") -> np.ndarray:
    """``x`` as an (N,) float64 array of finite numbers; a ValueError naming ``what`` otherwise."""
    arr = _as_1d(x, what)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(
            f"{what} contain {int((~finite).sum())} non-finite values (NaN/inf); "
            "fix the model or drop those rows before computing metrics"
        )
    return arr.astype(np.float64)


def _check_same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    """A ValueError naming ``na`` and ``nb`` unless the (N,) arrays a and b have the same length."""
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same length, got {a.shape[0]} and {b.shape[0]}")


def _check_both_classes(labels: np.ndarray) -> None:
    """A ValueError unless the (N,) 0/1 labels hold both classes."""
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        raise ValueError(
            f"labels contain only one class ({n_pos} anomalies of {labels.size}); "
            "this metric needs both normal and anomalous rows"
        )


def _ratio_div(num: float, den: float) -> float:
    """num / den, and 0.0 when den is 0 (like scikit-learn's zero_division=0)."""
    return float(num) / float(den) if den > 0 else 0.0


def precision_recall_f1(y_true, y_pred) -> PRF:
    """Precision, recall and F1 for the anomaly class (label 1).

    Args:
        y_true: (N,) binary ground truth, 1 = anomaly.
        y_pred: (N,) binary predictions, 1 = flagged as anomaly.

    Returns:
        :class:`PRF`. Undefined ratios (no predicted positives for precision,
        no true positives in the data for recall, P + R = 0 for F1) are 0.0,
        matching ``sklearn.metrics.precision_recall_fscore_support(...,
        zero_division=0)``.
    """
    y_true = check_binary_labels(y_true, "y_true")
    y_pred = check_binary_labels(y_pred, "y_pred")
    _check_same_length(y_true, y_pred, "y_true", "y_pred")
    tp = int(np.sum((y_true == 1) & (y_pred == 1)))
    precision = _ratio_div(tp, int(y_pred.sum()))
    recall = _ratio_div(tp, int(y_true.sum()))
    f1 = _ratio_div(2 * precision * recall, precision + recall)
    return PRF(precision, recall, f1)


def threshold_at_ratio(scores, ratio: float) -> float:
    """The DAGMM-protocol threshold: ``np.percentile(scores, 100 * (1 - ratio))``.

    Uses NumPy's default linear interpolation between order statistics.

    Args:
        scores: (N,) finite anomaly scores, higher = more anomalous.
        ratio: expected anomaly fraction, in (0, 1).
    """
    scores = _check_scores(scores)
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    return float(np.percentile(scores, 100.0 * (1.0 - ratio)))


def precision_recall_f1_at_ratio(scores, labels, ratio: float) -> PRF:
    """Flag the top ``ratio`` fraction of scores and score the flags (DAGMM protocol).

    ``threshold = np.percentile(scores, 100 * (1 - ratio))`` and
    ``predicted = scores > threshold`` (strict), then :func:`precision_recall_f1`.

    Ties: rows whose score equals the threshold are *not* flagged. Without
    ties about ``ratio * N`` rows (within one, from the percentile's linear
    interpolation) are flagged; with ties at the threshold (saturated energies,
    duplicated rows) fewer may be, possibly none. There is no random tie
    breaking, so the result is deterministic. This matches the DAGMM
    reference evaluation.

    Args:
        scores: (N,) finite anomaly scores, higher = more anomalous.
        labels: (N,) binary ground truth, 1 = anomaly.
        ratio: fraction to flag, in (0, 1) (the data's anomaly fraction in the
            DAGMM protocol, e.g. 0.2 for KDDCUP).

    Returns:
        :class:`PRF` of the anomaly class.
    """
    scores = _check_scores(scores)
    labels = check_binary_labels(labels, "labels")
    _check_same_length(scores, labels, "scores", "labels")
    threshold = threshold_at_ratio(scores, ratio)
    return precision_recall_f1(labels, (scores > threshold).astype(np.int64))


def _ranking_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels (N,), scores (N,)) for a ranking metric: binary labels with both classes, finite scores."""
    labels = check_binary_labels(labels, "labels")
    scores = _check_scores(scores)
    _check_same_length(labels, scores, "labels", "scores")
    _check_both_classes(labels)
    return labels, scores


def auroc(labels, scores) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``).

    Args:
        labels: (N,) binary, 1 = anomaly; both classes must be present.
        scores: (N,) finite scores, higher = more anomalous.
    """
    labels, scores = _ranking_inputs(labels, scores)
    return float(roc_auc_score(labels, scores))


def average_precision(labels, scores) -> float:
    """Average precision, the step-wise area under the precision-recall curve
    (``sklearn.metrics.average_precision_score``).

    Args:
        labels: (N,) binary, 1 = anomaly; both classes must be present.
        scores: (N,) finite scores, higher = more anomalous.
    """
    labels, scores = _ranking_inputs(labels, scores)
    return float(average_precision_score(labels, scores))


def f1_optimal_threshold(labels, scores) -> tuple[float, float]:
    """The score threshold that maximises F1, and that F1.

    Runs ``sklearn.metrics.precision_recall_curve`` and computes
    ``F1 = 2 P R / (P + R)`` at each candidate threshold, with 0/0 set to NaN
    (not 0 and not a warning) and skipped by ``np.nanargmax``. Among equal
    maxima the lowest threshold wins (the first in scikit-learn's order).

    Apply it as ``scores >= threshold`` (inclusive, scikit-learn's
    convention; note :func:`precision_recall_f1_at_ratio` uses ``>``).

    Args:
        labels: (N,) binary, 1 = anomaly; both classes must be present.
        scores: (N,) finite scores, higher = more anomalous.

    Returns:
        ``(threshold, f1)`` as Python floats.
    """
    labels, scores = _ranking_inputs(labels, scores)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last (precision=1, recall=0) point has no threshold: drop it.
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2.0 * p * r / np.where(denom > 0, denom, 1.0), np.nan)
    if np.all(np.isnan(f1)):  # cannot happen with a positive present; be explicit anyway
        raise ValueError("F1 is undefined at every threshold")
    best = int(np.nanargmax(f1))
    return float(thresholds[best]), float(f1[best])
