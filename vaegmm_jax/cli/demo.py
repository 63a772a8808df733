"""``vaegmm demo``: trains a detector on a built-in data set (no network), prints its test
metrics beside IsolationForest's and writes a model, scores, plots and the data's split."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vaegmm_jax.cli.args import positive_int, share_arg
from vaegmm_jax.cli.config import DETECTORS, build_detector, fit_detector
from vaegmm_jax.cli.display import PROG, describe_threshold, say, table
from vaegmm_jax.cli.errors import InputError, input_errors
from vaegmm_jax.cli.model_folder import check_parents, is_model_dir, save_model
from vaegmm_jax.cli.reporting import compute_metrics, make_plots, metrics_rows
from vaegmm_jax.cli.scoring import score_batch, set_threshold
from vaegmm_jax.data import load_odds
from vaegmm_jax.io.preprocessing import Preprocessing, Scaler

__all__ = ["DEMO_SETTINGS", "add_parser", "run"]

# scikit-learn (the breast-cancer data, the IsolationForest baseline) is imported inside the
# functions that use it: importing it costs about 1 s, which `vaegmm --help` should not pay.

#: The demo trains the flagship detector at its library defaults (the data, a seed, nothing
#: else): the defaults are chosen on the development suite (benchmarks/RESULTS.md), and the
#: demo shows what a user who passes only the data gets, beside IsolationForest on the same split.
DEMO_SETTINGS = {
    "breast_cancer": {"kind": "vaegmm"},
    "thyroid": {"kind": "vaegmm"},
}


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="train and evaluate a detector on a built-in data set (no network)",
                       description="Trains a detector on scikit-learn's breast-cancer data (malignant = outlier), "
                                   "prints test metrics and writes a model, scores and plots.")
    d.add_argument("--out", default=os.path.join("vaegmm_out", "demo"), help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs (default: the detector's own, about 2000 optimizer steps)")
    d.add_argument("--dataset", choices=sorted(DEMO_SETTINGS), default="breast_cancer",
                   help="breast_cancer (ships with scikit-learn) or thyroid ($VAEGMM_DATA/odds/thyroid.npz)")
    d.add_argument("--detector", choices=sorted(DETECTORS), default=None, help="model type (default: vaegmm)")
    d.add_argument("--seed", type=int, default=0, help="data split and model seed (default: 0)")
    d.add_argument("--train-fraction", type=share_arg, default=0.6,
                   help="share of the normal rows used for training (default: %(default)s)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=run)


def _demo_data(name: str):
    """(X, y, feature_names, description): y = 1 for outliers."""
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        # scikit-learn codes malignant as 0 and benign as 1; malignant tumours are the outliers
        y = (d.target == 0).astype(np.int64)
        names = [str(n).replace(" ", "_") for n in d.feature_names]
        return d.data.astype(np.float32), y, names, "breast cancer (scikit-learn), malignant = outlier"
    with input_errors():  # the user's data folder ($VAEGMM_DATA)
        ds = load_odds("thyroid")
    names = [f"f{i}" for i in range(ds.X.shape[1])]
    return ds.X.astype(np.float32), ds.y.astype(np.int64), names, "ODDS thyroid, hyperfunction = outlier"


def _isolation_forest_auroc(X_tr: np.ndarray, X_te: np.ndarray, y_te: np.ndarray, seed: int) -> float:
    """The one-line baseline users compare against, on the same rows."""
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    iforest = IsolationForest(random_state=seed).fit(X_tr)
    return float(roc_auc_score(y_te, -iforest.score_samples(X_te)))


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    check_parents(out, "--out")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    model_dir = out / "model"
    if model_dir.exists() and any(model_dir.iterdir()) and not is_model_dir(model_dir):
        raise InputError(f"{model_dir} exists and is not a model folder; choose another --out")
    if args.dataset == "thyroid" and not os.environ.get("VAEGMM_DATA"):
        raise InputError("--dataset thyroid reads $VAEGMM_DATA/odds/thyroid.npz; set VAEGMM_DATA")
    kind = args.detector or DEMO_SETTINGS[args.dataset]["kind"]
    X, y, names, desc = _demo_data(args.dataset)

    rng = np.random.default_rng(args.seed)
    normal = rng.permutation(np.flatnonzero(y == 0))
    n_train = int(round(args.train_fraction * normal.size))
    if n_train < 2:
        raise InputError(f"--train-fraction {args.train_fraction:g} leaves {n_train} of the {normal.size} normal rows "
                         "for training; it needs at least 2")
    train_idx = np.sort(normal[:n_train])
    test_idx = np.sort(np.concatenate([normal[n_train:], np.flatnonzero(y == 1)]))
    scaler = Scaler.fit(X[train_idx], "minmax")  # fitted on the training rows only
    X_tr, X_te, y_te = scaler.transform(X[train_idx]), scaler.transform(X[test_idx]), y[test_idx]

    (out / "data").mkdir(parents=True, exist_ok=True)
    for fname, idx in (("train.csv", train_idx), ("test.csv", test_idx)):
        frame = pd.DataFrame(X[idx], columns=names)
        frame.insert(0, "id", idx)
        frame["label"] = y[idx]
        frame.to_csv(out / "data" / fname, index=False)

    det, fit_kw, training = build_detector(kind, None, {}, {}, seed=args.seed, epochs=args.epochs,
                                           batch_size=None, learning_rate=None)
    say(f"{PROG} demo: {desc}")
    say(f"  train: {len(train_idx)} normal rows; test: {int((y_te == 0).sum())} normal + {int(y_te.sum())} outliers; "
        f"{X.shape[1]} features, min-max scaled on the training rows")
    t_fit = time.perf_counter()
    fit_detector(det, X_tr, fit_kw, verbose=not args.quiet)
    t_fit = time.perf_counter() - t_fit
    fc = det.fit_config
    say(f"  detector: {type(det).__name__}(seed={args.seed}) at its defaults: {fc.get('epochs')} epochs"
        f"{' (' + fc['epochs_rule'] + ')' if 'epochs_rule' in fc else ''}, batch {fc.get('batch_size')}, "
        f"adam lr {fc.get('optimizer', {}).get('learning_rate', 'custom')}, input scaling {fc.get('scaler')}")
    thr_info = set_threshold(det, X_tr, 95.0, None, f"{len(train_idx)} training rows")
    batch = score_batch(len(X_tr))  # one scoring shape for train and test: one compilation
    scores = det.score(X_te, batch_size=batch)
    m = compute_metrics(y_te, scores, det.threshold)
    m["source"] = "demo test split"
    m["isolation_forest_auroc"] = _isolation_forest_auroc(X_tr, X_te, y_te, args.seed)
    prep = Preprocessing(feature_names=names, scaler=scaler, id_column="id", label_column="label",
                         input_format="csv", row_shape=[X.shape[1]])
    data_info = {"source": str(out / "data" / "train.csv"), "dataset": desc, "n_rows_train": len(train_idx),
                 "n_rows_test": len(test_idx), "row_shape": [X.shape[1]], "feature_names": names,
                 "split": f"{args.train_fraction:g} of the normal rows for training, seed {args.seed}"}
    save_model(model_dir, det, prep, data_info=data_info, threshold_info=thr_info, training=training,
               metrics={"demo test split": m})
    pd.DataFrame({"id": test_idx, "label": y_te, "score": scores, "is_outlier": (scores > det.threshold).astype(int)}
                 ).to_csv(out / "scores.csv", index=False, float_format="%.7g")
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    plots_written = make_plots(out / "plots", det, scores=scores, labels=y_te, X_sample=X_te, labels_sample=y_te)

    say(f"  trained in {t_fit:.1f} s; threshold {describe_threshold(thr_info, det.threshold)}")
    say("")
    say(table(metrics_rows(m), header=("test metric", "value")))
    verdict = "at or above" if m.get("auroc", 0.0) >= m["isolation_forest_auroc"] else "below"
    say(f"  IsolationForest() on the same split: AUROC {m['isolation_forest_auroc']:.4f} "
        f"({type(det).__name__} {m.get('auroc', float('nan')):.4f}, {verdict} it)")
    say("")
    say(f"  wrote {model_dir}/ (checkpoint, preprocessing.json, model_card.json), {out / 'scores.csv'},")
    say(f"        {out / 'metrics.json'}, {len(plots_written)} plots in {out / 'plots'}, data in {out / 'data'}")
    say("  try next:")
    say(f"    {PROG} info {model_dir}")
    say(f"    {PROG} score {out / 'data' / 'test.csv'} --model {model_dir} --out {out / 'test_scores.csv'}")
    say(f"    {PROG} evaluate {out / 'data' / 'test.csv'} --labels label --model {model_dir}")
    say(f"    {PROG} fit {out / 'data' / 'train.csv'} --detector {kind} --id-column id --label-column label "
        f"--out my_model")
    say(f"  total {time.perf_counter() - t0:.1f} s")
    return 0
