"""VAEGMM in a scikit-learn Pipeline on a mixed-type table, tuned with GridSearchCV,
beside IsolationForest.

The table is synthetic (no download, no files): orders with a categorical ``channel`` (web,
store, phone) and four numeric columns whose joint shape depends on the channel. Outliers
are contextual: ordinary-looking values in a combination that does not occur (an amount
that does not fit the number of items, a phone order with a store's profile, a duration
far too long for the order). Preprocessing is a ColumnTransformer: log1p + standard
scaling of the numbers, one-hot of the channel.

Splits: an unlabelled training set (2% outliers, as real training data would hold), a
small labelled validation set for the grid search (AUROC over n_gmm and latent_dim, via a
PredefinedSplit: every candidate is fitted on the training rows and scored on the
validation rows), and a labelled test set for the final comparison.

Run:  python examples/sklearn_pipeline.py [--quick]
(about a minute on 2 CPU cores, --quick about half that; compilation is most of it)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from vaegmm_jax.sklearn import VAEGMMOutlierDetector

NUMERIC = ["amount", "items", "duration", "distance"]
CATEGORICAL = ["channel"]
CHANNELS = np.array(["web", "store", "phone"])
#: per channel: price per item, minutes per item, minutes fixed, mean travel distance (km)
PROFILE = {"web": (20.0, 1.0, 4.0, 0.5), "store": (35.0, 2.0, 12.0, 6.0), "phone": (50.0, 3.0, 8.0, 0.5)}


def orders(n: int, outlier_frac: float, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """n orders, a fraction ``outlier_frac`` of them contextual outliers.

    Returns:
      (table (n, 5): amount, items, duration, distance, channel; labels (n,) 1 = outlier).
    """
    channel = rng.choice(CHANNELS, size=n, p=[0.5, 0.3, 0.2])
    price, per_item, fixed, travel = (np.array([PROFILE[c][k] for c in channel]) for k in range(4))
    items = rng.poisson(3.0, size=n) + 1.0
    amount = items * price * rng.lognormal(0.0, 0.1, size=n)
    duration = (fixed + per_item * items) * rng.lognormal(0.0, 0.1, size=n)
    distance = rng.gamma(4.0, travel / 4.0)
    labels = (rng.random(n) < outlier_frac).astype(int)
    kind = rng.integers(0, 3, size=n)
    bad = labels == 1
    # an amount that does not fit the number of items (ordinary for some other order)
    amount = np.where(bad & (kind == 0), amount * rng.choice([0.3, 3.0], size=n), amount)
    # a profile of another channel: the label says one thing, the numbers another
    other = np.array([CHANNELS[(np.flatnonzero(CHANNELS == c)[0] + 1) % 3] for c in channel])
    channel = np.where(bad & (kind == 1), other, channel)
    # a duration far too long for the order
    duration = np.where(bad & (kind == 2), duration * 4.0, duration)
    table = pd.DataFrame({"amount": amount, "items": items, "duration": duration, "distance": distance,
                          "channel": channel})
    return table, labels


def preprocess() -> ColumnTransformer:
    """Numbers: log1p then standard scaling; channel: one-hot (dense: the detectors take arrays)."""
    return ColumnTransformer([
        ("num", make_pipeline(FunctionTransformer(np.log1p), StandardScaler()), NUMERIC),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
    ])


def auroc(estimator, X, y) -> float:
    """AUROC scorer (y: 1 = outlier) for any scikit-learn outlier detector or a pipeline ending in
    one: score_samples is higher for more normal rows, so its negation ranks the outliers."""
    return roc_auc_score(y, -estimator.score_samples(X))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data, two candidates (a smoke run)")
    parser.add_argument("--jobs", type=int, default=2, help="GridSearchCV worker processes (default 2)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n_train, n_val, n_test = (1500, 400, 600) if args.quick else (4000, 800, 2000)

    x_train, _ = orders(n_train, 0.02, rng)  # unlabelled: its labels are never used
    x_val, y_val = orders(n_val, 0.1, rng)
    x_test, y_test = orders(n_test, 0.1, rng)

    # Grid search: candidates fit on the training rows (fold -1) and are scored on the
    # labelled validation rows (fold 0); y of the training rows is ignored by the fit.
    x_search = pd.concat([x_train, x_val], ignore_index=True)
    y_search = np.r_[np.zeros(n_train, int), y_val]
    split = PredefinedSplit(np.r_[np.full(n_train, -1), np.zeros(n_val, int)])
    # epochs=None (the default): about 2,000 optimizer steps, ~1 s here. Compiling each
    # candidate's programs (~10-15 s on a CPU) is most of this example's time, so --quick
    # searches fewer candidates rather than training less.
    vaegmm = Pipeline([("prep", preprocess()),
                       ("det", VAEGMMOutlierDetector(contamination=0.02, random_state=0))])
    grid = {"det__n_gmm": [2, 4], "det__latent_dim": [2] if args.quick else [1, 2]}
    started = time.perf_counter()
    search = GridSearchCV(vaegmm, grid, scoring=auroc, cv=split, n_jobs=args.jobs, refit=False,
                          error_score="raise").fit(x_search, y_search)
    print(f"grid search ({len(search.cv_results_['params'])} candidates, {time.perf_counter() - started:.0f} s), "
          "validation AUROC:")
    for params, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"]):
        print(f"  n_gmm={params['det__n_gmm']} latent_dim={params['det__latent_dim']}: {score:.3f}")
    print(f"best: {search.best_params_}")

    # Refit the best setting on the training rows only (refit=True would add the labelled
    # validation rows, outliers included, to the training set).
    models = {
        "VAEGMM (tuned)": clone(vaegmm).set_params(**search.best_params_),
        "IsolationForest": Pipeline([("prep", preprocess()),
                                     ("det", IsolationForest(contamination=0.02, random_state=0))]),
    }
    print(f"\ntest set: {n_test} orders, {y_test.mean():.0%} outliers")
    print(f"{'model':<17} {'AUROC':>6} {'AP':>6} {'flagged':>8} {'fit s':>6}")
    for name, model in models.items():
        started = time.perf_counter()
        model.fit(x_train)
        seconds = time.perf_counter() - started
        anomaly = -model.score_samples(x_test)
        flagged = np.mean(model.predict(x_test) == -1)
        print(f"{name:<17} {roc_auc_score(y_test, anomaly):6.3f} {average_precision_score(y_test, anomaly):6.3f} "
              f"{flagged:8.1%} {seconds:6.1f}")


if __name__ == "__main__":
    main()
