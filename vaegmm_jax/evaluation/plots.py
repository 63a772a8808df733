"""Diagnostic plots (PNG, headless).

Every function builds a :class:`matplotlib.figure.Figure` directly (never
``pyplot``), so nothing here touches matplotlib's global backend or state and it
works without a display. Pass ``path`` to also write a PNG; the figure is
returned either way.

* :func:`plot_training_curves` - one panel per loss term, log scale where positive.
* :func:`plot_score_histogram` - scores of inliers/outliers with the threshold.
* :func:`plot_roc_pr` - ROC and precision-recall curves.
* :func:`plot_mixture` - the mixture input z = [latent, reconstruction features]
  coloured by the most likely mixture component (GMM detectors).
* :func:`plot_image_grid` - the top-scoring images.

Nothing here prints.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

__all__ = [
    "plot_training_curves",
    "plot_score_histogram",
    "plot_roc_pr",
    "mixture_inputs",
    "plot_mixture",
    "plot_image_grid",
    "save_figure",
]

_INLIER = "#1f77b4"
_OUTLIER = "#d62728"
_THRESH = "#222222"


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Writes ``fig`` as PNG (parent folders created) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", bbox_inches="tight")
    return path


def _finish(fig: Figure, path) -> Figure:
    """``fig``, written to ``path`` first when a path is given."""
    if path is not None:
        save_figure(fig, path)
    return fig


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, columns) of a panel grid for n panels (2 x 2 for four)."""
    cols = 2 if n == 4 else min(max_cols, max(1, n))
    return int(math.ceil(n / cols)), cols


def plot_training_curves(history: Mapping[str, Sequence[float]], path=None, title: str | None = None) -> Figure:
    """One small panel per loss term (per-epoch values); log y-axis when all values are positive.

    Args:
      history: {term: [value per epoch]} (a detector's ``history``).
      path: optional PNG path.
      title: optional figure title.
    """
    terms = [k for k, v in history.items() if len(v) > 0]
    if not terms:
        raise ValueError("the history is empty: nothing to plot (was the detector trained?)")
    # terms that are exactly zero throughout (e.g. the KL of a deterministic model) get no panel
    zero = [k for k in terms if not np.any(np.asarray(history[k], dtype=np.float64))]
    shown = [k for k in terms if k not in zero] or terms
    rows, cols = _grid(len(shown))
    fig = Figure(figsize=(3.4 * cols, 2.5 * rows), layout="constrained")
    for i, term in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = np.asarray(history[term], dtype=np.float64)
        epochs = np.arange(1, len(values) + 1)
        finite = np.isfinite(values)
        ax.plot(epochs[finite], values[finite], color=_INLIER, marker="o" if len(values) <= 20 else None, ms=3, lw=1.4)
        if finite.any() and np.all(values[finite] > 0) and values[finite].max() / values[finite].min() > 3:
            ax.set_yscale("log")
        last = f"  (last {values[finite][-1]:.4g})" if finite.any() else "  (no finite values)"
        ax.set_title(term + last, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
    if zero and shown is not terms:
        title = (title or "training loss terms") + f"  [zero throughout: {', '.join(zero)}]"
    fig.suptitle(title or "training loss terms", fontsize=11)
    return _finish(fig, path)


def _bins(values: np.ndarray, n: int = 50) -> np.ndarray:
    """(n + 1,) histogram bin edges spanning the (N,) values (a unit-wide range around a constant)."""
    lo, hi = np.percentile(values, [0, 100]) if values.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n + 1)


def plot_score_histogram(
    scores,
    labels=None,
    threshold: float | None = None,
    path=None,
    title: str | None = None,
    score_name: str = "energy (score)",
) -> Figure:
    """Histogram of scores, split into labelled inliers/outliers when ``labels`` (1 = outlier) are given.

    The threshold is drawn as a vertical line. Heavy right tails are clipped at the
    99.5th percentile of the scores (the count beyond is noted) so the bulk stays visible.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("no scores to plot")
    finite = np.isfinite(scores)
    s = scores[finite]
    lab = None if labels is None else np.asarray(labels).astype(int).ravel()[finite]
    cap = np.percentile(s, 99.5) if s.size > 200 else s.max()
    if threshold is not None and np.isfinite(threshold):
        cap = max(cap, float(threshold))
    clipped = int((s > cap).sum())
    shown = np.minimum(s, cap)
    bins = _bins(shown)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    if lab is None:
        ax.hist(shown, bins=bins, color=_INLIER, alpha=0.8, label=f"all rows (n={s.size})")
    else:
        ax.hist(shown[lab == 0], bins=bins, color=_INLIER, alpha=0.6, label=f"inliers (n={(lab == 0).sum()})")
        ax.hist(shown[lab == 1], bins=bins, color=_OUTLIER, alpha=0.6, label=f"outliers (n={(lab == 1).sum()})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(float(threshold), color=_THRESH, ls="--", lw=1.5, label=f"threshold {threshold:.4g}")
    ax.set_xlabel(score_name + (f"  ({clipped} rows above {cap:.3g} drawn at the edge)" if clipped else ""))
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "score distribution", fontsize=11)
    return _finish(fig, path)


def plot_roc_pr(labels, scores, path=None, title: str | None = None, threshold: float | None = None) -> Figure:
    """ROC and precision-recall curves (labels: 1 = outlier; higher score = more anomalous).

    When ``threshold`` is given, the operating point ``score > threshold`` is marked on both.
    """
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.shape[0]} vs {scores.shape[0]}")
    if labels.min() == labels.max():
        raise ValueError("ROC/PR curves need both inliers and outliers in the labels")
    fpr, tpr, _ = roc_curve(labels, scores)
    prec, rec, _ = precision_recall_curve(labels, scores)
    ap = average_precision_score(labels, scores)
    fig = Figure(figsize=(9.0, 3.9), layout="constrained")
    ax1 = fig.add_subplot(1, 2, 1)
    ax1.plot(fpr, tpr, color=_OUTLIER, lw=1.8, label=f"AUROC {auc(fpr, tpr):.3f}")
    ax1.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    ax1.set_xlabel("false positive rate")
    ax1.set_ylabel("true positive rate")
    ax1.set_title("ROC", fontsize=11)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.step(rec, prec, where="post", color=_INLIER, lw=1.8, label=f"AP {ap:.3f}")
    ax2.axhline(labels.mean(), color="0.6", ls=":", lw=1, label=f"base rate {labels.mean():.3f}")
    ax2.set_xlabel("recall")
    ax2.set_ylabel("precision")
    ax2.set_title("precision-recall", fontsize=11)
    if threshold is not None and np.isfinite(threshold):
        pred = scores > threshold
        tp = int((pred & (labels == 1)).sum())
        fp = int((pred & (labels == 0)).sum())
        p = tp / max(1, int(pred.sum()))
        r = tp / max(1, int((labels == 1).sum()))
        f = fp / max(1, int((labels == 0).sum()))
        ax1.plot([f], [r], "o", color=_THRESH, label="threshold")
        ax2.plot([r], [p], "o", color=_THRESH, label="threshold")
    for ax in (ax1, ax2):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is ax1 else "lower left")
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def mixture_inputs(detector, X, max_rows: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """z (n, D) and component memberships gamma (n, K) for up to ``max_rows`` rows of X.

    Uses ``detector.model.sampled_mixture_inputs`` with one latent sample per row
    (eval mode, no dropout). Rows beyond ``max_rows`` are subsampled evenly.
    """
    model = getattr(detector, "model", None)
    if model is None or not hasattr(model, "sampled_mixture_inputs") or getattr(detector, "params", None) is None:
        raise ValueError(f"{type(detector).__name__} has no fitted mixture model to plot")
    X = np.asarray(X, dtype=np.float32)
    if X.shape[0] > max_rows:
        X = X[np.linspace(0, X.shape[0] - 1, max_rows).astype(int)]
    noise = jax.random.normal(jax.random.PRNGKey(seed), (1, X.shape[0], model.latent_dim), jnp.float32)
    z, gamma = jax.jit(model.sampled_mixture_inputs)(detector.params, jnp.asarray(X), noise)
    return np.asarray(z[0], dtype=np.float64), np.asarray(gamma[0], dtype=np.float64)


def _z_names(latent_dim: int, d_total: int, recon_names: Sequence[str] | None) -> list[str]:
    """Axis names of the d_total mixture-input dimensions: the latent ones, then the reconstruction features."""
    names = [f"latent {i}" for i in range(latent_dim)]
    extra = d_total - latent_dim
    if recon_names is None or len(recon_names) != extra:
        recon_names = [f"recon feature {i}" for i in range(extra)]
    return names + list(recon_names)


def plot_mixture(
    detector=None,
    X=None,
    path=None,
    labels=None,
    *,
    z: np.ndarray | None = None,
    gamma: np.ndarray | None = None,
    latent_dim: int | None = None,
    max_panels: int = 6,
    title: str | None = None,
) -> Figure:
    """Scatter plots of the mixture input z = [latent, reconstruction features],
    coloured by the most likely mixture component; labelled outliers (1) drawn as crosses.

    Either pass a fitted GMM detector and X, or precomputed ``z`` (n, D) and
    ``gamma`` (n, K) with ``latent_dim``. One panel per pair of z dimensions (at most
    ``max_panels``), latent pairs first.
    """
    if z is None or gamma is None:
        if detector is None or X is None:
            raise ValueError("pass either detector and X, or z and gamma")
        z, gamma = mixture_inputs(detector, X)
        latent_dim = int(detector.model.latent_dim)
    z = np.asarray(z, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    if z.ndim != 2 or gamma.ndim != 2 or z.shape[0] != gamma.shape[0]:
        raise ValueError(f"z must be (n, D) and gamma (n, K) with the same n, got {z.shape} and {gamma.shape}")
    latent_dim = int(latent_dim if latent_dim is not None else z.shape[1] - 2)
    recon_names = None
    if detector is not None and z.shape[1] - latent_dim == 2:
        recon_names = (
            ["neg. cosine", "rel. Euclidean"] if getattr(detector, "recon_features_name", "") == "alibi"
            else ["rel. Euclidean", "cosine"]
        )
    names = _z_names(latent_dim, z.shape[1], recon_names)
    pairs = [(i, j) for i in range(z.shape[1]) for j in range(i + 1, z.shape[1])]
    pairs.sort(key=lambda p: (p[1] >= latent_dim) + (p[0] >= latent_dim))  # latent pairs first, stable
    pairs = pairs[:max_panels] or [(0, 0)]
    comp = gamma.argmax(axis=1)
    k = gamma.shape[1]
    lab = None if labels is None else np.asarray(labels).astype(int).ravel()
    if lab is not None and lab.shape[0] != z.shape[0]:
        lab = None
    rows, cols = _grid(len(pairs))
    fig = Figure(figsize=(3.5 * cols, 3.2 * rows), layout="constrained")
    cmap = _component_colors(k)
    for idx, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(rows, cols, idx + 1)
        for c in range(k):
            sel = comp == c
            if lab is not None:
                inl, out = sel & (lab == 0), sel & (lab == 1)
                ax.scatter(z[inl, i], z[inl, j], s=8, color=cmap[c], alpha=0.6, lw=0,
                           label=f"component {c}" if idx == 0 else None)
                ax.scatter(z[out, i], z[out, j], s=18, color=cmap[c], marker="x", lw=1)
            else:
                ax.scatter(z[sel, i], z[sel, j], s=8, color=cmap[c], alpha=0.6, lw=0,
                           label=f"component {c} ({int(sel.sum())})" if idx == 0 else None)
        ax.set_xlabel(names[i], fontsize=8)
        ax.set_ylabel(names[j], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if lab is not None and (lab == 1).any():
        fig.axes[0].scatter([], [], s=18, color="0.2", marker="x", lw=1, label="labelled outlier")
    fig.axes[0].legend(fontsize=7, markerscale=1.5)
    fig.suptitle(title or "mixture input z coloured by most likely component", fontsize=11)
    return _finish(fig, path)


def _component_colors(k: int) -> list:
    """k colours, one per mixture component (tab10, or tab20 beyond ten)."""
    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def plot_image_grid(images, scores, path=None, n: int = 16, labels=None, title: str | None = None) -> Figure:
    """The ``n`` highest-scoring images in a grid, each titled with its score (and label).

    Args:
      images: (N, H, W) or (N, H, W, C) with C in {1, 3}.
      scores: (N,) scores (higher = more anomalous).
      n: how many to show.
      labels: optional (N,) 0/1 labels shown in the titles.
    """
    images = np.asarray(images)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if images.ndim not in (3, 4) or images.shape[0] != scores.shape[0]:
        raise ValueError(f"images must be (N, H, W[, C]) with one score each, got {images.shape} and {scores.shape}")
    order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")[: max(1, int(n))]
    shown = images[order].astype(np.float64)
    vmin, vmax = float(shown.min()), float(shown.max())  # one grey scale for all tiles
    if not vmax > vmin:
        vmax = vmin + 1.0
    cols = min(8, len(order))
    rows = int(math.ceil(len(order) / cols))
    fig = Figure(figsize=(1.5 * cols, 1.7 * rows + 0.4), layout="constrained")
    for pos, i in enumerate(order):
        ax = fig.add_subplot(rows, cols, pos + 1)
        img = images[i]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow((img - vmin) / (vmax - vmin), interpolation="nearest")
        t = f"{scores[i]:.3g}"
        if labels is not None:
            t += f" ({'out' if int(np.asarray(labels)[i]) == 1 else 'in'})"
        ax.set_title(t, fontsize=7)
        ax.axis("off")
    fig.suptitle(title or f"top {len(order)} outliers by score", fontsize=10)
    return _finish(fig, path)
