"""End-to-end ``vaegmm score`` rows/s for each input format: the same rows as NPY, Parquet and
CSV, scored by one fitted model (a fresh process each, the compile cache warm, so the figure is
reading + preprocessing + scoring + writing, not compilation).

    python benchmarks/cli_score_formats.py --rows 200000 --json benchmarks/results/cli_formats_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import pandas as pd

    x = common.make_data(args.rows)
    result = {"runner": "vaegmm score, end to end", "rows": args.rows, "features": common.N_FEATURES}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, VAEGMM_CACHE_DIR=str(tmp / "xla"))
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
        files = {"npy": tmp / "rows.npy", "parquet": tmp / "rows.parquet", "csv": tmp / "rows.csv"}
        np.save(files["npy"], x)
        frame.to_parquet(files["parquet"], index=False)
        frame.to_csv(files["csv"], index=False)
        common.timed_cli(["fit", files["npy"], "--detector", "vaegmm", "--epochs", "1", "--out", tmp / "model"], env)
        # fills the compile cache for the scoring shapes
        result["warmup_s"] = common.timed_cli(["score", files["npy"], "--model", tmp / "model", "--out", tmp / "warm.csv"], env)
        # what a process costs before and after the rows (imports, loading the model, compiled
        # programs from the cache): subtracted below
        np.save(tmp / "tiny.npy", x[:256])
        result["startup_s"] = startup = common.timed_cli(["score", tmp / "tiny.npy", "--model", tmp / "model", "--out",
                                              tmp / "tiny.csv"], env)
        for fmt, path in files.items():
            seconds = common.timed_cli(["score", path, "--model", tmp / "model", "--out", tmp / f"scores_{fmt}.csv"], env)
            result[f"{fmt}_s"] = seconds
            result[f"{fmt}_rows_per_s"] = args.rows / seconds
            net = seconds - startup
            # below the start-up's own noise (a small file) the difference says nothing
            after = args.rows / net if net > 0.1 * startup else None
            result[f"{fmt}_rows_per_s_after_startup"] = after
            print(f"{fmt:8s} {seconds:6.1f} s: {args.rows / seconds / 1e3:7.1f}k rows/s"
                  + (f", {after / 1e3:7.1f}k rows/s after the {startup:.1f} s start-up" if after else ""), flush=True)
    result["device_name"] = common.cpu_name()
    common.write_result(args.json, result)


if __name__ == "__main__":
    main()
