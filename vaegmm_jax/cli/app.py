"""The ``vaegmm`` command line (also ``python -m vaegmm_jax``).

Subcommands::

    vaegmm demo     [--out DIR] [--epochs N] [--dataset breast_cancer|thyroid]
    vaegmm fit      DATA --detector vaegmm|aegmm|vae --out DIR [options]
    vaegmm score    DATA --model DIR --out FILE [--chunk-rows N]
    vaegmm evaluate DATA --labels COL --model DIR [--out DIR]
    vaegmm info     DIR [--json]

Exit codes: 0 success; 2 bad usage or bad input (a one-line reason on stderr);
1 internal error (with a traceback, please report it). Set ``VAEGMM_DEBUG=1`` to
get tracebacks for bad-input errors too.

A model folder written by ``fit`` holds a pointer ``CURRENT`` and the version folder it
names (see :mod:`vaegmm_jax.io.checkpoint`), which holds the detector checkpoint
(``detector.json``, ``arrays/``), ``preprocessing.json`` (feature names, the scaler fitted
on the training rows, identifier/label columns), ``model_card.json`` and ``plots/``. All of
them are replaced as one unit: ``fit --overwrite`` writes a complete new version before the
pointer moves, so a fit killed at any moment leaves the old model whole (detector and
scaling together), and ``score``/``evaluate``/``info`` read every file from the one
version the pointer named when they started.

The score output's columns are the identifier column (or ``row``), ``score`` and
``is_outlier``: an identifier column named ``score`` or ``is_outlier`` is refused (at
``fit`` and at ``score``) rather than silently overwritten in the output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

PROG = "vaegmm"
DETECTORS = {"vaegmm": "OutlierVAEGMM", "aegmm": "OutlierAEGMM", "vae": "OutlierVAE"}
_CLASS_TO_KIND = {v: k for k, v in DETECTORS.items()}
DEFAULT_CHUNK_ROWS = 65536
SCORE_BATCH = 16384
_MIXTURE_SAMPLE = 2000
_CONFIG_KEYS = {"type", "preset", "detector", "fit", "scaling", "threshold_perc", "contamination"}


class UsageError(ValueError):
    """Bad command-line usage or input: reported as one line, exit code 2."""


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


def _one_line(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _pow2_at_least(n: int, cap: int = SCORE_BATCH) -> int:
    n = max(8, int(n))
    return min(cap, 1 << (n - 1).bit_length())


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, indent: str = "  ") -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    if header:
        cells = [list(header)] + cells
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = []
    for k, r in enumerate(cells):
        lines.append(indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if header and k == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load_json_file(path: str, what: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} not found")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{what} {p} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise UsageError(f"{what} {p} must hold a JSON object")
    return data


def _is_model_dir(p: Path) -> bool:
    """A model folder: a versioned one (with the pointer file) or one of the earlier layout."""
    from vaegmm_jax.io.checkpoint import POINTER_FILE

    return (p / POINTER_FILE).is_file() or (p / "detector.json").is_file()


def _check_parents(path: Path, flag: str) -> None:
    """Refuses a path whose existing ancestor is a file (``--out afile/x``): found before any work."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuses to replace anything but an earlier model folder (saving replaces the folder)."""
    _check_parents(out, "--out")
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    from vaegmm_jax.io.checkpoint import is_save_debris

    # a folder holding only what a killed first fit left (a half-written version) counts as
    # empty: the save removes that debris
    if all(is_save_debris(e.name) for e in out.iterdir()):
        return
    if not _is_model_dir(out):
        raise UsageError(f"--out {out} exists and is not a model folder; choose a new or empty folder")
    if not overwrite:
        raise UsageError(f"--out {out} already holds a model; pass --overwrite to replace it")


# --------------------------------------------------------------------------- #
# Detectors, presets and configuration
# --------------------------------------------------------------------------- #


def _detector_class(kind: str):
    import vaegmm_jax

    name = DETECTORS[kind]
    cls = getattr(vaegmm_jax, name, None)
    if cls is None:
        try:  # the VAE detector may exist before the package exports it
            from vaegmm_jax.detectors import vae_detector

            cls = getattr(vae_detector, name, None)
        except ImportError:
            cls = None
    if cls is None:
        raise UsageError(f"--detector {kind} needs vaegmm_jax.{name}, which this installation does not provide")
    return cls


def _presets_module():
    try:
        from vaegmm_jax.detectors import presets
    except ImportError as err:
        raise UsageError(f"presets are not available in this installation (vaegmm_jax.detectors.presets: {err})") from err
    return presets


def _preset_names(presets) -> list[str] | None:
    for attr in ("list_presets", "available", "names"):
        fn = getattr(presets, attr, None)
        if callable(fn):
            try:
                return sorted(str(n) for n in fn())
            except Exception:
                return None
    table = getattr(presets, "PRESETS", None)
    return sorted(table) if isinstance(table, dict) else None


def _optimizer(lr: float | None):
    if lr is None:
        return None
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise UsageError(f"learning rate must be a positive number, got {lr!r}")
    import optax

    return optax.adam(float(lr))


def build_detector(
    kind: str | None,
    preset: str | None,
    detector_kwargs: dict | None,
    fit_kwargs: dict | None,
    *,
    seed: int | None,
    epochs: int | None,
    batch_size: int | None,
    learning_rate: float | None,
    members: int | None = None,
):
    """The detector and the keyword arguments for its fit (preset < config < flags).

    Returns (detector, fit kwargs, description of the training settings).
    """
    det_kw = dict(detector_kwargs or {})
    if seed is not None:
        det_kw["seed"] = int(seed)
    if members is not None:
        det_kw["n_members"] = int(members)
    fit_kw: dict[str, Any] = {}
    if preset is not None:
        presets = _presets_module()
        names = _preset_names(presets)
        if names is not None and preset not in names:
            raise UsageError(f"unknown preset {preset!r}; available: {', '.join(names)}")
        try:
            det = presets.make_detector(preset, **det_kw)
        except KeyError as err:
            raise UsageError(f"unknown preset {preset!r} ({_one_line(err)})") from err
        fit_kw.update(dict(presets.fit_kwargs(preset) or {}))
        preset_lr = getattr(getattr(presets, "PRESETS", {}).get(preset), "learning_rate", None)
        actual = _CLASS_TO_KIND.get(type(det).__name__)
        if kind is not None and actual is not None and actual != kind:
            raise UsageError(f"preset {preset!r} builds a {type(det).__name__}, not --detector {kind}")
        kind = actual or kind
    else:
        preset_lr = None
        if kind is None:
            raise UsageError("choose a model with --detector vaegmm|aegmm|vae (or --preset NAME)")
        cls = _detector_class(kind)
        try:
            det = cls(**det_kw)
        except TypeError as err:
            raise UsageError(f"bad detector setting in the configuration: {_one_line(err)}") from err
    fit_kw.update(dict(fit_kwargs or {}))
    lr = fit_kw.pop("learning_rate", None)
    if learning_rate is not None:
        lr = learning_rate
    if epochs is not None:
        fit_kw["epochs"] = int(epochs)
    if batch_size is not None:
        fit_kw["batch_size"] = int(batch_size)
    if lr is not None:
        fit_kw["optimizer"] = _optimizer(lr)
    if "cov_elbo" in fit_kw and isinstance(fit_kw["cov_elbo"], dict):
        fit_kw["cov_elbo"] = dict(fit_kw["cov_elbo"])
    settings = {
        "detector_kind": kind,
        "preset": preset,
        # None: the detector's default optimizer (recorded in its fit_config)
        "learning_rate": lr if lr is not None else preset_lr,
        "fit_kwargs": {k: v for k, v in fit_kw.items() if k != "optimizer"},
    }
    return det, fit_kw, settings


def _fit_detector(det, X: np.ndarray, fit_kw: dict, verbose: bool) -> dict:
    kw = dict(fit_kw)
    kw.setdefault("verbose", verbose)
    try:
        return det.fit(X, **kw)
    except TypeError as err:
        if "unexpected keyword" in str(err) or "got an unexpected" in str(err):
            raise UsageError(f"bad fit setting for {type(det).__name__}: {_one_line(err)}") from err
        raise


def _check_percentile(value: Any, name: str) -> float:
    """A percentile in [0, 100] (finite); UsageError naming the setting otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 100.0:
        raise UsageError(f"{name} must be a number in [0, 100], got {value!r}")
    return float(value)


def _check_fraction(value: Any, name: str) -> float:
    """An outlier fraction in the open interval (0, 1); UsageError naming the setting otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise UsageError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def _threshold(det, X: np.ndarray, perc: float | None, contamination: float | None, n_desc: str) -> dict:
    if contamination is not None:
        c = _check_fraction(contamination, "--contamination")
        perc = 100.0 * (1.0 - c)
        info = {"method": "contamination", "contamination": c, "percentile": perc}
    else:
        perc = 95.0 if perc is None else _check_percentile(perc, "--threshold-perc")
        info = {"method": "percentile", "percentile": perc}
    det.infer_threshold(X, threshold_perc=perc, batch_size=_pow2_at_least(len(X)))
    info["computed_on"] = n_desc
    return info


def _describe_threshold(info: dict | None, value) -> str:
    if value is None:
        return "none"
    if not info:
        return f"{_fmt(float(value))}"
    if info.get("method") == "contamination":
        how = f"contamination {info['contamination']:g}: {info['percentile']:g}th percentile"
    elif info.get("method") == "percentile":
        how = f"{info['percentile']:g}th percentile"
    else:
        how = str(info.get("method"))
    on = info.get("computed_on")
    return f"{_fmt(float(value))} ({how}" + (f" of the scores of {on})" if on else ")")


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #


def compute_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Precision/recall/F1 at the threshold (score > threshold), at the true outlier ratio,
    AUROC, average precision and the F1-optimal threshold."""
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, np.float64)
    n_out = int(labels.sum())
    out: dict[str, Any] = {"n_rows": int(labels.size), "n_outliers": n_out, "outlier_fraction": n_out / max(1, labels.size)}
    try:
        from vaegmm_jax.evaluation import metrics as M

        prf = M.precision_recall_f1
        at_ratio = M.precision_recall_f1_at_ratio
        auroc, ap, f1opt = M.auroc, M.average_precision, M.f1_optimal_threshold
    except ImportError:  # pragma: no cover - metrics.py ships with the package
        M = None
    if threshold is not None:
        pred = (scores > float(threshold)).astype(np.int64)
        if M is not None:
            p, r, f = prf(labels, pred)
        else:  # pragma: no cover
            from sklearn.metrics import precision_recall_fscore_support

            p, r, f, _ = precision_recall_fscore_support(labels, pred, average="binary", zero_division=0)
        out.update(threshold=float(threshold), precision=float(p), recall=float(r), f1=float(f),
                   n_flagged=int(pred.sum()))
    both = 0 < n_out < labels.size
    if both:
        if M is not None:
            ratio = at_ratio(scores, labels, n_out / labels.size)
            out["at_true_ratio"] = {"precision": ratio.precision, "recall": ratio.recall, "f1": ratio.f1}
            out["auroc"] = auroc(labels, scores)
            out["average_precision"] = ap(labels, scores)
            t, f = f1opt(labels, scores)
            out["f1_optimal"] = {"threshold": t, "f1": f}
        else:  # pragma: no cover
            from sklearn.metrics import average_precision_score, roc_auc_score

            out["auroc"] = float(roc_auc_score(labels, scores))
            out["average_precision"] = float(average_precision_score(labels, scores))
    else:
        out["note"] = "labels hold one class only: AUROC and average precision are undefined"
    return out


def metrics_rows(m: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    if "precision" in m:
        rows += [("precision @ threshold", m["precision"]), ("recall @ threshold", m["recall"]),
                 ("F1 @ threshold", m["f1"])]
    if "at_true_ratio" in m:
        rows.append((f"F1 @ true outlier ratio ({100 * m['outlier_fraction']:.1f}%)", m["at_true_ratio"]["f1"]))
    rows += [("AUROC", m.get("auroc")), ("average precision", m.get("average_precision"))]
    if "f1_optimal" in m:
        rows.append(("best possible F1 (oracle threshold)", m["f1_optimal"]["f1"]))
    return rows


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def _is_gmm(det) -> bool:
    return hasattr(getattr(det, "model", None), "sampled_mixture_inputs") and getattr(det, "gmm_params", None) is not None


def _make_plots(folder: Path, det, scores=None, labels=None, X_sample=None, labels_sample=None,
                history: bool = True, images=None, image_scores=None, image_labels=None) -> list[Path]:
    from vaegmm_jax.evaluation import plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    title = type(det).__name__
    if history and det.history:
        written.append(plots.save_figure(plots.plot_training_curves(det.history, title=f"{title}: training loss terms"),
                                         folder / "training_curves.png"))
    if scores is not None:
        written.append(plots.save_figure(
            plots.plot_score_histogram(scores, labels, det.threshold, title=f"{title}: scores"),
            folder / "score_histogram.png"))
        if labels is not None and 0 < int(np.sum(labels)) < len(labels):
            written.append(plots.save_figure(plots.plot_roc_pr(labels, scores, threshold=det.threshold, title=title),
                                             folder / "roc_pr.png"))
    if X_sample is not None and _is_gmm(det) and len(X_sample) >= 2:
        written.append(plots.save_figure(plots.plot_mixture(det, X_sample, labels=labels_sample), folder / "mixture.png"))
    if images is not None and len(images):
        written.append(plots.save_figure(plots.plot_image_grid(images, image_scores, labels=image_labels),
                                         folder / "top_outliers.png"))
    return written


# --------------------------------------------------------------------------- #
# Saving a trained model with its preprocessing and card
# --------------------------------------------------------------------------- #


#: what ``fit`` writes beside the checkpoint: a new model defines all of them (a previous
#: model's copies are never carried over, so --no-plots leaves no stale plots)
_MODEL_FILES = ("preprocessing.json", "model_card.json", "plots")


def _save_model(out: Path, det, prep, *, data_info: dict, threshold_info: dict, training: dict,
                metrics: dict | None, plots: Any = None) -> Path:
    """Saves detector, preprocessing, model card and (``plots(folder)``) plots as one new
    version of the model folder ``out``; returns the version's folder.

    Every file is written into the new version before it goes live: a failure or a kill
    at any point leaves the previous model, all of its files, as it was.
    """
    from vaegmm_jax.io.checkpoint import resolve_checkpoint, save_detector
    from vaegmm_jax.io.model_card import build_model_card, write_model_card
    from vaegmm_jax.io.tables import save_preprocessing

    card = build_model_card(det, data=data_info, preprocessing=prep.to_dict(), threshold=threshold_info,
                            training=training, metrics=metrics)

    def add_files(folder: Path) -> None:
        save_preprocessing(folder, prep)
        write_model_card(folder, card)
        if plots is not None:
            plots(folder / "plots")

    save_detector(det, out, add_files=add_files, replace=_MODEL_FILES)
    return resolve_checkpoint(out)


# --------------------------------------------------------------------------- #
# fit
# --------------------------------------------------------------------------- #


def cmd_fit(args) -> int:
    from vaegmm_jax.io import tables as tio

    t0 = time.perf_counter()
    out = Path(args.out)
    _check_out_dir(out, args.overwrite)
    if args.id_column is not None:
        _check_id_column(args.id_column, "--id-column")
    cfg = _load_json_file(args.config, "--config file") if args.config else {}
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise UsageError(f"--config: unknown keys {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}")
    for key in ("detector", "fit"):
        if key in cfg and not isinstance(cfg[key], dict):
            raise UsageError(f"--config: {key!r} must be an object of keyword arguments")
    kind = args.detector or cfg.get("type")
    if kind is not None and kind not in DETECTORS:
        raise UsageError(f"--config: unknown type {kind!r}; use one of {', '.join(DETECTORS)}")
    preset = args.preset or cfg.get("preset")
    if args.threshold_perc is None and args.contamination is None:
        if "threshold_perc" in cfg and "contamination" in cfg:
            raise UsageError("--config: give threshold_perc or contamination, not both")
        args.threshold_perc, args.contamination = cfg.get("threshold_perc"), cfg.get("contamination")
        # checked now, not after the training they would otherwise throw away
        if args.threshold_perc is not None:
            _check_percentile(args.threshold_perc, "--config: threshold_perc")
        if args.contamination is not None:
            _check_fraction(args.contamination, "--config: contamination")

    columns = tio.parse_column_list(args.columns)
    exclude = tio.parse_column_list(args.exclude_columns)
    table = tio.read_table(args.data, columns=columns, exclude=exclude, id_column=args.id_column,
                           label_column=args.label_column)
    fmt = tio.file_format(args.data)
    image = table.X.ndim > 2
    scaling = args.scaling or cfg.get("scaling") or ("none" if image else "minmax")
    X_all = table.X
    labels = None
    if table.labels is not None:
        labels = tio.binary_labels(table.labels, table.label_column, args.data)
        train_mask = labels == 0
        if not train_mask.any():
            raise UsageError(f"{args.data}: every row is labelled an outlier; nothing to train on")
        X_train = X_all[train_mask]
    else:
        X_train = X_all
    if X_train.shape[0] < 2:
        raise UsageError(f"{args.data}: need at least 2 training rows, got {X_train.shape[0]}")
    scaler = tio.Scaler.fit(X_train, scaling)
    X_train_s = scaler.transform(X_train)

    det, fit_kw, settings = build_detector(
        kind, preset, cfg.get("detector"), cfg.get("fit"), seed=args.seed, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, members=args.members,
    )
    n_feat = "x".join(str(s) for s in X_train.shape[1:])
    _say(f"{PROG} fit: {type(det).__name__} on {X_train.shape[0]} rows x {n_feat} "
         f"{'pixels' if image else 'features'} from {args.data} (scaling: {scaling})")
    if labels is not None and labels.any():
        _say(f"  {int(labels.sum())} rows labelled outliers (column {table.label_column!r}) are left out of training")
    _fit_detector(det, X_train_s, fit_kw, verbose=not args.quiet)
    n_desc = f"{X_train.shape[0]} training rows"
    thr_info = _threshold(det, X_train_s, args.threshold_perc, args.contamination, n_desc)
    prep = tio.Preprocessing(
        feature_names=table.feature_names, scaler=scaler, id_column=table.id_column,
        label_column=table.label_column, input_format=fmt, row_shape=list(X_train.shape[1:]),
    )
    metrics = None
    all_scores = None
    if labels is not None and 0 < labels.sum() < labels.size:
        all_scores = det.score(scaler.transform(X_all), batch_size=_pow2_at_least(len(X_all)))
        metrics = {"training_file": dict(compute_metrics(labels, all_scores, det.threshold),
                                         source=str(args.data), note_in_sample="labelled-normal rows were training rows")}
    data_info = {"source": str(Path(args.data)), "format": fmt, "n_rows_file": int(X_all.shape[0]),
                 "n_rows_train": int(X_train.shape[0]), "row_shape": list(X_train.shape[1:]),
                 "feature_names": table.feature_names}
    plots_written: list[Path] = []
    make_plots = None
    if not args.no_plots:
        train_scores = det.score(X_train_s, batch_size=_pow2_at_least(len(X_train_s)))

        def make_plots(folder: Path) -> None:
            plots_written.extend(_make_plots(folder, det, scores=train_scores))

    folder = _save_model(out, det, prep, data_info=data_info, threshold_info=thr_info, training=settings,
                         metrics=metrics, plots=make_plots)
    _say(_fit_summary(det, thr_info))
    if metrics is not None:
        _say("  in-sample metrics on the whole file (labelled-normal rows were training rows):")
        _say(_table(metrics_rows(metrics["training_file"]), header=("metric", "value"), indent="    "))
    _say(f"  saved model to {out} (version {folder.name})"
         + (f"; plots in {folder / 'plots'}" if plots_written else ""))
    _say(f"  done in {time.perf_counter() - t0:.1f} s")
    return 0


def _fit_summary(det, thr_info) -> str:
    lines = [f"  trained {det.epochs_done} epochs; threshold {_describe_threshold(thr_info, det.threshold)}"]
    if det.history:
        rows = [(k, v[0], v[-1]) for k, v in det.history.items() if v and any(x != 0 for x in v)]
        lines.append(_table(rows, header=("loss term", "first epoch", "last epoch"), indent="    "))
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Loading a model and streaming a file through it
# --------------------------------------------------------------------------- #


def _check_model_dir(model_dir: str | os.PathLike, hint: str = "") -> Path:
    p = Path(model_dir)
    if not p.exists():
        raise FileNotFoundError(f"no model folder {p}")
    if not p.is_dir() or not _is_model_dir(p):
        raise UsageError(f"{p} is not a model folder (no CURRENT or detector.json){hint}")
    return p


def _load_model(model_dir: str):
    """(detector, preprocessing or None, the version's folder), all of one version of the model."""
    from vaegmm_jax.detectors.loading import load_folder
    from vaegmm_jax.io.checkpoint import read_live
    from vaegmm_jax.io.tables import load_preprocessing

    p = _check_model_dir(model_dir, "; pass the --out folder of 'vaegmm fit'")

    def read(live):
        # the detector and its scaling from the same version folder: a concurrent fit --overwrite
        # can never pair a new detector with the old preprocessing
        return load_folder(live.folder, {}), load_preprocessing(live.folder), live.folder

    return read_live(p.resolve(), read)  # Orbax needs an absolute path


def _read_card(folder: Path) -> dict | None:
    from vaegmm_jax.io.model_card import read_model_card

    try:
        return read_model_card(folder)
    except ValueError as err:  # not UTF-8 (UnicodeDecodeError) or not JSON: name the file
        raise UsageError(f"{folder / 'model_card.json'} is corrupt: {_one_line(err)}") from err


def _check_id_column(name: str, where: str) -> None:
    from vaegmm_jax.io.tables import check_id_name

    try:
        check_id_name(name)
    except ValueError as err:
        raise UsageError(f"{where}: {err}") from err


class _Stream:
    """Reads a file in blocks, scales them, and keeps what the output needs (ids, labels, a sample)."""

    def __init__(self, det, prep, path: str, chunk_rows: int, id_column: str | None, label_column: str | None,
                 keep_sample: int = 0, seed: int = 0):
        from vaegmm_jax.io import tables as tio

        self.det, self.path = det, path
        self.scaler = prep.scaler if prep is not None else tio.Scaler("none")
        # without saved feature names (images, or a model saved from Python) every column
        # other than the identifier and label columns is a feature
        features = prep.feature_names if prep is not None else None
        id_col = id_column or (prep.id_column if prep is not None else None)
        kw: dict[str, Any] = dict(id_column=id_col, label_column=label_column, id_optional=id_column is None)
        if features is not None:
            kw["columns"] = features
        self.blocks = tio.iter_tables(path, chunk_rows=chunk_rows, **kw)
        self.ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.sizes: list[int] = []
        self.id_name: str | None = None
        self.keep_sample = keep_sample
        self._rng = np.random.default_rng(seed)
        self._sample_keys = np.zeros(0)
        self._sample_rows = np.zeros(0, np.int64)
        self._sample_x: np.ndarray | None = None
        self.first = next(self.blocks, None)
        if self.first is None:
            raise UsageError(f"{path}: no data rows")
        self.id_name = self.first.id_column
        self._check_shape(self.first.X)
        self.chunk_rows = chunk_rows

    def _check_shape(self, X: np.ndarray) -> None:
        want = tuple(self.det.input_shape)
        if tuple(X.shape[1:]) != want:
            if X.ndim == 2 and len(want) == 1:
                raise UsageError(f"{self.path}: {X.shape[1]} feature columns selected but the model expects {want[0]}")
            raise UsageError(f"{self.path}: rows of shape {tuple(X.shape[1:])} but the model expects {want}")

    def batch_size(self) -> int:
        n = self.first.n_rows
        return _pow2_at_least(n) if n < self.chunk_rows else min(SCORE_BATCH, _pow2_at_least(self.chunk_rows))

    def __iter__(self) -> Iterator[np.ndarray]:
        offset = 0
        for t in itertools.chain([self.first], self.blocks):
            self._check_shape(t.X)
            X = self.scaler.transform(t.X)
            n = t.n_rows
            self.sizes.append(n)
            if t.ids is not None:
                self.ids.append(t.ids)
            if t.labels is not None:
                self.labels.append(t.labels)
            if self.keep_sample:
                self._update_sample(X, offset)
            offset += n
            yield X

    def _update_sample(self, X: np.ndarray, offset: int) -> None:
        """A uniform sample without replacement over all rows: keep the smallest random keys."""
        keys = self._rng.random(X.shape[0])
        all_keys = np.concatenate([self._sample_keys, keys])
        rows = np.concatenate([self._sample_rows, np.arange(offset, offset + X.shape[0])])
        xs = X if self._sample_x is None else np.concatenate([self._sample_x, X])
        keep = np.argsort(all_keys, kind="stable")[: self.keep_sample]
        keep.sort()
        self._sample_keys, self._sample_rows, self._sample_x = all_keys[keep], rows[keep], xs[keep]

    def sample(self) -> tuple[np.ndarray | None, np.ndarray]:
        return self._sample_x, self._sample_rows

    def all_ids(self) -> np.ndarray | None:
        return np.concatenate(self.ids) if self.ids else None

    def all_labels(self) -> np.ndarray | None:
        return np.concatenate(self.labels) if self.labels else None


def _score_stream(det, stream: _Stream) -> np.ndarray:
    return det.score(iter(stream), batch_size=stream.batch_size())


def _require_threshold(det, override: float | None) -> float:
    if override is not None:
        if not math.isfinite(override):
            raise UsageError(f"--threshold must be finite, got {override}")
        det.threshold = float(override)
    if det.threshold is None:
        raise UsageError("the model has no threshold; pass --threshold T (or refit with --threshold-perc)")
    return float(det.threshold)


# --------------------------------------------------------------------------- #
# score
# --------------------------------------------------------------------------- #


def cmd_score(args) -> int:
    from vaegmm_jax.io import tables as tio

    t0 = time.perf_counter()
    chunk = _positive(args.chunk_rows, "--chunk-rows")
    tio.check_output_path(args.out)  # a bad output name or folder fails before any work
    tio.file_format(args.data)
    if args.id_column is not None:
        _check_id_column(args.id_column, "--id-column")
    det, prep, _ = _load_model(args.model)
    threshold = _require_threshold(det, args.threshold)
    stream = _Stream(det, prep, args.data, chunk, args.id_column, None)
    if stream.id_name is not None:  # the model's identifier column, from fit
        _check_id_column(stream.id_name, f"the identifier column of {args.data}")
    scores = _score_stream(det, stream)
    flags = (scores > threshold).astype(np.int8)
    writer = tio.ScoreWriter(args.out, stream.id_name)
    try:
        start = 0
        for i, n in enumerate(stream.sizes):
            ids = stream.ids[i] if stream.ids else None
            writer.write(ids, scores[start:start + n], flags[start:start + n])
            start += n
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    n = int(scores.shape[0])
    _say(f"{PROG} score: {n} rows from {args.data}; {int(flags.sum())} flagged as outliers "
         f"({100.0 * flags.sum() / max(1, n):.2f}%) at threshold {_fmt(threshold)}")
    _say(f"  wrote {path} (columns: {stream.id_name or 'row'}, score, is_outlier) in {time.perf_counter() - t0:.1f} s")
    return 0


def _positive(v, name: str) -> int:
    if v is None or int(v) < 1:
        raise UsageError(f"{name} must be a positive integer, got {v}")
    return int(v)


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #


def cmd_evaluate(args) -> int:
    from vaegmm_jax.io import tables as tio
    from vaegmm_jax.io.model_card import add_metrics

    t0 = time.perf_counter()
    chunk = _positive(args.chunk_rows, "--chunk-rows")
    tio.file_format(args.data)
    if args.out:
        _check_parents(Path(args.out), "--out")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UsageError(f"--out {args.out} exists and is not a folder")
    det, prep, folder = _load_model(args.model)
    threshold = _require_threshold(det, args.threshold)
    if prep is not None and prep.feature_names is not None and args.labels in prep.feature_names:
        raise UsageError(f"--labels {args.labels!r} is one of the model's feature columns")
    stream = _Stream(det, prep, args.data, chunk, None, args.labels, keep_sample=_MIXTURE_SAMPLE)
    scores = _score_stream(det, stream)
    labels = tio.binary_labels(stream.all_labels(), args.labels, args.data)
    m = compute_metrics(labels, scores, threshold)
    m["source"] = str(args.data)
    out = Path(args.out) if args.out else Path(args.model) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    x_sample, rows = stream.sample()
    images = image_scores = image_labels = None
    if len(det.input_shape) > 1:
        images, image_scores, image_labels = _top_images(det, prep, args.data, chunk, scores, labels)
    plots_written = _make_plots(out, det, scores=scores, labels=labels, X_sample=x_sample,
                                labels_sample=labels[rows] if x_sample is not None else None, history=True,
                                images=images, image_scores=image_scores, image_labels=image_labels)
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    card_note = None
    try:
        # into the model card of the version that was evaluated (in place: one file, atomically)
        add_metrics(folder, Path(args.data).name, m)
    except (OSError, ValueError) as err:  # a read-only or damaged card: the metrics are still in --out
        card_note = f"the metrics were not added to {folder / 'model_card.json'}: {_one_line(err)}"
    _say(f"{PROG} evaluate: {type(det).__name__} on {m['n_rows']} rows of {args.data} "
         f"({m['n_outliers']} labelled outliers, {100 * m['outlier_fraction']:.1f}%)")
    _say(f"  threshold {_fmt(threshold)}: {m.get('n_flagged', 0)} rows flagged")
    _say(_table(metrics_rows(m), header=("metric", "value")))
    if "note" in m:
        _say(f"  note: {m['note']}")
    if card_note:
        _say(f"  note: {card_note}")
    _say(f"  wrote {out / 'metrics.json'} and {len(plots_written)} plots to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _top_images(det, prep, path, chunk, scores, labels, n: int = 16):
    from vaegmm_jax.io import tables as tio

    top = np.argsort(-scores, kind="stable")[:n]
    want = {int(i) for i in top}
    got: dict[int, np.ndarray] = {}
    for t in tio.iter_tables(path, chunk_rows=chunk):
        for i in range(t.start, t.start + t.n_rows):
            if i in want:
                got[i] = t.X[i - t.start]
    imgs = np.stack([got[int(i)] for i in top])
    return imgs, scores[top], labels[top]


# --------------------------------------------------------------------------- #
# info
# --------------------------------------------------------------------------- #


def model_info(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything known about a saved model, from its JSON files (no arrays are loaded), all
    from the live version."""
    from vaegmm_jax.detectors.loading import detector_class
    from vaegmm_jax.io.checkpoint import read_json, read_live, read_meta
    from vaegmm_jax.io.model_card import history_summary
    from vaegmm_jax.io.tables import PREPROCESSING_FILE

    p = _check_model_dir(model_dir)

    def read(live):
        meta = read_meta(live.folder)  # checked: a damaged file is named, with its field
        detector_class(meta["detector"], live.folder / "detector.json")
        prep_file = live.folder / PREPROCESSING_FILE
        prep = read_json(prep_file) if prep_file.is_file() else None
        if prep is not None and not isinstance(prep, dict):
            raise UsageError(f"{prep_file} is corrupt: expected a JSON object")
        return meta, prep, _read_card(live.folder) or {}, live

    meta, prep, card, live = read_live(p.resolve(), read)
    history = meta.get("history") or {}
    return {
        "path": str(p.resolve()),
        "version": live.version,
        "detector": meta.get("detector"),
        "config": meta.get("config"),
        "fit": meta.get("fit"),
        "input_shape": meta.get("input_shape"),
        "epochs_done": meta.get("epochs_done"),
        "threshold": meta.get("threshold"),
        "threshold_method": card.get("threshold"),
        "preprocessing": prep,
        "data": card.get("data"),
        "training": card.get("training"),
        "history_summary": history_summary(history),
        "metrics": card.get("metrics") or {},
        "versions": card.get("versions") or meta.get("versions"),
        "device": card.get("device"),
        "created_at": card.get("created_at"),
        "format_version": meta.get("format_version"),
    }


def cmd_info(args) -> int:
    info = model_info(args.model_dir)
    if args.json:
        _say(json.dumps(info, indent=2))
        return 0
    _say(render_info(info))
    return 0


def _short_list(names: Sequence[str] | None, n: int = 8) -> str:
    if not names:
        return "-"
    shown = ", ".join(str(x) for x in names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else f" ({len(names)})")


def render_info(info: dict[str, Any]) -> str:
    cfg = info.get("config") or {}
    fit = info.get("fit") or {}
    prep = info.get("preprocessing") or {}
    data = info.get("data") or {}
    training = info.get("training") or {}
    versions = info.get("versions") or {}
    lines = [f"model folder   {info['path']}"]
    if info.get("version"):
        lines.append(f"version        {info['version']} (the live one; its files are in that folder)")
    lines.append(f"detector       {info.get('detector')}  (saved by vaegmm_jax {versions.get('vaegmm_jax', '?')},"
                 f" checkpoint format {info.get('format_version')})")
    simple = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
    lines.append("config         " + ", ".join(f"{k}={v}" for k, v in simple.items()))
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<12} " + ", ".join(f"{a}={b}" for a, b in v.items()))
    shape = info.get("input_shape") or []
    src = data.get("source")
    rows = data.get("n_rows_train")
    what = f"{shape[0]} features" if len(shape) == 1 else "x".join(str(s) for s in shape) + " per row"
    lines.append("data           " + (f"{rows} training rows" if rows is not None else "training rows") + f" x {what}"
                 + (f", from {src}" if src else ""))
    if prep:
        lines.append(f"features       {_short_list(prep.get('feature_names'))}")
        sc = prep.get("scaler") or {}
        lines.append(f"scaling        {sc.get('kind', 'none')} (fitted on the training rows; applied by score/evaluate)")
        lines.append(f"id / label     {prep.get('id_column') or '-'} / {prep.get('label_column') or '-'}")
    else:
        lines.append("preprocessing  none recorded (saved from Python): inputs are used as given")
    lines.append(f"threshold      {_describe_threshold(info.get('threshold_method'), info.get('threshold'))}")
    lr = training.get("learning_rate")
    opt = fit.get("optimizer") or {}
    lr_text = lr if lr is not None else opt.get("learning_rate", opt.get("name", "?"))
    lines.append(f"training       {info.get('epochs_done')} epochs, batch {fit.get('batch_size', '?')}, "
                 f"learning rate {lr_text}" + (f", preset {training['preset']}" if training.get("preset") else ""))
    other = {k: v for k, v in fit.items() if k not in ("epochs", "batch_size", "optimizer")}
    if other:
        lines.append("  fit settings " + ", ".join(f"{k}={v}" for k, v in other.items()))
    hs = info.get("history_summary") or {}
    if hs:
        rows_ = [(k, v["first"], v["last"], v["min"], v["min_epoch"]) for k, v in hs.items()]
        lines.append("training curve")
        lines.append(_table(rows_, header=("term", "first", "last", "min", "at epoch"), indent="  "))
    for name, m in (info.get("metrics") or {}).items():
        lines.append(f"metrics on {name}")
        lines.append(_table(metrics_rows(m), header=("metric", "value"), indent="  "))
    dev = info.get("device") or {}
    if versions:
        lines.append("versions       " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "device"))
    if dev:
        lines.append(f"device         {dev.get('backend')} ({dev.get('device_kind')})")
    if info.get("created_at"):
        lines.append(f"created        {info['created_at']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------- #

#: The demo trains the flagship detector at its library defaults (the data, a seed, nothing
#: else): the defaults are chosen on the development suite (benchmarks/RESULTS.md), and the
#: demo shows what a user who passes only the data gets, beside IsolationForest on the same split.
DEMO_SETTINGS = {
    "breast_cancer": {"kind": "vaegmm"},
    "thyroid": {"kind": "vaegmm"},
}


def _demo_data(name: str, seed: int):
    """(X, y, feature_names, description): y = 1 for outliers."""
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        # scikit-learn codes malignant as 0 and benign as 1; malignant tumours are the outliers
        y = (d.target == 0).astype(np.int64)
        names = [str(n).replace(" ", "_") for n in d.feature_names]
        return d.data.astype(np.float32), y, names, "breast cancer (scikit-learn), malignant = outlier"
    if name == "thyroid":
        from vaegmm_jax.data import datasets

        ds = datasets.load_odds("thyroid")
        names = [f"f{i}" for i in range(ds.X.shape[1])]
        return ds.X.astype(np.float32), ds.y.astype(np.int64), names, "ODDS thyroid, hyperfunction = outlier"
    raise UsageError(f"unknown demo data set {name!r}")


def cmd_demo(args) -> int:
    import pandas as pd

    from vaegmm_jax.io import tables as tio

    t0 = time.perf_counter()
    out = Path(args.out)
    _check_parents(out, "--out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    model_dir = out / "model"
    if model_dir.exists() and any(model_dir.iterdir()) and not _is_model_dir(model_dir):
        raise UsageError(f"{model_dir} exists and is not a model folder; choose another --out")
    if args.dataset == "thyroid" and not os.environ.get("VAEGMM_DATA"):
        raise UsageError("--dataset thyroid reads $VAEGMM_DATA/odds/thyroid.npz; set VAEGMM_DATA")
    settings = DEMO_SETTINGS[args.dataset]
    epochs = None if args.epochs is None else _positive(args.epochs, "--epochs")
    kind = args.detector or settings["kind"]
    X, y, names, desc = _demo_data(args.dataset, args.seed)

    rng = np.random.default_rng(args.seed)
    normal = rng.permutation(np.flatnonzero(y == 0))
    n_train = int(round(args.train_fraction * normal.size))
    train_idx = np.sort(normal[:n_train])
    test_idx = np.sort(np.concatenate([normal[n_train:], np.flatnonzero(y == 1)]))
    scaler = tio.Scaler.fit(X[train_idx], "minmax")  # fitted on the training rows only
    X_tr, X_te, y_te = scaler.transform(X[train_idx]), scaler.transform(X[test_idx]), y[test_idx]

    (out / "data").mkdir(parents=True, exist_ok=True)
    for fname, idx in (("train.csv", train_idx), ("test.csv", test_idx)):
        frame = pd.DataFrame(X[idx], columns=names)
        frame.insert(0, "id", idx)
        frame["label"] = y[idx]
        frame.to_csv(out / "data" / fname, index=False)

    det, fit_kw, training = build_detector(kind, None, {}, {}, seed=args.seed, epochs=epochs,
                                           batch_size=None, learning_rate=None)
    _say(f"{PROG} demo: {desc}")
    _say(f"  train: {len(train_idx)} normal rows; test: {int((y_te == 0).sum())} normal + {int(y_te.sum())} outliers; "
         f"{X.shape[1]} features, min-max scaled on the training rows")
    t_fit = time.perf_counter()
    _fit_detector(det, X_tr, fit_kw, verbose=not args.quiet)
    t_fit = time.perf_counter() - t_fit
    fc = det.fit_config
    _say(f"  detector: {type(det).__name__}(seed={args.seed}) at its defaults: {fc.get('epochs')} epochs"
         f"{' (' + fc['epochs_rule'] + ')' if 'epochs_rule' in fc else ''}, batch {fc.get('batch_size')}, "
         f"adam lr {fc.get('optimizer', {}).get('learning_rate', 'custom')}, input scaling {fc.get('scaler')}")
    thr_info = _threshold(det, X_tr, 95.0, None, f"{len(train_idx)} training rows")
    batch = _pow2_at_least(len(X_tr))  # one scoring shape for train and test: one compilation
    scores = det.score(X_te, batch_size=batch)
    m = compute_metrics(y_te, scores, det.threshold)
    m["source"] = "demo test split"
    # the one-line baseline users compare against, on the same rows
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    iforest = IsolationForest(random_state=args.seed).fit(X_tr)
    m["isolation_forest_auroc"] = float(roc_auc_score(y_te, -iforest.score_samples(X_te)))
    prep = tio.Preprocessing(feature_names=names, scaler=scaler, id_column="id", label_column="label",
                             input_format="csv", row_shape=[X.shape[1]])
    data_info = {"source": str(out / "data" / "train.csv"), "dataset": desc, "n_rows_train": len(train_idx),
                 "n_rows_test": len(test_idx), "row_shape": [X.shape[1]], "feature_names": names,
                 "split": f"{args.train_fraction:g} of the normal rows for training, seed {args.seed}"}
    _save_model(model_dir, det, prep, data_info=data_info, threshold_info=thr_info, training=training,
                metrics={"demo test split": m})
    pd.DataFrame({"id": test_idx, "label": y_te, "score": scores, "is_outlier": (scores > det.threshold).astype(int)}
                 ).to_csv(out / "scores.csv", index=False, float_format="%.7g")
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    plots_written = _make_plots(out / "plots", det, scores=scores, labels=y_te, X_sample=X_te, labels_sample=y_te)

    _say(f"  trained in {t_fit:.1f} s; threshold {_describe_threshold(thr_info, det.threshold)}")
    _say("")
    _say(_table(metrics_rows(m), header=("test metric", "value")))
    verdict = "at or above" if m.get("auroc", 0.0) >= m["isolation_forest_auroc"] else "below"
    _say(f"  IsolationForest() on the same split: AUROC {m['isolation_forest_auroc']:.4f} "
         f"({type(det).__name__} {m.get('auroc', float('nan')):.4f}, {verdict} it)")
    _say("")
    _say(f"  wrote {model_dir}/ (checkpoint, preprocessing.json, model_card.json), {out / 'scores.csv'},")
    _say(f"        {out / 'metrics.json'}, {len(plots_written)} plots in {out / 'plots'}, data in {out / 'data'}")
    _say("  try next:")
    _say(f"    {PROG} info {model_dir}")
    _say(f"    {PROG} score {out / 'data' / 'test.csv'} --model {model_dir} --out {out / 'test_scores.csv'}")
    _say(f"    {PROG} evaluate {out / 'data' / 'test.csv'} --labels label --model {model_dir}")
    _say(f"    {PROG} fit {out / 'data' / 'train.csv'} --detector {kind} --id-column id --label-column label "
         f"--out my_model")
    _say(f"  total {time.perf_counter() - t0:.1f} s")
    return 0


# --------------------------------------------------------------------------- #
# Argument parsing and the entry point
# --------------------------------------------------------------------------- #


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line (exit code 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number_arg(low: float, high: float, closed: bool, what: str):
    """An argparse type: a number in [low, high] (``closed``) or (low, high), refused at parsing,
    before any training (nan and inf never pass)."""
    interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (low <= value <= high if closed else low < value < high):
            raise argparse.ArgumentTypeError(f"must be {what} in {interval}, got {text}")
        return value

    return parse


#: --threshold-perc and --contamination
_percentile_arg = _number_arg(0.0, 100.0, True, "a percentile")
_fraction_arg = _number_arg(0.0, 1.0, False, "an outlier fraction")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from vaegmm_jax._version import __version__

    p = _Parser(prog=PROG, description="Deep density-based outlier detection (VAEGMM, DAGMM/AEGMM, VAE) with JAX.",
                epilog="Exit codes: 0 success, 2 bad usage or input, 1 internal error.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("demo", help="train and evaluate a detector on a built-in data set (no network)",
                       description="Trains a detector on scikit-learn's breast-cancer data (malignant = outlier), "
                                   "prints test metrics and writes a model, scores and plots.")
    d.add_argument("--out", default=os.path.join("vaegmm_out", "demo"), help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: the detector's own, about 2000 optimizer steps)")
    d.add_argument("--dataset", choices=sorted(DEMO_SETTINGS), default="breast_cancer",
                   help="breast_cancer (ships with scikit-learn) or thyroid ($VAEGMM_DATA/odds/thyroid.npz)")
    d.add_argument("--detector", choices=sorted(DETECTORS), default=None, help="model type (default: vaegmm)")
    d.add_argument("--seed", type=int, default=0, help="data split and model seed (default: 0)")
    d.add_argument("--train-fraction", type=float, default=0.6, help="share of the normal rows used for training")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

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
    f.add_argument("--scaling", choices=("minmax", "standard", "none"), default=None,
                   help="feature scaling fitted on the training rows (default: minmax; none for images)")
    f.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: the detector's, about 2000 optimizer steps)")
    f.add_argument("--batch-size", type=int, default=None, help="minibatch rows (default: the detector's, 128)")
    f.add_argument("--learning-rate", type=float, default=None, help="Adam learning rate (library default 1e-3)")
    thr = f.add_mutually_exclusive_group()
    thr.add_argument("--threshold-perc", type=_percentile_arg, default=None, metavar="P",
                     help="threshold = P-th percentile of the training scores (default 95)")
    thr.add_argument("--contamination", type=_fraction_arg, default=None, metavar="C",
                     help="expected outlier fraction in training data: threshold = (1 - C) quantile")
    f.add_argument("--seed", type=int, default=None, help="model seed (member i of an ensemble: seed + i)")
    f.add_argument("--members", type=_positive_int, default=None, metavar="M",
                   help="train an ensemble of M independently seeded models as one program (default 1); "
                        "its score is the mean of the members' scores standardised on the training rows")
    f.add_argument("--no-plots", action="store_true", help="skip the training plots")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_fit)

    s = sub.add_parser("score", help="score a data file with a saved model",
                       description="Streams DATA in chunks through the model; writes score and is_outlier "
                                   "(CSV/TSV/Parquet/NPY/NPZ by the extension of --out), one row per input row, in order.")
    s.add_argument("data", metavar="DATA")
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--out", required=True, metavar="FILE")
    s.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows read at a time (default %(default)s)")
    s.add_argument("--id-column", default=None, metavar="COL",
                   help="identifier column to copy to the output (default: the one given at fit, if present)")
    s.add_argument("--threshold", type=float, default=None, help="override the saved threshold")
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("evaluate", help="metrics and plots of a saved model on labelled data")
    e.add_argument("data", metavar="DATA")
    e.add_argument("--labels", required=True, metavar="COL", help="0/1 label column (1 = outlier)")
    e.add_argument("--model", required=True, metavar="DIR")
    e.add_argument("--out", default=None, metavar="DIR", help="output folder (default: MODEL/evaluation)")
    e.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    e.add_argument("--threshold", type=float, default=None, help="override the saved threshold")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="describe a saved model")
    i.add_argument("model_dir", metavar="DIR")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)
    return p


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from vaegmm_jax.engine.validation import NotFittedError

    return (ValueError, TypeError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError, NotFittedError, FloatingPointError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("VAEGMM_DEBUG", "") not in ("", "0")
    command = argv[0] if argv and not argv[0].startswith("-") else None
    prefix = f"{PROG} {command}" if command else PROG
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `vaegmm info DIR | head`: the reader left; nothing is wrong
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    except BaseException as err:  # noqa: BLE001 - the top of the program
        if isinstance(err, _bad_input_types()):
            if debug:
                traceback.print_exc()
            print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"{prefix}: internal error: {_one_line(err)} (please report this with the traceback above)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
