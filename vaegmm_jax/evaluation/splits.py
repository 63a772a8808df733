"""Seeded splits of labelled rows into training and evaluation rows (all index arrays, 1 = anomaly).

Every split is drawn from the run's seed and is stratified by label, so every seed gives
parts of the same sizes (the runs of a protocol can then train as one vmapped program).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vaegmm_jax.evaluation.metrics import check_binary_labels

__all__ = [
    "Split",
    "stratified_split",
    "dagmm_split",
    "dagmm_validation_split",
    "create_outlier_batch",
]


@dataclass(frozen=True)
class Split:
    """Row indices of one run (sorted, int64).

    Attributes:
      train: (n_train,) rows to train on.
      test: (n_test,) rows to evaluate on (disjoint from ``train``).
      dropped: (n_dropped,) rows of the train half not used for training (the
        anomalies the protocol removes); disjoint from both.
      val: (n_val,) validation rows (threshold selection), or an empty array.
    """

    train: np.ndarray
    test: np.ndarray
    dropped: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def stratified_split(y, rng: np.random.Generator, fractions: Sequence[float]) -> list[np.ndarray]:
    """Splits rows into consecutive parts with the given fractions, per class.

    Each class is permuted with ``rng`` and cut at ``floor(cumulative fraction * n_class)``,
    so the part sizes depend only on the class counts (identical for every seed).

    Args:
      y: (N,) binary labels.
      rng: the generator.
      fractions: part fractions summing to 1.

    Returns:
      One sorted int64 index array per part.
    """
    y = check_binary_labels(y, "y")
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size < 2 or np.any(fr < 0) or not math.isclose(float(fr.sum()), 1.0, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = np.floor(np.cumsum(fr)[:-1] * idx.size).astype(np.int64)
        for j, piece in enumerate(np.split(idx, cuts)):
            parts[j].append(piece)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def dagmm_split(y, seed: int | np.random.Generator, *, contamination: float = 0.0, train_frac: float = 0.5) -> Split:
    """The DAGMM paper's split: train on the normal rows of a random half, test on the other half.

    Args:
      y: (N,) binary labels, 1 = anomaly.
      seed: the run's seed (or a Generator).
      contamination: fraction in [0, 1] of the train half's anomaly rows kept in the
        training set (``round(contamination * n)``; 0 = the clean protocol).
      train_frac: size of the train half.

    Returns:
      :class:`Split` (the train half's other anomaly rows in ``dropped``).
    """
    if not 0.0 <= float(contamination) <= 1.0:
        raise ValueError(f"contamination must be in [0, 1], got {contamination}")
    if not 0.0 < float(train_frac) < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    y = check_binary_labels(y, "y")
    rng = np.random.default_rng(seed)
    half, test = stratified_split(y, rng, [train_frac, 1.0 - train_frac])
    normal = half[y[half] == 0]
    anomalous = rng.permutation(half[y[half] == 1])
    n_keep = int(round(float(contamination) * anomalous.size))
    train = np.sort(np.concatenate([normal, anomalous[:n_keep]]))
    return Split(train=train.astype(np.int64), test=test, dropped=np.sort(anomalous[n_keep:]).astype(np.int64))


def dagmm_validation_split(
    y, seed: int, *, val_frac: float = 0.25, anomaly_ratio: float | None = None, train_frac: float = 0.5
) -> Split:
    """A validation split carved from the train half of :func:`dagmm_split` (for model selection).

    The test half is exactly ``dagmm_split(y, seed).test`` and no row of it is used:
    the train half's normal rows are split into fit normals (``train``) and validation
    normals (a ``val_frac`` fraction), and the validation anomalies are the train
    half's anomaly rows (which the protocol does not train on). Hyper-parameters
    chosen on ``val`` therefore never see a test row.

    Args:
      y: (N,) binary labels, 1 = anomaly.
      seed: the run's seed; the test half is the protocol's for this seed, the
        validation cut is drawn with ``default_rng([seed, 3])``.
      val_frac: fraction of the train half's normal rows moved to validation
        (``floor(val_frac * n)``, in (0, 1)).
      anomaly_ratio: None keeps every train-half anomaly in ``val``; a ratio in (0, 1)
        keeps ``round(ratio / (1 - ratio) * n_val_normal)`` of them (at most all), so
        ``val`` has that anomaly ratio (e.g. the protocol's), the rest go to ``dropped``.
      train_frac: size of the train half (as :func:`dagmm_split`).

    Returns:
      :class:`Split`: train = fit normals, val = validation normals + anomalies,
      test = the protocol's test half (for reference only), dropped = unused train-half anomalies.
    """
    if not 0.0 < float(val_frac) < 1.0:
        raise ValueError(f"val_frac must be in (0, 1), got {val_frac}")
    if anomaly_ratio is not None and not 0.0 < float(anomaly_ratio) < 1.0:
        raise ValueError(f"anomaly_ratio must be in (0, 1) or None, got {anomaly_ratio}")
    y = check_binary_labels(y, "y")
    base = dagmm_split(y, int(seed), train_frac=train_frac)
    rng = np.random.default_rng([int(seed), 3])
    normal = rng.permutation(base.train)
    n_val = int(math.floor(float(val_frac) * normal.size))
    if n_val < 1 or n_val >= normal.size:
        raise ValueError(f"val_frac {val_frac} leaves no fit or no validation normals ({normal.size} normal rows)")
    anomalous = rng.permutation(base.dropped)
    n_anom = anomalous.size
    if anomaly_ratio is not None:
        n_anom = min(n_anom, int(round(float(anomaly_ratio) / (1.0 - float(anomaly_ratio)) * n_val)))
    val = np.sort(np.concatenate([normal[:n_val], anomalous[:n_anom]])).astype(np.int64)
    return Split(
        train=np.sort(normal[n_val:]).astype(np.int64), test=base.test,
        dropped=np.sort(anomalous[n_anom:]).astype(np.int64), val=val,
    )


def create_outlier_batch(y, n_samples: int, perc_outlier: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices of a batch with ``perc_outlier`` % anomalies, drawn with replacement.

    As alibi-detect's ``create_outlier_batch``: ``int(perc * n / 100)`` anomaly rows and
    ``int((1 - perc / 100) * n)`` normal rows, each drawn uniformly with replacement
    from its class, then shuffled.

    Args:
      y: (N,) binary labels, 1 = anomaly.
      n_samples: batch size.
      perc_outlier: percentage of anomalies in [0, 100].
      rng: the generator.

    Returns:
      (n,) int64 row indices.
    """
    y = check_binary_labels(y, "y")
    if not 0.0 <= float(perc_outlier) <= 100.0:
        raise ValueError(f"perc_outlier must be in [0, 100], got {perc_outlier}")
    n_out = int(perc_outlier * 0.01 * n_samples)
    n_norm = int((1.0 - perc_outlier * 0.01) * n_samples)
    idx = np.concatenate([
        rng.choice(np.flatnonzero(y == 0), size=n_norm, replace=True),
        rng.choice(np.flatnonzero(y == 1), size=n_out, replace=True) if n_out else np.zeros(0, np.int64),
    ]).astype(np.int64)
    return rng.permutation(idx)
