"""``vaegmm score DATA --model DIR --out FILE``: streams a data file through a saved model and
writes one row per input row, in order: the identifier (or ``row``), ``score`` and ``is_outlier``.

An identifier column named ``score`` or ``is_outlier`` is refused (at ``fit`` and here) rather
than silently overwritten in the output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vaegmm_jax.cli.args import finite_float, positive_int
from vaegmm_jax.cli.display import PROG, fmt, say
from vaegmm_jax.cli.errors import input_errors
from vaegmm_jax.cli.model_folder import load_model
from vaegmm_jax.cli.scoring import ScoreStream, check_id_column, require_threshold
from vaegmm_jax.io.scores import ScoreWriter, check_output_path
from vaegmm_jax.io.tables import DEFAULT_CHUNK_ROWS, file_format

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    s = sub.add_parser("score", help="score a data file with a saved model",
                       description="Streams DATA in chunks through the model; writes score and is_outlier "
                                   "(CSV/TSV/Parquet/NPY/NPZ by the extension of --out), one row per input row, in order.")
    s.add_argument("data", metavar="DATA")
    s.add_argument("--model", required=True, metavar="DIR")
    s.add_argument("--out", required=True, metavar="FILE")
    s.add_argument("--chunk-rows", type=positive_int, default=DEFAULT_CHUNK_ROWS,
                   help="rows read at a time (default %(default)s)")
    s.add_argument("--id-column", default=None, metavar="COL",
                   help="identifier column to copy to the output (default: the one given at fit, if present)")
    s.add_argument("--threshold", type=finite_float, default=None, help="override the saved threshold")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    with input_errors():  # a bad output name or folder fails before any work
        check_output_path(args.out)
        file_format(args.data)
    if args.id_column is not None:
        check_id_column(args.id_column, "--id-column")
    det, prep, _ = load_model(args.model)
    threshold = require_threshold(det, args.threshold)
    stream = ScoreStream(det, prep, args.data, args.chunk_rows, args.id_column, None)
    if stream.id_name is not None:  # the model's identifier column, from fit
        check_id_column(stream.id_name, f"the identifier column of {args.data}")
    scores = stream.score()
    flags = (scores > threshold).astype(np.int8)
    with input_errors():
        writer = ScoreWriter(args.out, stream.id_name)
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
    say(f"{PROG} score: {n} rows from {args.data}; {int(flags.sum())} flagged as outliers "
        f"({100.0 * flags.sum() / max(1, n):.2f}%) at threshold {fmt(threshold)}")
    say(f"  wrote {path} (columns: {stream.id_name or 'row'}, score, is_outlier) in {time.perf_counter() - t0:.1f} s")
    return 0
