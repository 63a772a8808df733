"""Evaluation protocols: seeded splits, per-run metrics, and the baselines to report with them.

A protocol turns a data set and a list of seeds into a :class:`RunData` (one
training set and one or more evaluation sets per seed, all seeds with the same
sizes so that the runs train as one vmapped program, see :mod:`vaegmm_jax.evaluation.multiseed`),
and :func:`run_protocol` trains a detector (a :class:`DetectorSpec`) on every seed
and returns one result dict per run::

    {"protocol", "dataset", "detector", "seed", "precision", "recall", "f1",
     "auroc", "ap", "threshold", "ok", "wall_s", "batch_wall_s", "n_train", "n_test",
     "test_anomaly_ratio", ...}

Protocols (every random choice is drawn from the run's seed; nothing is tuned on
the test rows):

* :func:`dagmm_runs` - DAGMM paper (Zong et al., 2018): a random 50/50 split
  (stratified by label, so every run has the same sizes), training on the normal
  rows of the train half only, min-max scaling fitted on those training rows
  (``scaling='standardize'`` z-scores every column instead, as the TensorFlow
  reproduction does; :data:`SCALINGS`),
  threshold flagging the test rows whose score is in the top ``r`` fraction, r the anomaly ratio of the
  test half (:func:`vaegmm_jax.evaluation.metrics.precision_recall_f1_at_ratio`). With
  ``contamination=c`` a fraction c of the train half's anomaly rows is kept in
  training (the paper's contaminated-training experiment). ``rev=True`` builds
  KDDCUP-Rev per run (all ``normal.`` rows plus 24,319 attack rows, redrawn per run).
* :func:`dagmm_validation_runs` - model selection for the DAGMM protocol without test rows:
  the train half's normals split into fit / validation normals (75 / 25), validation
  anomalies = the train half's anomalies (:func:`dagmm_validation_split`); the test half
  is never read. Select on seeds other than the reported ones.
* :func:`alibi_kdd_runs` - alibi-detect's KDD example: 18 continuous features,
  standardised with the training mean and standard deviation, 400,000 normal rows
  drawn with replacement for training, threshold at the 95th percentile of the scores
  of a 1,000-row batch with 5% attacks, a 1,000-row test batch with 10% attacks
  (batches drawn with replacement from the whole file, as alibi-detect's
  ``create_outlier_batch`` does).
* :func:`contaminated_mnist_runs` - the teaching notebook: MNIST test images plus 3%
  synthetic outliers (:func:`vaegmm_jax.data.datasets.contaminated_mnist`), a stratified
  60/20/20 train/validation/test split, unsupervised training on the (contaminated)
  train part, the F1-optimal threshold chosen on the validation part
  (:func:`vaegmm_jax.evaluation.metrics.f1_optimal_threshold`, applied as ``score >= threshold``),
  metrics on the test part.

Seeds: run ``s`` draws its split with ``numpy.random.default_rng(s)`` (data set
construction such as the KDDCUP-Rev subset with ``default_rng([s, 1])``) and trains
the model with seed ``s``.

Detectors (:class:`DetectorSpec`): any vaegmm_jax detector factory with its fit
arguments (:func:`dagmm_spec`, :func:`vaegmm_spec`, :func:`vae_spec`,
:func:`random_init_spec`), or scikit-learn's IsolationForest (:func:`isolation_forest_spec`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaegmm_jax.data import datasets

from vaegmm_jax.evaluation import metrics

__all__ = [
    "Split",
    "RunData",
    "DetectorSpec",
    "dagmm_split",
    "dagmm_validation_split",
    "stratified_split",
    "dagmm_runs",
    "dagmm_validation_runs",
    "SCALINGS",
    "alibi_kdd_runs",
    "create_outlier_batch",
    "contaminated_mnist_runs",
    "dagmm_spec",
    "vaegmm_spec",
    "vae_spec",
    "random_init_spec",
    "isolation_forest_spec",
    "run_protocol",
    "RESTART_SEED_STRIDE",
    "summarize",
]


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #


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


def _check_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D label array, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must be binary (0 = normal, 1 = anomaly)")
    return y.astype(np.int64)


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
    y = _check_labels(y)
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
    y = _check_labels(y)
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
    y = _check_labels(y)
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


# --------------------------------------------------------------------------- #
# Per-run data
# --------------------------------------------------------------------------- #


@dataclass
class RunData:
    """Per-seed training and evaluation rows of a protocol, as indices into shared source rows.

    Every seed has the same number of training rows and of rows in each evaluation
    set, so the runs of a detector train and score as one vmapped program. Rows are
    materialised on demand, with the run's feature transform (fitted on the run's
    training rows) applied: all seeds at once on the device (:meth:`device`, for
    vaegmm_jax detectors) or one seed on the host (:meth:`host`, for scikit-learn).

    Attributes:
      protocol: 'dagmm', 'alibi_kdd' or 'contaminated_mnist'.
      dataset: data set name.
      seeds: S run seeds.
      source: (M, *R) float32 rows every index points into.
      train_idx: (S, n_train) int64 training rows of each run.
      evals: {name: (idx (S, n) int64, y (S, n) int64)}; always 'test', plus
        'threshold' (alibi_kdd) or 'val' (contaminated_mnist).
      scale, offset: (S, F) float32 per-run affine feature transform
        ``x * scale + offset`` (min-max or standardisation fitted on the run's
        training rows; identity columns have scale 1, offset 0), or None for none.
      transform: the transform's definition (kind and columns), which with the training rows
        decides ``scale`` and ``offset``: what :meth:`fingerprint` hashes in their place,
        since the fitted floats differ in the last bit between platforms.
      threshold_rule: 'ratio' (flag the top test-anomaly-ratio of the test scores),
        'percentile' (``threshold_perc`` percentile of the 'threshold' set's scores,
        flags ``score > threshold``) or 'f1_val' (F1-optimal on 'val', flags ``score >= threshold``).
      threshold_perc: for 'percentile'.
      info: protocol details for the report (sizes, contamination...).
    """

    protocol: str
    dataset: str
    seeds: tuple[int, ...]
    source: np.ndarray
    train_idx: np.ndarray
    evals: dict[str, tuple[np.ndarray, np.ndarray]]
    scale: np.ndarray | None
    offset: np.ndarray | None
    threshold_rule: str
    threshold_perc: float | None = None
    info: dict = field(default_factory=dict)
    transform: str = ""
    _device: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)
    _fingerprints: dict = field(default_factory=dict, repr=False)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_train(self) -> int:
        return int(self.train_idx.shape[1])

    def indices(self, name: str) -> np.ndarray:
        """(S, n) row indices of 'train' or an evaluation set."""
        return self.train_idx if name == "train" else self.evals[name][0]

    def labels(self, name: str) -> np.ndarray:
        """(S, n) labels of an evaluation set (1 = anomaly)."""
        return self.evals[name][1]

    def host(self, name: str, i: int) -> np.ndarray:
        """Run ``i``'s rows of 'train' or an evaluation set, transformed: (n, *R) float32 (NumPy)."""
        x = self.source[self.indices(name)[i]]
        if self.scale is not None:
            x = x * self.scale[i] + self.offset[i]
        return np.ascontiguousarray(x, dtype=np.float32)

    def device(self, name: str):
        """All runs' rows of 'train' or an evaluation set, transformed: (S, n, *R) float32 on the
        default device (gathered there from the source; cached until :meth:`release`;
        thread-safe, so several detectors can run on the same data concurrently)."""
        with self._lock:
            if name not in self._device:
                if "source" not in self._device:
                    self._device["source"] = jax.device_put(self.source)
                self._device[name] = _gather_transform(
                    self._device["source"], jax.device_put(self.indices(name).astype(np.int32)),
                    None if self.scale is None else jax.device_put(self.scale),
                    None if self.offset is None else jax.device_put(self.offset),
                )
            return self._device[name]

    def release(self) -> None:
        """Drops the cached device arrays."""
        self._device.clear()

    def subset(self, seeds: Sequence[int]) -> "RunData":
        """The runs of ``seeds`` only (in that order), sharing ``source``.

        The runs of a vmapped program are independent, so :func:`run_protocol` on a
        subset gives each of its seeds the result the full set gives it: a long table
        can run a few seeds at a time (e.g. resumed after an interruption).

        Args:
          seeds: a non-empty selection of ``self.seeds``, without repeats.

        Returns:
          :class:`RunData` with S' = len(seeds) runs, no device arrays yet, and the
          fingerprints already computed (a run's fingerprint does not depend on its position).
        """
        seeds = tuple(int(s) for s in seeds)
        where = {s: i for i, s in enumerate(self.seeds)}
        missing = [s for s in seeds if s not in where]
        if not seeds or missing or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty selection of {self.seeds} without repeats, got {seeds}")
        rows = np.asarray([where[s] for s in seeds], dtype=np.int64)
        return dataclasses.replace(
            self, seeds=seeds, train_idx=self.train_idx[rows],
            evals={k: (idx[rows], y[rows]) for k, (idx, y) in self.evals.items()},
            scale=None if self.scale is None else self.scale[rows],
            offset=None if self.offset is None else self.offset[rows],
            info=dict(self.info), _device={}, _lock=threading.Lock(),
            _fingerprints={j: self._fingerprints[int(i)] for j, i in enumerate(rows) if int(i) in self._fingerprints},
        )

    def fingerprint(self, i: int) -> str:
        """SHA-256 hex digest of run ``i``'s rows: protocol, rule, the training and evaluation rows
        themselves (in order), the labels and the feature transform's definition
        (:attr:`transform`; not its fitted floats, which a GPU and a CPU round differently:
        a run trained on one must match its rows on the other).

        Equal fingerprints mean the same training and evaluation data, however the source is
        laid out (contaminated MNIST, for one, stacks each seed's set at an offset that
        depends on the other seeds), so a stored result can be matched to its run.
        Memoised per run.
        """
        with self._lock:
            if i in self._fingerprints:
                return self._fingerprints[i]
        h = hashlib.sha256()
        h.update(repr((self.protocol, self.dataset, self.source.shape[1:], str(self.source.dtype),
                       self.threshold_rule, self.threshold_perc, sorted(self.evals))).encode())
        for idx in [self.train_idx[i]] + [self.evals[k][0][i] for k in sorted(self.evals)]:
            h.update(np.int64(idx.size).tobytes())
            for start in range(0, idx.size, 65536):  # bounded host memory on large sets
                h.update(np.ascontiguousarray(self.source[idx[start:start + 65536]]).tobytes())
        for k in sorted(self.evals):
            h.update(np.ascontiguousarray(self.evals[k][1][i], dtype=np.int64).tobytes())
        if self.scale is not None:
            if not self.transform:
                raise ValueError("RunData with a feature transform needs its definition (transform) to be fingerprinted")
            h.update(self.transform.encode())
        digest = h.hexdigest()
        with self._lock:
            self._fingerprints[i] = digest
        return digest


@jax.jit
def _gather_transform(source, idx, scale, offset):
    """source (M, *R), idx (S, n), scale/offset (S, F) or None -> (S, n, *R) = source[idx] * scale + offset."""
    x = source[idx]
    if scale is None:
        return x
    return x * scale[:, None, :] + offset[:, None, :]


def _transform_definition(kind: str, columns: np.ndarray) -> str:
    """The definition of a fitted affine transform, for :meth:`RunData.fingerprint`."""
    cols = np.flatnonzero(np.asarray(columns, bool))
    return f"{kind} fitted on the training rows, columns {hashlib.sha256(cols.astype(np.int64).tobytes()).hexdigest()}"


def _fit_affine(source: np.ndarray, train_idx: np.ndarray, columns: np.ndarray, kind: str):
    """Per-run (S, F) scale and offset fitted on each run's training rows (on the default device).

    kind 'minmax': (x - min) / (max - min) on ``columns``, constant columns -> 0 (as
    :func:`vaegmm_jax.data.datasets.apply_minmax`); 'standardize': (x - mean) / std, std 0 -> 1.
    Other columns: identity.
    """
    src = jax.device_put(source)
    cols = jnp.asarray(columns)

    @jax.jit
    def one(idx):
        x = src[idx]
        if kind == "minmax":
            lo, hi = jnp.min(x, axis=0), jnp.max(x, axis=0)
            rng = hi - lo
            scale = jnp.where(rng > 0, 1.0 / jnp.where(rng > 0, rng, 1.0), 0.0)
            offset = -lo * scale
        else:
            mean = jnp.mean(x, axis=0)
            std = jnp.sqrt(jnp.mean((x - mean) ** 2, axis=0))
            scale = 1.0 / jnp.where(std > 0, std, 1.0)
            offset = -mean * scale
        return jnp.where(cols, scale, 1.0), jnp.where(cols, offset, 0.0)

    # one run at a time: memory bounded by one training set
    out = [one(jnp.asarray(i, jnp.int32)) for i in train_idx]
    return (np.stack([np.asarray(s, np.float32) for s, _ in out]), np.stack([np.asarray(o, np.float32) for _, o in out]))


def _as_dataset(data) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if isinstance(data, datasets.TabularDataset):
        return np.asarray(data.X, np.float32), data.y, np.asarray(data.continuous, bool), data.name
    X, y = data[0], data[1]
    X = np.asarray(X, np.float32)
    cont = np.ones(X.shape[1], bool) if len(data) < 3 or data[2] is None else np.asarray(data[2], bool)
    name = data[3] if len(data) > 3 else "data"
    return X, np.asarray(y), cont, name


#: Input transforms of the DAGMM protocols, fitted on each run's training rows.
SCALINGS = {
    "minmax": "min-max of the continuous columns (the paper)",
    "standardize": "z-score of every column, one-hot ones included (the TensorFlow reproduction's StandardScaler)",
    "none": "none",
}


def _scaling_note(scaling: str, rows: str) -> str:
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
      data: a :class:`~vaegmm_jax.data.datasets.TabularDataset`, or ``(X (N, F), y (N,)[,
        continuous (F,) bool[, name]])``.
      seeds: S run seeds.
      contamination: fraction of the train half's anomalies kept in training.
      rev: build KDDCUP-Rev from KDD data (``data`` from ``load_kddcup99(protocol="dagmm")``):
        all ``normal.`` rows plus 24,319 attacks drawn with ``default_rng([seed, 1])``;
        the attacks are the anomalies.
      scaling: the input transform, fitted on each run's training rows (see
        :data:`SCALINGS`): ``'minmax'`` (the paper: min-max of the continuous columns),
        ``'standardize'`` (z-score of every column, one-hot ones included, as the
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
    info = {
        "n_train": int(train_idx.shape[1]),
        "n_test": int(y_test.shape[1]),
        "n_features": int(X.shape[1]),
        "test_anomaly_ratio": float(y_test[0].mean()),
        "train_anomaly_fraction": float(np.mean([yt.mean() for yt in y_train])),
        "contamination": float(contamination),
        "split": "stratified random 50/50; train = normal rows of the train half"
        + (f" + {contamination:.0%} of its anomalies" if contamination else ""),
        "scaling": scaling_note,
    }
    return _ratio_run_data("dagmm", name or ("kddcup_rev" if rev else ds_name), X, cont, scaling, seeds,
                           train_idx, test_idx, y_test, info)


def _split_each_seed(data, seeds: Sequence[int], rev: bool, split: Callable):
    """Validated data and each seed's (train, eval) rows.

    ``split(ys (n,), seed) -> (train positions, eval positions)`` into the seed's data set
    (the KDDCUP-Rev subset drawn with ``default_rng([seed, 1])`` when ``rev``).

    Returns:
      (X, continuous, name, seeds, train_idx (S, n), eval_idx (S, m), eval_y (S, m),
      train_y: S label arrays), indices into X.
    """
    X, y, cont, ds_name = _as_dataset(data)
    y = _check_labels(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows, y {y.shape[0]}")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds is empty")
    tr_idx, ev_idx, ev_y, tr_y = [], [], [], []
    for s in seeds:
        base, ys = np.arange(X.shape[0]), y
        if rev:
            _, ys, base = datasets.kddcup_rev(X, y, np.random.default_rng([s, 1]), return_index=True)
        train, evaluate = split(ys, s)
        tr_idx.append(base[train])
        ev_idx.append(base[evaluate])
        ev_y.append(ys[evaluate])
        tr_y.append(ys[train])
    return (X, cont, ds_name, seeds, np.stack(tr_idx).astype(np.int64), np.stack(ev_idx).astype(np.int64),
            np.stack(ev_y).astype(np.int64), tr_y)


def _ratio_run_data(protocol, dataset, X, cont, scaling, seeds, train_idx, eval_idx, eval_y, info) -> RunData:
    """RunData scored on 'test' at the anomaly-ratio threshold, transformed as ``scaling`` on the training rows."""
    columns = cont if scaling == "minmax" else np.ones(X.shape[1], bool)
    if scaling != "none" and columns.any():
        sc, off = _fit_affine(X, train_idx, columns, scaling)
    else:
        sc = off = None
    return RunData(
        protocol=protocol, dataset=dataset, seeds=seeds, source=X, train_idx=train_idx,
        evals={"test": (eval_idx, eval_y)}, scale=sc, offset=off, threshold_rule="ratio", info=info,
        transform="" if sc is None else _transform_definition(scaling, columns),
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
    model trains on the fit normals of :func:`dagmm_validation_split` (the ``scaling``
    fitted on them) and is evaluated on its validation rows. The evaluation set is
    named ``'test'`` so that :func:`run_protocol` scores it exactly as the protocol
    scores its test half (top ``r`` fraction flagged, r = the validation anomaly
    ratio); it holds train-half rows only. Use seeds other than the reported ones.

    Args:
      data, seeds, rev, scaling, name: as :func:`dagmm_runs`.
      val_frac, anomaly_ratio: as :func:`dagmm_validation_split`.

    Returns:
      :class:`RunData` with protocol 'dagmm_val', train_idx (S, n_fit) and
      evals {'test': the validation rows (S, n_val)}.
    """
    scaling_note = _scaling_note(scaling, "fit rows")

    def split(ys, seed):
        parts = dagmm_validation_split(ys, seed, val_frac=val_frac, anomaly_ratio=anomaly_ratio)
        return parts.train, parts.val

    X, cont, ds_name, seeds, train_idx, val_idx, y_val, _ = _split_each_seed(data, seeds, rev, split)
    info = {
        "n_train": int(train_idx.shape[1]),
        "n_test": int(y_val.shape[1]),
        "n_features": int(X.shape[1]),
        "test_anomaly_ratio": float(y_val[0].mean()),
        "contamination": 0.0,
        "split": f"validation: fit on {1 - val_frac:.0%} of the train half's normal rows; evaluate on the other "
        f"{val_frac:.0%} plus " + ("all" if anomaly_ratio is None else f"(ratio {anomaly_ratio:g})")
        + " of the train half's anomalies; the test half is not used",
        "scaling": scaling_note,
    }
    return _ratio_run_data("dagmm_val", name or ("kddcup_rev" if rev else ds_name), X, cont, scaling, seeds,
                           train_idx, val_idx, y_val, info)


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
    y = _check_labels(y)
    if not 0.0 <= float(perc_outlier) <= 100.0:
        raise ValueError(f"perc_outlier must be in [0, 100], got {perc_outlier}")
    n_out = int(perc_outlier * 0.01 * n_samples)
    n_norm = int((1.0 - perc_outlier * 0.01) * n_samples)
    idx = np.concatenate([
        rng.choice(np.flatnonzero(y == 0), size=n_norm, replace=True),
        rng.choice(np.flatnonzero(y == 1), size=n_out, replace=True) if n_out else np.zeros(0, np.int64),
    ]).astype(np.int64)
    return rng.permutation(idx)


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
    y = _check_labels(y)
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
    sc, off = _fit_affine(X, train_idx, np.ones(X.shape[1], bool), "standardize")
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
        transform=_transform_definition("standardize", np.ones(X.shape[1], bool)),
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
        imgs, is_out = datasets.contaminated_mnist(images, labels, seed=s, fraction=fraction)
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


# --------------------------------------------------------------------------- #
# Detectors
# --------------------------------------------------------------------------- #


@dataclass
class DetectorSpec:
    """What to train on every run.

    Attributes:
      name: label in the report.
      factory: ``factory(seed) -> unfitted vaegmm_jax detector`` (None for sklearn).
      fit_args: keyword arguments of ``detector.fit`` (``epochs`` 0 = untrained).
      sklearn_factory: ``factory(seed) -> estimator`` with ``fit`` and ``score_samples``
        (higher = more normal), e.g. IsolationForest; used when ``factory`` is None.
      score_chunk: rows per scoring chunk (all seeds at once).
      epochs_per_call: epochs per jitted training call.
      seed_batch_size: seeds trained and scored together (``multiseed.fit_many``);
        None vmaps all of them (1 is fastest for conv nets on a CPU).
      restarts: models trained per run on the run's training rows (model seeds
        ``seed + RESTART_SEED_STRIDE * r``, r = 0..restarts-1, so restart 0 is the
        single-model run); the run reports the one with the lowest final training
        loss term ``restart_select``. Training data only, like scikit-learn's
        ``GaussianMixture(n_init=...)``; costs ``restarts`` times the training.
      restart_select: the ``final_loss`` term that picks the restart (lowest wins).
      description: plain-words settings for the report.
    """

    name: str
    factory: Callable[[int], Any] | None = None
    fit_args: dict = field(default_factory=dict)
    sklearn_factory: Callable[[int], Any] | None = None
    score_chunk: int = 16384
    epochs_per_call: int | None = 1000
    seed_batch_size: int | None = None
    restarts: int = 1
    restart_select: str = "energy"
    description: str = ""

    def __post_init__(self):
        if int(self.restarts) != self.restarts or self.restarts < 1:
            raise ValueError(f"restarts must be a positive integer, got {self.restarts!r}")
        if self.restarts > 1 and self.factory is None:
            raise ValueError("restarts apply to vaegmm_jax detectors (factory), not to sklearn estimators")


def _preset(preset):
    from vaegmm_jax.detectors import presets

    return presets.get_preset(preset) if isinstance(preset, str) else preset


def _check_preset_fields(p, overrides: dict) -> None:
    import dataclasses

    unknown = set(overrides) - {f.name for f in dataclasses.fields(p)}
    if unknown:
        raise TypeError(f"unknown preset fields {sorted(unknown)} for preset {p.name!r}")


def _preset_and_fit_args(preset, overrides: dict, epochs_scale: float):
    """(preset with ``overrides`` applied, its fit kwargs with the epochs scaled unless overridden)."""
    from vaegmm_jax.detectors import presets

    p = _preset(preset)
    _check_preset_fields(p, overrides)
    p = dataclasses.replace(p, **overrides) if overrides else p
    fit = presets.fit_kwargs(p)
    if "epochs" not in overrides:
        fit["epochs"] = _scaled_epochs(p.epochs, epochs_scale)
    return p, fit


def _scaled_epochs(epochs: int, epochs_scale: float) -> int:
    if not epochs_scale > 0:
        raise ValueError(f"epochs_scale must be positive, got {epochs_scale}")
    return max(1, int(round(epochs * float(epochs_scale))))


def dagmm_spec(
    preset, *, epochs_scale: float = 1.0, name: str = "DAGMM", restarts: int = 1, restart_select: str = "energy",
    **overrides,
) -> DetectorSpec:
    """OutlierAEGMM with a DAGMM paper preset (architecture, epochs x ``epochs_scale``, batch, Adam lr, lambdas).

    Args:
      preset: a :mod:`vaegmm_jax.detectors.presets` preset or its name ('kddcup', 'thyroid', ...).
      epochs_scale: fraction of the preset's epochs (at least 1 epoch).
      name: report label.
      restarts, restart_select: as :class:`DetectorSpec` (1: the paper's one model per run).
      **overrides: preset fields (e.g. ``epochs=5``, ``batch_size=...``).
    """
    from vaegmm_jax.detectors import presets

    p, fit = _preset_and_fit_args(preset, overrides, epochs_scale)
    picked = f"; best of {restarts} restarts by final training {restart_select}" if restarts > 1 else ""
    return DetectorSpec(
        name=name,
        factory=lambda s: presets.make_detector(p, seed=s),
        fit_args=fit,
        restarts=restarts,
        restart_select=restart_select,
        description=f"OutlierAEGMM, preset {p.name}: hidden {tuple(p.hidden)}, latent {p.latent_dim}, K {p.n_gmm}, "
        f"{fit['epochs']} epochs, batch {fit['batch_size']}, Adam lr {p.learning_rate:g}, init {p.kernel_init}{picked}",
    )


def random_init_spec(preset, *, name: str = "random-init", **overrides) -> DetectorSpec:
    """The DAGMM preset's architecture, untrained (seeded initialisation); mixture fitted on the training rows."""
    spec = dagmm_spec(preset, name=name, **overrides)
    p = _preset(preset)
    spec.fit_args["epochs"] = 0
    spec.description = (
        f"OutlierAEGMM, preset {p.name}'s architecture, untrained (seeded init); mixture fitted on the training rows"
    )
    return spec


def vaegmm_spec(
    preset,
    *,
    epochs_scale: float = 1.0,
    name: str = "VAEGMM",
    recon: str = "dagmm",
    samples: int = 10,
    beta: float = 1.0,
    **overrides,
) -> DetectorSpec:
    """OutlierVAEGMM with a DAGMM preset's nets and training schedule.

    For a DAGMM preset the architecture (hidden, latent, K, estimation net) and the
    schedule are the preset's; the latent is sampled (mean / log-variance heads) and
    scores average ``samples`` draws. ``recon``: 'dagmm' sets ``cov_elbo=dict(sim=sqrt(1/2))``
    and ``w_recon=1`` so that the reconstruction term equals DAGMM's sum of squared
    errors (plus a constant); 'alibi' keeps alibi-detect's defaults (sim 0.05,
    w_recon 1e-7). For a VAEGMM preset (alibi KDD) its own settings are used.
    """
    from vaegmm_jax.detectors import presets
    from vaegmm_jax.detectors import OutlierVAEGMM

    p, fit = _preset_and_fit_args(preset, overrides, epochs_scale)
    if isinstance(p, presets.VAEGMMPreset):
        return DetectorSpec(
            name=name,
            factory=lambda s: presets.make_detector(p, seed=s),
            fit_args=fit,
            description=f"OutlierVAEGMM, preset {p.name}: hidden {tuple(p.hidden)} {p.activation}, latent {p.latent_dim}, "
            f"K {p.n_gmm}, {fit['epochs']} epochs, batch {fit['batch_size']}, sim {p.sim:g}, lr {p.learning_rate:g}, "
            f"init {p.kernel_init}",
        )
    if recon not in ("dagmm", "alibi"):
        raise ValueError(f"recon must be 'dagmm' or 'alibi', got {recon!r}")
    if recon == "dagmm":
        fit.update(w_recon=1.0, cov_elbo=dict(sim=math.sqrt(0.5)))
    else:
        fit.update(w_recon=1e-7, cov_elbo=dict(sim=0.05))

    def factory(seed):
        return OutlierVAEGMM(
            n_gmm=p.n_gmm, latent_dim=p.latent_dim, hidden=tuple(p.hidden), gmm_hidden=p.gmm_hidden,
            gmm_dropout=p.gmm_dropout, activation=p.activation, recon_features=p.recon_features,
            kernel_init=p.kernel_init, samples=samples, beta=beta, seed=seed, **presets.PAPER_SCORING,
        )

    return DetectorSpec(
        name=name,
        factory=factory,
        fit_args=fit,
        description=f"OutlierVAEGMM with preset {p.name}'s nets ({p.kernel_init} init) and schedule "
        f"({fit['epochs']} epochs), L {samples}, "
        f"beta {beta:g}, recon {'SSE-matched (sim sqrt(1/2), w_recon 1)' if recon == 'dagmm' else 'alibi (sim 0.05, w_recon 1e-7)'}",
    )


def vae_spec(
    preset=None,
    *,
    epochs: int | None = None,
    epochs_scale: float = 1.0,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    name: str = "VAE",
    score_type: str = "recon_prob",
    likelihood: str = "gaussian",
    latent_dim: int | None = None,
    hidden: tuple[int, ...] | None = None,
    samples: int = 10,
    score_chunk: int = 16384,
    seed_batch_size: int | None = None,
    kernel_init: str | None = None,
) -> DetectorSpec:
    """OutlierVAE; with a DAGMM preset, its encoder widths, latent size and schedule.

    Args:
      preset: a DAGMM preset (or None: give ``epochs`` and ``batch_size``; nets default).
      epochs, batch_size, learning_rate, latent_dim, hidden: override the preset's.
      epochs_scale: fraction of the preset's epochs.
      score_type: 'recon_prob' (An & Cho, learned variance), 'recon_prob_mean' or 'mse'.
      likelihood: 'gaussian' or 'bernoulli' (images in [0, 1]).
      samples: L.
      score_chunk: rows per scoring chunk.
      seed_batch_size: see :class:`DetectorSpec`.
      kernel_init: weight initialiser of the dense nets (default: the preset's, else Flax's).
    """
    import optax

    from vaegmm_jax.detectors import OutlierVAE

    p = None if preset is None else _preset(preset)
    if p is None and (epochs is None or batch_size is None):
        raise ValueError("vae_spec without a preset needs epochs and batch_size")
    ep = epochs if epochs is not None else _scaled_epochs(p.epochs, epochs_scale)
    bs = batch_size if batch_size is not None else p.batch_size
    lr = learning_rate if learning_rate is not None else (p.learning_rate if p is not None else 1e-3)
    lat = latent_dim if latent_dim is not None else (p.latent_dim if p is not None else 2)
    hid = hidden if hidden is not None else (tuple(p.hidden) if p is not None else None)
    act = p.activation if p is not None else "tanh"
    init = kernel_init or (p.kernel_init if p is not None else "lecun_normal")

    def factory(seed):
        # the paper protocols scale their rows themselves (protocols.SCALINGS): no second scaling
        return OutlierVAE(score_type=score_type, likelihood=likelihood, latent_dim=lat, hidden=hid,
                          activation=act, kernel_init=init, samples=samples, seed=seed, scaler=None)

    return DetectorSpec(
        name=name,
        factory=factory,
        fit_args=dict(epochs=ep, batch_size=bs, optimizer=optax.adam(lr)),
        score_chunk=score_chunk,
        seed_batch_size=seed_batch_size,
        description=f"OutlierVAE {score_type}, {likelihood}, latent {lat}, hidden {hid or 'default'}, {ep} epochs, "
        f"batch {bs}, Adam lr {lr:g}, L {samples}",
    )


def isolation_forest_spec(name: str = "IsolationForest", **kwargs) -> DetectorSpec:
    """scikit-learn IsolationForest (defaults: 100 trees, 256-row subsamples), seeded per run."""
    from sklearn.ensemble import IsolationForest

    def factory(seed):
        return IsolationForest(random_state=int(seed), **kwargs)

    return DetectorSpec(
        name=name, sklearn_factory=factory,
        description="sklearn IsolationForest " + (", ".join(f"{k}={v}" for k, v in kwargs.items()) or "(defaults)"),
    )


# --------------------------------------------------------------------------- #
# Running
# --------------------------------------------------------------------------- #


def _metrics_for(rule: str, perc, scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    s_test, y_test = scores["test"], labels["test"]
    if rule == "ratio":
        ratio = float(y_test.mean())
        prf = metrics.precision_recall_f1_at_ratio(s_test, y_test, ratio)
        threshold = metrics.threshold_at_ratio(s_test, ratio)
    elif rule == "percentile":
        threshold = float(np.percentile(scores["threshold"], perc))
        prf = metrics.precision_recall_f1(y_test, (s_test > threshold).astype(np.int64))
    elif rule == "f1_val":
        threshold, _ = metrics.f1_optimal_threshold(labels["val"], scores["val"])
        prf = metrics.precision_recall_f1(y_test, (s_test >= threshold).astype(np.int64))
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    return {
        "precision": prf.precision, "recall": prf.recall, "f1": prf.f1,
        "auroc": metrics.auroc(y_test, s_test), "ap": metrics.average_precision(y_test, s_test),
        "threshold": float(threshold),
    }


_NAN_METRICS = {k: float("nan") for k in ("precision", "recall", "f1", "auroc", "ap", "threshold")}


def _sklearn_scores(data: RunData, spec: DetectorSpec, n_jobs: int | None) -> tuple[list[dict], float]:
    """Per-seed {eval name: (n,) scores} for a sklearn estimator (runs in parallel threads)."""
    from joblib import Parallel, delayed

    def flat(a):
        return a.reshape(a.shape[0], -1)

    def one(i):
        est = spec.sklearn_factory(data.seeds[i])
        est.fit(flat(data.host("train", i)))
        return {k: -est.score_samples(flat(data.host(k, i))).astype(np.float64) for k in data.evals}

    t0 = time.perf_counter()
    jobs = n_jobs if n_jobs is not None else min(data.n_seeds, os.cpu_count() or 1)
    out = Parallel(n_jobs=jobs, prefer="threads")(delayed(one)(i) for i in range(data.n_seeds))
    return out, time.perf_counter() - t0


def run_protocol(data: RunData, spec: DetectorSpec, *, n_jobs: int | None = None) -> list[dict]:
    """Trains ``spec`` on every run of ``data`` and evaluates it.

    vaegmm_jax detectors train all seeds as one vmapped program
    (:func:`vaegmm_jax.evaluation.multiseed.fit_many` with per-seed data, gathered and scaled on
    the device) and score likewise; a sklearn estimator runs the seeds in parallel threads.

    Args:
      data: from :func:`dagmm_runs`, :func:`alibi_kdd_runs` or :func:`contaminated_mnist_runs`.
      spec: the detector.
      n_jobs: threads for sklearn estimators (default: one per seed, at most the CPU count).

    Returns:
      One dict per seed: protocol, dataset, detector, seed, precision, recall, f1, auroc,
      ap, threshold, ok (False: training diverged, the mixture is invalid or a score
      is not finite; metrics NaN), wall_s (the batch's wall time / S), batch_wall_s,
      n_train, n_test, test_anomaly_ratio, epochs, contamination; for vaegmm_jax
      detectors also failed_epoch and final_loss ({loss term: its mean over the last
      epoch that finished, NaN if none}: training data only, so it may pick among runs),
      and with ``spec.restarts`` > 1 the picked restart and every restart's selecting loss.
    """
    ok = np.ones(data.n_seeds, bool)
    epochs = None
    extra_info: dict = {}
    if spec.factory is not None:
        from vaegmm_jax.evaluation import multiseed

        restarts = int(spec.restarts)
        if restarts > 1:  # a wrong name fails before the training, not after it
            terms = tuple(spec.factory(data.seeds[0]).loss_terms)
            if spec.restart_select not in terms:
                raise ValueError(f"restart_select must be a loss term of the detector, one of {sorted(terms)}; "
                                 f"got {spec.restart_select!r}")

        def tiled(name):  # (S * restarts, n, *R): restart r of run i at r * S + i
            x = data.device(name)
            return x if restarts == 1 else jnp.concatenate([x] * restarts, axis=0)

        model_seeds = [s + RESTART_SEED_STRIDE * r for r in range(restarts) for s in data.seeds]
        t0 = time.perf_counter()
        fit = multiseed.fit_many(
            spec.factory, tiled("train"), model_seeds, per_seed_data=True,
            epochs_per_call=spec.epochs_per_call, seed_batch_size=spec.seed_batch_size, **spec.fit_args,
        )
        all_scores = {
            k: multiseed.score_many(fit, tiled(k), per_seed_data=True, chunk_size=spec.score_chunk)
            for k in data.evals
        }
        wall = time.perf_counter() - t0
        chosen = _pick_restarts(fit, data.n_seeds, restarts, spec.restart_select)
        ok = fit.ok[chosen]
        epochs = fit.epochs
        per_seed = [{k: v[j] for k, v in all_scores.items()} for j in chosen]
        steady = fit.call_s[1:]
        extra_info = {
            "fit_wall_s": fit.wall_s,
            "first_call_s": fit.call_s[0] if fit.call_s else 0.0,
            "epochs_per_call": fit.epochs_per_call,
            "steady_epoch_ms": 1e3 * float(np.mean(steady)) / fit.epochs_per_call if steady else None,
            "mixture_s": fit.mixture_s,
        }
    elif spec.sklearn_factory is not None:
        per_seed, wall = _sklearn_scores(data, spec, n_jobs)
    else:
        raise ValueError(f"detector spec {spec.name!r} has neither factory nor sklearn_factory")

    results = []
    for i, seed in enumerate(data.seeds):
        sc = per_seed[i]
        labels = {k: data.labels(k)[i] for k in data.evals}
        good = bool(ok[i]) and all(np.isfinite(v).all() for v in sc.values())
        m = _metrics_for(data.threshold_rule, data.threshold_perc, sc, labels) if good else dict(_NAN_METRICS)
        row = {
            "protocol": data.protocol, "dataset": data.dataset, "detector": spec.name, "seed": int(seed),
            **m, "ok": good, "wall_s": wall / data.n_seeds, "batch_wall_s": wall,
            "n_train": data.n_train, "n_test": int(labels["test"].shape[0]),
            "test_anomaly_ratio": float(labels["test"].mean()), "epochs": epochs,
            "contamination": data.info.get("contamination", 0.0), **extra_info,
        }
        if spec.factory is not None:
            j = chosen[i]
            row["failed_epoch"] = int(fit.failed_epoch[j])
            row["final_loss"] = {term: _last_finite(h[j]) for term, h in fit.history.items()}
            if spec.restarts > 1:
                row["restart"] = int(j // data.n_seeds)
                row["restart_losses"] = [_last_finite(fit.history[spec.restart_select][i + r * data.n_seeds])
                                         for r in range(spec.restarts)]
        results.append(row)
    return results


#: model seed offset between the restarts of one run (:attr:`DetectorSpec.restarts`)
RESTART_SEED_STRIDE = 1_000_003


def _pick_restarts(fit, n_runs: int, restarts: int, term: str) -> np.ndarray:
    """(n_runs,) index into ``fit``'s models: per run, the finished restart with the lowest final ``term``.

    Model ``r * n_runs + i`` is restart r of run i. A restart that failed (``fit.ok``
    False) is never picked unless all of the run's restarts failed (then restart 0,
    which reports the failure). With one restart, run i is model i, whatever loss terms the
    detector has (a VAE has no energy).
    """
    chosen = np.arange(n_runs)
    if restarts == 1:
        return chosen
    for i in range(n_runs):
        cands = [i + r * n_runs for r in range(restarts)]
        vals = [_last_finite(fit.history[term][j]) if fit.ok[j] else np.nan for j in cands]
        if np.isfinite(vals).any():
            chosen[i] = cands[int(np.nanargmin(vals))]
    return chosen


def _last_finite(values: np.ndarray) -> float:
    """The last finite entry of a 1-D history, NaN if none."""
    finite = np.flatnonzero(np.isfinite(values))
    return float(values[finite[-1]]) if finite.size else float("nan")


def summarize(results: Sequence[dict], keys: Sequence[str] = ("precision", "recall", "f1", "auroc", "ap")) -> dict:
    """Mean and standard deviation (ddof=1) over the runs that are ``ok``.

    Returns:
      {key: (mean, std)} plus 'n_runs', 'n_failed', 'wall_s' (total of the batch) and 'wall_s_per_run'.
    """
    good = [r for r in results if r.get("ok", True)]
    out: dict[str, Any] = {"n_runs": len(results), "n_failed": len(results) - len(good)}
    for k in keys:
        vals = np.asarray([r[k] for r in good], dtype=np.float64)
        if vals.size == 0:
            out[k] = (float("nan"), float("nan"))
        else:
            out[k] = (float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
    if results:
        out["wall_s"] = float(results[0].get("batch_wall_s", sum(r["wall_s"] for r in results)))
        out["wall_s_per_run"] = out["wall_s"] / len(results)
    return out
