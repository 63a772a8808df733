"""Tests for vaegmm_jax.evaluation.metrics: against scikit-learn and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from vaegmm_jax.evaluation import metrics as M


def _random_case(seed: int, n: int = 500, rate: float = 0.2):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < rate).astype(np.int64)
    scores = rng.normal(size=n) + 1.5 * labels
    return labels, scores


# --------------------------------------------------------------------------- #
# Against scikit-learn on random data
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("seed", range(5))
def test_precision_recall_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 300)
    y_pred = rng.integers(0, 2, 300)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
    assert M.precision_recall_f1(y_true, y_pred) == pytest.approx((p, r, f), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ratio", [0.025, 0.15, 0.2])
def test_at_ratio_matches_manual_protocol(seed, ratio):
    labels, scores = _random_case(seed)
    thr = np.percentile(scores, 100 * (1 - ratio))
    pred = (scores > thr).astype(int)
    p, r, f, _ = precision_recall_fscore_support(labels, pred, average="binary", zero_division=0)
    res = M.precision_recall_f1_at_ratio(scores, labels, ratio)
    assert res == pytest.approx((p, r, f), abs=1e-12)
    assert M.threshold_at_ratio(scores, ratio) == thr
    # Continuous scores: about ratio * N rows are flagged.
    assert abs(pred.sum() - ratio * scores.size) <= 1


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_ap_match_sklearn(seed):
    labels, scores = _random_case(seed)
    assert M.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert M.average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5))
def test_f1_optimal_threshold_matches_brute_force(seed):
    labels, scores = _random_case(seed, n=300)
    # Ties in the scores exercise scikit-learn's threshold de-duplication.
    scores = np.round(scores, 1)
    thr, f1 = M.f1_optimal_threshold(labels, scores)
    best_f1, best_thr = -1.0, None
    for t in np.unique(scores):  # ascending: first maximum = lowest threshold
        _, _, f, _ = precision_recall_fscore_support(
            labels, (scores >= t).astype(int), average="binary", zero_division=0
        )
        if f > best_f1 + 1e-12:
            best_f1, best_thr = f, t
    assert f1 == pytest.approx(best_f1, abs=1e-12)
    assert thr == best_thr
    assert isinstance(thr, float) and isinstance(f1, float)


# --------------------------------------------------------------------------- #
# Hand-computed cases
# --------------------------------------------------------------------------- #


def test_precision_recall_f1_by_hand():
    assert M.precision_recall_f1([1, 1, 0, 0], [1, 0, 1, 0]) == (0.5, 0.5, 0.5)
    assert M.precision_recall_f1([1, 1, 0, 0], [1, 1, 1, 0]) == pytest.approx((2 / 3, 1.0, 0.8))
    # Nothing flagged: precision is 0/0 -> 0, F1 -> 0.
    assert M.precision_recall_f1([1, 0, 0], [0, 0, 0]) == (0.0, 0.0, 0.0)
    # No anomalies in the data: recall is 0/0 -> 0.
    assert M.precision_recall_f1([0, 0, 0], [1, 0, 0]) == (0.0, 0.0, 0.0)
    # Booleans are accepted; the result is a named tuple.
    res = M.precision_recall_f1(np.array([True, False]), np.array([True, False]))
    assert res.precision == 1.0 and res.recall == 1.0 and res.f1 == 1.0


def test_at_ratio_by_hand():
    scores = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    labels = np.array([0] * 8 + [1] * 2)
    # 80th percentile = 0.82 -> flags 0.9 and 1.0: both anomalies.
    assert M.threshold_at_ratio(scores, 0.2) == pytest.approx(0.82)
    assert M.precision_recall_f1_at_ratio(scores, labels, 0.2) == pytest.approx((1.0, 1.0, 1.0))
    # 70th percentile = 0.73 -> flags 0.8, 0.9, 1.0: P = 2/3, R = 1, F1 = 0.8.
    assert M.precision_recall_f1_at_ratio(scores, labels, 0.3) == pytest.approx((2 / 3, 1.0, 0.8))


def test_at_ratio_ties_are_not_flagged():
    # All scores tied: the threshold equals the score, and '>' flags nothing.
    assert M.precision_recall_f1_at_ratio(np.ones(10), [1] + [0] * 9, 0.2) == (0.0, 0.0, 0.0)
    # Ties at the threshold: only the strictly larger score is flagged.
    scores = np.array([0.0] * 6 + [1.0] * 3 + [2.0])
    labels = np.array([0] * 6 + [0, 0, 1] + [1])
    assert M.threshold_at_ratio(scores, 0.2) == 1.0
    assert M.precision_recall_f1_at_ratio(scores, labels, 0.2) == pytest.approx((1.0, 0.5, 2 / 3))


def test_auroc_ap_f1_by_hand():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.4, 0.35, 0.8]
    assert M.auroc(labels, scores) == pytest.approx(0.75)
    assert M.average_precision(labels, scores) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    # Thresholds 0.1 / 0.35 / 0.4 / 0.8 give F1 2/3, 0.8, 0.5, 2/3.
    assert M.f1_optimal_threshold(labels, scores) == pytest.approx((0.35, 0.8))


def test_f1_optimal_threshold_is_nan_safe():
    # The two highest scores are normal: P = R = 0 there, F1 is 0/0.
    labels = [1, 0, 0]
    scores = [0.1, 0.5, 0.9]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero RuntimeWarning
        thr, f1 = M.f1_optimal_threshold(labels, scores)
    assert (thr, f1) == pytest.approx((0.1, 0.5))
    # Perfect separation.
    assert M.f1_optimal_threshold([0, 0, 1], [0.0, 0.1, 5.0]) == pytest.approx((5.0, 1.0))


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #


def test_validation_errors():
    s = np.array([0.1, 0.2, 0.3, 0.4])
    y = np.array([0, 1, 0, 1])
    for fn in (M.auroc, M.average_precision, M.f1_optimal_threshold):
        with pytest.raises(ValueError, match="same length"):
            fn(y, s[:3])
        with pytest.raises(ValueError, match="1-D"):
            fn(y[:, None], s)
        with pytest.raises(ValueError, match="1-D"):
            fn(y, s[:, None])
        with pytest.raises(ValueError, match="non-finite"):
            fn(y, np.array([0.1, np.nan, 0.3, 0.4]))
        with pytest.raises(ValueError, match="non-finite"):
            fn(y, np.array([0.1, np.inf, 0.3, 0.4]))
        with pytest.raises(ValueError, match="binary"):
            fn(np.array([0, 2, 0, 1]), s)
        with pytest.raises(ValueError, match="binary"):
            fn(np.array([0, -1, 0, 1]), s)
        with pytest.raises(ValueError, match="only one class"):
            fn(np.zeros(4, int), s)
        with pytest.raises(ValueError, match="empty"):
            fn(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="same length"):
        M.precision_recall_f1_at_ratio(s, y[:3], 0.2)
    with pytest.raises(ValueError, match="non-finite"):
        M.precision_recall_f1_at_ratio(np.array([0.1, np.nan, 0.3, 0.4]), y, 0.2)
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            M.precision_recall_f1_at_ratio(s, y, bad)
    # Swapped arguments (labels where scores belong) are caught by the label check.
    with pytest.raises(ValueError, match="binary"):
        M.precision_recall_f1_at_ratio(y, s, 0.2)
    with pytest.raises(ValueError, match="y_pred"):
        M.precision_recall_f1(y, s)
    with pytest.raises(ValueError, match="numeric"):
        M.auroc(y, np.array(["a", "b", "c", "d"]))
