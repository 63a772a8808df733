"""Metrics and plots of a detector's scores, as ``fit``, ``evaluate`` and ``demo`` report them."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compute_metrics", "metrics_rows", "make_plots"]

# Imported inside the functions below, only by the commands that need them, to keep
# `vaegmm --help` fast: vaegmm_jax.evaluation.metrics (scikit-learn, about 1 s to import) and
# vaegmm_jax.evaluation.plots (matplotlib).


def compute_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Precision/recall/F1 at the threshold (score > threshold), at the true outlier ratio,
    AUROC, average precision and the F1-optimal threshold."""
    from vaegmm_jax.evaluation import metrics as M

    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, np.float64)
    n_out = int(labels.sum())
    out: dict[str, Any] = {"n_rows": int(labels.size), "n_outliers": n_out, "outlier_fraction": n_out / max(1, labels.size)}
    if threshold is not None:
        pred = (scores > float(threshold)).astype(np.int64)
        p, r, f = M.precision_recall_f1(labels, pred)
        out.update(threshold=float(threshold), precision=float(p), recall=float(r), f1=float(f),
                   n_flagged=int(pred.sum()))
    if 0 < n_out < labels.size:
        ratio = M.precision_recall_f1_at_ratio(scores, labels, n_out / labels.size)
        out["at_true_ratio"] = {"precision": ratio.precision, "recall": ratio.recall, "f1": ratio.f1}
        out["auroc"] = M.auroc(labels, scores)
        out["average_precision"] = M.average_precision(labels, scores)
        t, f = M.f1_optimal_threshold(labels, scores)
        out["f1_optimal"] = {"threshold": t, "f1": f}
    else:
        out["note"] = "labels hold one class only: AUROC and average precision are undefined"
    return out


def metrics_rows(m: dict[str, Any]) -> list[tuple[str, Any]]:
    """The metrics of :func:`compute_metrics` as (name, value) rows for a table."""
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


def _is_gmm(det) -> bool:
    return hasattr(getattr(det, "model", None), "sampled_mixture_inputs") and getattr(det, "gmm_params", None) is not None


def prefetch_plotting() -> threading.Thread:
    """Imports the plotting module (matplotlib: about 1.5 s) on a daemon thread, so that it
    happens while a fit compiles and trains rather than after it (the import lock makes a
    later ``import`` wait for it rather than import twice)."""
    thread = threading.Thread(target=importlib.import_module, args=("vaegmm_jax.evaluation.plots",),
                              name="vaegmm-import-plots", daemon=True)
    thread.start()
    return thread


def make_plots(folder: Path, det, scores=None, labels=None, X_sample=None, labels_sample=None,
               history: bool = True, images=None, image_scores=None, image_labels=None) -> list[Path]:
    """Writes the plots the arguments allow into ``folder``; returns their paths.

    Training curves (``history``), the score histogram (``scores``, split by ``labels``),
    ROC and PR curves (both classes in ``labels``), the mixture of a VAEGMM/AEGMM on
    ``X_sample`` and a grid of the top-scored ``images``.
    """
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
