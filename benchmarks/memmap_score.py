"""Score a float32 memmap far larger than the chunk and report peak host memory.

    python benchmarks/memmap_score.py --rows 10000000 --path /tmp/vaegmm_10M.npy

Writes the memmap once (block by block, so the writer stays small too), trains a small
VAEGMM on 20k rows, then scores the whole file through ``score(np.load(..., mmap_mode='r'))``.
Peak RSS covers the whole process (JAX runtime included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--path", default="/tmp/vaegmm_memmap.npy")
    p.add_argument("--keep", action="store_true", help="keep the memmap file afterwards")
    p.add_argument("--json", default=None)
    p.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import optax

    import vaegmm_jax as vj

    if args.write_only:
        mm = np.lib.format.open_memmap(args.path, mode="w+", dtype=np.float32, shape=(args.rows, common.N_FEATURES))
        block = 262_144
        for start in range(0, args.rows, block):
            n = min(block, args.rows - start)
            mm[start : start + n] = common.make_data(n, seed=1000 + start // block)
        mm.flush()
        return 0
    if not (os.path.exists(args.path) and np.load(args.path, mmap_mode="r").shape[0] == args.rows):
        # write the file in a child process so its dirty pages do not count in this one's peak
        import subprocess

        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--path", args.path, "--write-only"], check=True)
    rss_before = common.peak_rss_mb()
    det = vj.OutlierVAEGMM(n_gmm=4, latent_dim=2, hidden=(60, 30, 10), gmm_dropout=0.0, seed=0)
    det.fit(common.make_data(20_000), epochs=1, batch_size=1024, optimizer=optax.adam(1e-4), verbose=False)
    data = np.load(args.path, mmap_mode="r")
    t0 = time.perf_counter()
    scores = det.score(data)
    secs = time.perf_counter() - t0
    result = {
        "rows": args.rows,
        "file_gb": os.path.getsize(args.path) / 1e9,
        "score_s": secs,
        "score_rows_per_s": args.rows / secs,
        "scores_finite": bool(np.isfinite(scores).all()),
        "peak_rss_mb_before_scoring": rss_before,
        "peak_rss_mb": common.peak_rss_mb(),
        "scores_mb": scores.nbytes / 2**20,
    }
    if not args.keep:
        os.remove(args.path)
    common.write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
