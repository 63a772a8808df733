"""Evaluation protocols: a data set and a list of seeds become the runs' rows to train and evaluate on.

A protocol turns a data set and a list of seeds into a :class:`~vaegmm_jax.evaluation.run_data.RunData` (one
training set and one or more evaluation sets per seed, all seeds with the same
sizes so that the runs train as one vmapped program, see :mod:`vaegmm_jax.evaluation.multiseed`),
and :func:`vaegmm_jax.evaluation.running.run_protocol` trains a detector (a
:class:`~vaegmm_jax.evaluation.specs.DetectorSpec`) on every seed and returns one result dict per run::

    {"protocol", "dataset", "detector", "seed", "precision", "recall", "f1",
     "auroc", "ap", "threshold", "ok", "wall_s", "batch_wall_s", "n_train", "n_test",
     "test_anomaly_ratio", ...}

Protocols (every random choice is drawn from the run's seed; nothing is tuned on
the test rows):

* :func:`dagmm_runs` - DAGMM paper (Zong et al., 2018): a random 50/50 split
  (stratified by label, so every run has the same sizes), training on the normal
  rows of the train half only, min-max scaling fitted on those training rows
  (``scaling='standard'`` z-scores every column instead, as the TensorFlow
  reproduction does; :data:`SCALINGS`),
  threshold flagging the test rows whose score is in the top ``r`` fraction, r the anomaly ratio of the
  test half (:func:`vaegmm_jax.evaluation.metrics.precision_recall_f1_at_ratio`). With
  ``contamination=c`` a fraction c of the train half's anomaly rows is kept in
  training (the paper's contaminated-training experiment). ``rev=True`` builds
  KDDCUP-Rev per run (all ``normal.`` rows plus 24,319 attack rows, redrawn per run).
* :func:`dagmm_validation_runs` - model selection for the DAGMM protocol without test rows:
  the train half's normals split into fit / validation normals (75 / 25), validation
  anomalies = the train half's anomalies (:func:`~vaegmm_jax.evaluation.splits.dagmm_validation_split`); the test half
  is never read. Select on seeds other than the reported ones.
* :func:`alibi_kdd_runs` - alibi-detect's KDD example: 18 continuous features,
  standardised with the training mean and standard deviation, 400,000 normal rows
  drawn with replacement for training, threshold at the 95th percentile of the scores
  of a 1,000-row batch with 5% attacks, a 1,000-row test batch with 10% attacks
  (batches drawn with replacement from the whole file, as alibi-detect's
  ``create_outlier_batch`` does).
* :func:`contaminated_mnist_runs` - the teaching notebook: MNIST test images plus 3%
  synthetic outliers (:func:`vaegmm_jax.data.contaminated_mnist`), a stratified
  60/20/20 train/validation/test split, unsupervised training on the (contaminated)
  train part, the F1-optimal threshold chosen on the validation part
  (:func:`vaegmm_jax.evaluation.metrics.f1_optimal_threshold`, applied as ``score >= threshold``),
  metrics on the test part.

Seeds: run ``s`` draws its split with ``numpy.random.default_rng(s)`` (data set
construction such as the KDDCUP-Rev subset with ``default_rng([s, 1])``) and trains
the model with seed ``s``.

The splits are in :mod:`vaegmm_jax.evaluation.splits`, the per-run data (scaling, fingerprint)
in :mod:`vaegmm_jax.evaluation.run_data`, the detectors to train in
:mod:`vaegmm_jax.evaluation.specs`, and training, scoring and summaries in
:mod:`vaegmm_jax.evaluation.running`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from vaegmm_jax.data import TabularDataset, contaminated_mnist, kddcup_rev
from vaegmm_jax.evaluation.metrics import check_binary_labels
from vaegmm_jax.evaluation.run_data import RunData, fit_run_scalings, transform_definition
from vaegmm_jax.evaluation.splits import (
    create_outlier_batch,
    dagmm_split,
    dagmm_validation_split,
    stratified_split,
)

__all__ = ["SCALINGS", "dagmm_runs", "dagmm_validation_runs", "alibi_kdd_runs", "contaminated_mnist_runs"]


def _as_dataset(data) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(X (N, F) float32, y (N,), continuous (F,) bool, name) of a TabularDataset or an
    ``(X, y[, continuous[, name]])`` tuple (continuous None: every column)."""
    if isinstance(data, TabularDataset):
        return np.asarray(data.X, np.float32), data.y, np.asarray(data.continuous, bool), data.name
    X, y = data[0], data[1]
    X = np.asarray(X, np.float32)
    cont = np.ones(X.shape[1], bool) if len(data) < 3 or data[2] is None else np.asarray(data[2], bool)
    name = data[3] if len(data) > 3 else "data"
    return X, np.asarray(y), cont, name


#: Input transforms of the DAGMM protocols, fitted on each run's training rows.
SCALINGS = {
    "minmax": "min-max of the continuous columns (the paper)",
    "standard": "z-score of every column, one-hot ones included (the TensorFlow reproduction's StandardScaler)",
    "none": "none",
}


def _scaling_note(scaling: str, rows: str) -> str:
    """The report's words for ``scaling`` fitted on ``rows``; a ValueError for a name not in :data:`SCALINGS`."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {sorted(SCALINGS)}, got {scaling!r}")
    return SCALINGS[scaling] + ("" if scaling == "none" else f", fitted on the {rows}")


def dagmm_runs(
    data,
    seeds: Sequence[int],
    *,
    contamination: float = 0.0,
    rev: bool = False,
    scaling: str = "minmax",
    name: str | None = None,
) -> RunData:
    """Per-seed rows of the DAGMM paper protocol (see the module docstring).

    Args:
      data: a :class:`~vaegmm_jax.data.TabularDataset`, or ``(X (N, F), y (N,)[,
        continuous (F,) bool[, name]])``.
      seeds: S run seeds.
      contamination: fraction of the train half's anomalies kept in training.
      rev: build KDDCUP-Rev from KDD data (``data`` from ``load_kddcup99(protocol="dagmm")``):
        all ``normal.`` rows plus 24,319 attacks drawn with ``default_rng([seed, 1])``;
        the attacks are the anomalies.
      scaling: the input transform, fitted on each run's training rows (see
        :data:`SCALINGS`): ``'minmax'`` (the paper: min-max of the continuous columns),
        ``'standard'`` (z-score of every column, one-hot ones included, as the
        TensorFlow DAGMM reproduction's default StandardScaler) or ``'none'``.
      name: data set name for the report.

    Returns:
      :class:`RunData` with train_idx (S, n_train) and evals {'test': (idx (S, n_test), y (S, n_test))}.
    """
    scaling_note = _scaling_note(scaling, "training rows")  # fails before any work on a bad name

    def split(ys, seed):
        parts = dagmm_split(ys, seed, contamination=contamination)
        return parts.train, parts.test

    X, cont, ds_name, seeds, train_idx, test_idx, y_test, y_train = _split_each_seed(data, seeds, rev, split)
    details = {
        "train_anomaly_fraction": float(np.mean([yt.mean() for yt in y_train])),
        "contamination": float(contamination),
        "split": "stratified random 50/50; train = normal rows of the train half"
        + (f" + {contamination:.0%} of its anomalies" if contamination else ""),
    }
    return _ratio_run_data("dagmm", name or ("kddcup_rev" if rev else ds_name), X, cont, scaling, scaling_note,
                           seeds, train_idx, test_idx, y_test, details)


def _split_each_seed(data, seeds: Sequence[int], rev: bool, split: Callable):
    """Validated data and each seed's (train, eval) rows.

    ``split(ys (n,), seed) -> (train positions, eval positions)`` into the seed's data set
    (the KDDCUP-Rev subset drawn with ``default_rng([seed, 1])`` when ``rev``).

    Returns:
      (X, continuous, name, seeds, train_idx (S, n), eval_idx (S, m), eval_y (S, m),
      train_y: S label arrays), indices into X.
    """
    X, y, cont, ds_name = _as_dataset(data)
    y = check_binary_labels(y, "y")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows, y {y.shape[0]}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    tr_idx, ev_idx, ev_y, tr_y = [], [], [], []
    for s in seeds:
        base, ys = np.arange(X.shape[0]), y
        if rev:
            _, ys, base = kddcup_rev(X, y, np.random.default_rng([s, 1]), return_index=True)
        train, evaluate = split(ys, s)
        tr_idx.append(base[train])
        ev_idx.append(base[evaluate])
        ev_y.append(ys[evaluate])
        tr_y.append(ys[train])
    return (X, cont, ds_name, seeds, np.stack(tr_idx).astype(np.int64), np.stack(ev_idx).astype(np.int64),
            np.stack(ev_y).astype(np.int64), tr_y)


def _ratio_run_data(protocol, dataset, X, cont, scaling, scaling_note, seeds, train_idx, eval_idx, eval_y,
                    details) -> RunData:
    """RunData scored on 'test' at the anomaly-ratio threshold, transformed as ``scaling`` on the training rows.

    ``train_idx`` (S, n) and ``eval_idx``, ``eval_y`` (S, m) index X (N, F); ``details`` (split words,
    contamination...) go into the info between its sizes and its scaling note.
    """
    info = {
        "n_train": int(train_idx.shape[1]),
        "n_test": int(eval_y.shape[1]),
        "n_features": int(X.shape[1]),
        "test_anomaly_ratio": float(eval_y[0].mean()),
        **details,
        "scaling": scaling_note,
    }
    columns = cont if scaling == "minmax" else np.ones(X.shape[1], bool)
    if scaling != "none" and columns.any():
        sc, off = fit_run_scalings(X, train_idx, columns, scaling)
    else:
        sc = off = None
    return RunData(
        protocol=protocol, dataset=dataset, seeds=seeds, source=X, train_idx=train_idx,
        evals={"test": (eval_idx, eval_y)}, scale=sc, offset=off, threshold_rule="ratio", info=info,
        transform="" if sc is None else transform_definition(scaling, columns),
    )


def dagmm_validation_runs(
    data,
    seeds: Sequence[int],
    *,
    val_frac: float = 0.25,
    anomaly_ratio: float | None = None,
    rev: bool = False,
    scaling: str = "minmax",
    name: str | None = None,
) -> RunData:
    """Per-seed rows for model selection on the DAGMM protocol: no test-half row is used.

    As :func:`dagmm_runs` (same KDDCUP-Rev subset and train half for a seed), but the
    model trains on the fit normals of :func:`~vaegmm_jax.evaluation.splits.dagmm_validation_split` (the ``scaling``
    fitted on them) and is evaluated on its validation rows. The evaluation set is
    named ``'test'`` so that :func:`~vaegmm_jax.evaluation.running.run_protocol` scores it exactly as the protocol
    scores its test half (top ``r`` fraction flagged, r = the validation anomaly
    ratio); it holds train-half rows only. Use seeds other than the reported ones.

    Args:
      data, seeds, rev, scaling, name: as :func:`dagmm_runs`.
      val_frac, anomaly_ratio: as :func:`~vaegmm_jax.evaluation.splits.dagmm_validation_split`.

    Returns:
      :class:`RunData` with protocol 'dagmm_val', train_idx (S, n_fit) and
      evals {'test': the validation rows (S, n_val)}.
    """
    scaling_note = _scaling_note(scaling, "fit rows")

    def split(ys, seed):
        parts = dagmm_validation_split(ys, seed, val_frac=val_frac, anomaly_ratio=anomaly_ratio)
        return parts.train, parts.val

    X, cont, ds_name, seeds, train_idx, val_idx, y_val, _ = _split_each_seed(data, seeds, rev, split)
    details = {
        "contamination": 0.0,
        "split": f"validation: fit on {1 - val_frac:.0%} of the train half's normal rows; evaluate on the other "
        f"{val_frac:.0%} plus " + ("all" if anomaly_ratio is None else f"(ratio {anomaly_ratio:g})")
        + " of the train half's anomalies; the test half is not used",
    }
    return _ratio_run_data("dagmm_val", name or ("kddcup_rev" if rev else ds_name), X, cont, scaling, scaling_note,
                           seeds, train_idx, val_idx, y_val, details)


def alibi_kdd_runs(
    data,
    seeds: Sequence[int],
    *,
    n_train: int = 400_000,
    n_threshold: int = 1000,
    perc_threshold: float = 5.0,
    n_test: int = 1000,
    perc_test: float = 10.0,
) -> RunData:
    """Per-seed rows of alibi-detect's KDD example (see the module docstring).

    Args:
      data: ``load_kddcup99(protocol="alibi")`` (18 columns, y = 1 for attacks), or (X, y).
      seeds: S run seeds (``default_rng(seed)`` draws every batch).
      n_train: normal rows drawn with replacement for training.
      n_threshold, perc_threshold: the threshold batch; the threshold is the
        ``100 - perc_threshold`` percentile of its scores.
      n_test, perc_test: the test batch.

    Returns:
      :class:`RunData` with train_idx (S, n_train) and evals 'threshold' and 'test'.
    """
    X, y, _, ds_name = _as_dataset(data)
    y = check_binary_labels(y, "y")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    tr, thr, test = [], ([], []), ([], [])
    for s in seeds:
        rng = np.random.default_rng(s)
        tr.append(create_outlier_batch(y, n_train, 0.0, rng))
        for store, n, perc in ((thr, n_threshold, perc_threshold), (test, n_test, perc_test)):
            idx = create_outlier_batch(y, n, perc, rng)
            store[0].append(idx)
            store[1].append(y[idx])
    train_idx = np.stack(tr)
    sc, off = fit_run_scalings(X, train_idx, np.ones(X.shape[1], bool), "standard")
    info = {
        "n_train": int(n_train),
        "n_test": int(len(test[1][0])),
        "n_features": int(X.shape[1]),
        "test_anomaly_ratio": float(np.mean(test[1][0])),
        "split": f"{n_train} normal rows with replacement; threshold batch {n_threshold} ({perc_threshold:g}% attacks); "
        f"test batch {n_test} ({perc_test:g}% attacks)",
        "scaling": "standardised with the training mean / std",
    }
    return RunData(
        protocol="alibi_kdd",
        dataset=ds_name if ds_name != "data" else "kddcup99-alibi",
        seeds=seeds,
        source=X,
        train_idx=train_idx,
        evals={"threshold": (np.stack(thr[0]), np.stack(thr[1])), "test": (np.stack(test[0]), np.stack(test[1]))},
        scale=sc,
        offset=off,
        threshold_rule="percentile",
        threshold_perc=100.0 - float(perc_threshold),
        info=info,
        transform=transform_definition("standard", np.ones(X.shape[1], bool)),
    )


def contaminated_mnist_runs(
    images,
    labels,
    seeds: Sequence[int],
    *,
    fraction: float = 0.03,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    name: str = "mnist-contaminated",
) -> RunData:
    """Per-seed rows of the contaminated-MNIST notebook protocol (see the module docstring).

    Each run builds its own contaminated set (``contaminated_mnist(..., seed=seed)``),
    split with ``default_rng([seed, 2])``; the source holds the S sets one after the other.

    Args:
      images: (N, 28, 28, 1) float images in [0, 1] (e.g. ``load_mnist("test").images``).
      labels: (N,) class labels.
      seeds: S run seeds.
      fraction: outliers added, as a fraction of N.
      fractions: train / validation / test fractions (stratified by outlier label).
      name: data set name.

    Returns:
      :class:`RunData` with train_idx (S, n_train) and evals 'val' and 'test'.
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    sources, tr_idx, val, test, train_out = [], [], ([], []), ([], []), []
    base = 0
    for s in seeds:
        imgs, is_out = contaminated_mnist(images, labels, seed=s, fraction=fraction)
        tr, va, te = stratified_split(is_out, np.random.default_rng([s, 2]), fractions)
        sources.append(imgs.astype(np.float32))
        tr_idx.append(base + tr)
        train_out.append(float(is_out[tr].mean()))
        for store, idx in ((val, va), (test, te)):
            store[0].append(base + idx)
            store[1].append(is_out[idx])
        base += imgs.shape[0]
    info = {
        "n_train": int(len(tr_idx[0])),
        "n_test": int(len(test[1][0])),
        "n_val": int(len(val[1][0])),
        "test_anomaly_ratio": float(np.mean(test[1][0])),
        "train_anomaly_fraction": float(np.mean(train_out)),
        "split": "stratified 60/20/20 train/val/test of the contaminated set; unsupervised training on train",
        "scaling": "pixels / 255",
    }
    return RunData(
        protocol="contaminated_mnist",
        dataset=name,
        seeds=seeds,
        source=np.concatenate(sources),
        train_idx=np.stack(tr_idx).astype(np.int64),
        evals={k: (np.stack(st[0]).astype(np.int64), np.stack(st[1]).astype(np.int64)) for k, st in (("val", val), ("test", test))},
        scale=None,
        offset=None,
        threshold_rule="f1_val",
        info=info,
    )
