"""``vaegmm evaluate DATA --labels COL --model DIR``: metrics and plots of a saved model on
labelled data; the metrics also go into the model card of the evaluated version."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vaegmm_jax.cli.args import finite_float, positive_int
from vaegmm_jax.cli.display import PROG, fmt, say, table
from vaegmm_jax.cli.errors import InputError, input_errors
from vaegmm_jax.cli.model_folder import check_parents, load_model
from vaegmm_jax.cli.reporting import compute_metrics, make_plots, metrics_rows
from vaegmm_jax.cli.scoring import ScoreStream, require_threshold
from vaegmm_jax.io import tables as tio
from vaegmm_jax.io.messages import one_line
from vaegmm_jax.io.model_card import MODEL_CARD_FILE, add_metrics

__all__ = ["add_parser", "run"]

#: rows of the file kept (a uniform sample) for the mixture plot
MIXTURE_SAMPLE = 2000


def add_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="metrics and plots of a saved model on labelled data")
    e.add_argument("data", metavar="DATA")
    e.add_argument("--labels", required=True, metavar="COL", help="0/1 label column (1 = outlier)")
    e.add_argument("--model", required=True, metavar="DIR")
    e.add_argument("--out", default=None, metavar="DIR", help="output folder (default: MODEL/evaluation)")
    e.add_argument("--chunk-rows", type=positive_int, default=tio.DEFAULT_CHUNK_ROWS)
    e.add_argument("--threshold", type=finite_float, default=None, help="override the saved threshold")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    chunk = args.chunk_rows
    with input_errors():
        tio.file_format(args.data)
    if args.out:
        check_parents(Path(args.out), "--out")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise InputError(f"--out {args.out} exists and is not a folder")
    det, prep, folder = load_model(args.model)
    threshold = require_threshold(det, args.threshold)
    if prep is not None and prep.feature_names is not None and args.labels in prep.feature_names:
        raise InputError(f"--labels {args.labels!r} is one of the model's feature columns")
    stream = ScoreStream(det, prep, args.data, chunk, None, args.labels, keep_sample=MIXTURE_SAMPLE)
    scores = stream.score()
    with input_errors():
        labels = tio.binary_labels(stream.all_labels(), args.labels, args.data)
    m = compute_metrics(labels, scores, threshold)
    m["source"] = str(args.data)
    out = Path(args.out) if args.out else Path(args.model) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    x_sample, rows = stream.sample()
    images = image_scores = image_labels = None
    if len(det.input_shape) > 1:
        images, image_scores, image_labels = _top_images(args.data, chunk, scores, labels)
    plots_written = make_plots(out, det, scores=scores, labels=labels, X_sample=x_sample,
                               labels_sample=labels[rows] if x_sample is not None else None, history=True,
                               images=images, image_scores=image_scores, image_labels=image_labels)
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    card_note = None
    try:
        # into the model card of the version that was evaluated (in place: one file, atomically)
        add_metrics(folder, Path(args.data).name, m)
    except (OSError, ValueError) as err:  # a read-only or damaged card: the metrics are still in --out
        card_note = f"the metrics were not added to {folder / MODEL_CARD_FILE}: {one_line(err)}"
    say(f"{PROG} evaluate: {type(det).__name__} on {m['n_rows']} rows of {args.data} "
        f"({m['n_outliers']} labelled outliers, {100 * m['outlier_fraction']:.1f}%)")
    say(f"  threshold {fmt(threshold)}: {m.get('n_flagged', 0)} rows flagged")
    say(table(metrics_rows(m), header=("metric", "value")))
    if "note" in m:
        say(f"  note: {m['note']}")
    if card_note:
        say(f"  note: {card_note}")
    say(f"  wrote {out / 'metrics.json'} and {len(plots_written)} plots to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _top_images(path, chunk: int, scores: np.ndarray, labels: np.ndarray, n: int = 16):
    """The n top-scored rows of an image file, their scores and labels (read again, by blocks)."""
    top = np.argsort(-scores, kind="stable")[:n]
    want = {int(i) for i in top}
    got: dict[int, np.ndarray] = {}
    with input_errors():
        for t in tio.iter_tables(path, chunk_rows=chunk):
            for i in range(t.start, t.start + t.n_rows):
                if i in want:
                    got[i] = t.X[i - t.start]
    imgs = np.stack([got[int(i)] for i in top])
    return imgs, scores[top], labels[top]
