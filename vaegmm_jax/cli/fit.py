"""``vaegmm fit DATA --detector vaegmm|aegmm|vae --out DIR``: trains a detector on a data file,
picks its threshold on the training scores and saves model, scaling and model card."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vaegmm_jax.cli.args import check_fraction, check_percentile, fraction_arg, percentile_arg, positive_float, positive_int
from vaegmm_jax.cli.config import DETECTORS, build_detector, fit_detector, load_config
from vaegmm_jax.cli.display import PROG, describe_threshold, say, table
from vaegmm_jax.cli.errors import InputError, input_errors
from vaegmm_jax.cli.model_folder import check_out_dir, save_model
from vaegmm_jax.cli.reporting import compute_metrics, make_plots, metrics_rows, prefetch_plotting
from vaegmm_jax.cli.scoring import check_id_column, score_batch, set_threshold
from vaegmm_jax.io import tables as tio
from vaegmm_jax.io.preprocessing import Preprocessing, Scaler

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    f = sub.add_parser("fit", help="train a detector on a data file and save it",
                       description="Trains on DATA (CSV, TSV, NPY, NPZ or Parquet), picks the threshold on the "
                                   "training scores and saves model, scaling and model card to --out.")
    f.add_argument("data", metavar="DATA", help="training data file")
    f.add_argument("--detector", choices=sorted(DETECTORS), default=None, help="model type")
    f.add_argument("--preset", default=None, help="a named preset (vaegmm_jax.detectors.presets)")
    f.add_argument("--config", default=None, metavar="CFG.json",
                   help='JSON: {"type": ..., "detector": {constructor kwargs}, "fit": {fit kwargs, learning_rate}, '
                        '"scaling": ..., "threshold_perc"|"contamination": ...}')
    f.add_argument("--out", required=True, metavar="DIR", help="model folder to create")
    f.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    cols = f.add_mutually_exclusive_group()
    cols.add_argument("--columns", default=None, metavar="A,B,C", help="feature columns (default: all others)")
    cols.add_argument("--exclude-columns", default=None, metavar="A,B", help="columns that are not features")
    f.add_argument("--id-column", default=None, metavar="COL", help="row identifier column (kept in score output)")
    f.add_argument("--label-column", default=None, metavar="COL",
                   help="0/1 labels (1 = outlier): outliers are left out of training; metrics go in the model card")
    f.add_argument("--scaling", choices=Scaler.KINDS, default=None,
                   help="feature scaling fitted on the training rows (default: minmax; none for images)")
    f.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs (default: the detector's, about 2000 optimizer steps)")
    f.add_argument("--batch-size", type=positive_int, default=None, help="minibatch rows (default: the detector's, 128)")
    f.add_argument("--learning-rate", type=positive_float, default=None,
                   help="Adam learning rate (library default 1e-3)")
    thr = f.add_mutually_exclusive_group()
    thr.add_argument("--threshold-perc", type=percentile_arg, default=None, metavar="P",
                     help="threshold = P-th percentile of the training scores (default 95)")
    thr.add_argument("--contamination", type=fraction_arg, default=None, metavar="C",
                     help="expected outlier fraction in training data: threshold = (1 - C) quantile")
    f.add_argument("--seed", type=int, default=None, help="model seed (member i of an ensemble: seed + i)")
    f.add_argument("--members", type=positive_int, default=None, metavar="M",
                   help="train an ensemble of M independently seeded models as one program (default 1); "
                        "its score is the mean of the members' scores standardised on the training rows")
    f.add_argument("--no-plots", action="store_true", help="skip the training plots")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=run)


def _threshold_choice(args: argparse.Namespace, cfg: dict) -> tuple[float | None, float | None]:
    """(threshold percentile, contamination): the flags', else the configuration's, checked
    now, not after the training they would otherwise throw away."""
    if args.threshold_perc is not None or args.contamination is not None:
        return args.threshold_perc, args.contamination
    if "threshold_perc" in cfg and "contamination" in cfg:
        raise InputError("--config: give threshold_perc or contamination, not both")
    perc, contamination = cfg.get("threshold_perc"), cfg.get("contamination")
    if perc is not None:
        check_percentile(perc, "--config: threshold_perc")
    if contamination is not None:
        check_fraction(contamination, "--config: contamination")
    return perc, contamination


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    check_out_dir(out, args.overwrite)
    if args.id_column is not None:
        check_id_column(args.id_column, "--id-column")
    cfg = load_config(args.config)
    perc, contamination = _threshold_choice(args, cfg)
    with input_errors():
        fmt = tio.file_format(args.data)
        columns = tio.parse_column_list(args.columns)
        exclude = tio.parse_column_list(args.exclude_columns)
    det, fit_kw, settings = build_detector(
        args.detector or cfg.get("type"), args.preset or cfg.get("preset"), cfg.get("detector"), cfg.get("fit"),
        seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        members=args.members,
    )

    with input_errors():
        table_ = tio.read_table(args.data, columns=columns, exclude=exclude, id_column=args.id_column,
                                label_column=args.label_column)
        labels = None if table_.labels is None else tio.binary_labels(table_.labels, table_.label_column, args.data)
    image = table_.X.ndim > 2
    scaling = args.scaling or cfg.get("scaling") or ("none" if image else "minmax")
    X_all = table_.X
    if labels is not None:
        train_mask = labels == 0
        if not train_mask.any():
            raise InputError(f"{args.data}: every row is labelled an outlier; nothing to train on")
        X_train = X_all[train_mask]
    else:
        X_train = X_all
    if X_train.shape[0] < 2:
        raise InputError(f"{args.data}: need at least 2 training rows, got {X_train.shape[0]}")
    scaler = Scaler.fit(X_train, scaling)
    X_train_s = scaler.transform(X_train)

    n_feat = "x".join(str(s) for s in X_train.shape[1:])
    say(f"{PROG} fit: {type(det).__name__} on {X_train.shape[0]} rows x {n_feat} "
        f"{'pixels' if image else 'features'} from {args.data} (scaling: {scaling})")
    if labels is not None and labels.any():
        say(f"  {int(labels.sum())} rows labelled outliers (column {table_.label_column!r}) are left out of training")
    if not args.no_plots:
        prefetch_plotting()
    fit_detector(det, X_train_s, fit_kw, verbose=not args.quiet)
    thr_info = set_threshold(det, X_train_s, perc, contamination, f"{X_train.shape[0]} training rows")
    prep = Preprocessing(
        feature_names=table_.feature_names, scaler=scaler, id_column=table_.id_column,
        label_column=table_.label_column, input_format=fmt, row_shape=list(X_train.shape[1:]),
    )
    metrics = None
    if labels is not None and 0 < labels.sum() < labels.size:
        all_scores = det.score(scaler.transform(X_all), batch_size=score_batch(len(X_all)))
        metrics = {"training_file": dict(compute_metrics(labels, all_scores, det.threshold),
                                         source=str(args.data), note_in_sample="labelled-normal rows were training rows")}
    data_info = {"source": str(Path(args.data)), "format": fmt, "n_rows_file": int(X_all.shape[0]),
                 "n_rows_train": int(X_train.shape[0]), "row_shape": list(X_train.shape[1:]),
                 "feature_names": table_.feature_names}
    plots_written: list[Path] = []
    plots = None
    if not args.no_plots:
        train_scores = det.score(X_train_s, batch_size=score_batch(len(X_train_s)))

        def write_plots(folder: Path) -> None:
            plots_written.extend(make_plots(folder, det, scores=train_scores))

        plots = write_plots
    folder = save_model(out, det, prep, data_info=data_info, threshold_info=thr_info, training=settings,
                        metrics=metrics, plots=plots)
    say(_fit_summary(det, thr_info))
    if metrics is not None:
        say("  in-sample metrics on the whole file (labelled-normal rows were training rows):")
        say(table(metrics_rows(metrics["training_file"]), header=("metric", "value"), indent="    "))
    say(f"  saved model to {out} (version {folder.name})" + (f"; plots in {folder / 'plots'}" if plots_written else ""))
    say(f"  done in {time.perf_counter() - t0:.1f} s")
    return 0


def _fit_summary(det, thr_info) -> str:
    lines = [f"  trained {det.epochs_done} epochs; threshold {describe_threshold(thr_info, det.threshold)}"]
    if det.history:
        rows = [(k, v[0], v[-1]) for k, v in det.history.items() if v and any(x != 0 for x in v)]
        lines.append(table(rows, header=("loss term", "first epoch", "last epoch"), indent="    "))
    return "\n".join(lines)
