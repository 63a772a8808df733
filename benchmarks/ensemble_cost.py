"""What an ensemble costs: fit and score wall time for M = 1, 4, 8, 16 members, side by side in one run.

KDD shape: 120 features, the default-constructed OutlierVAEGMM (n_gmm=4, latent_dim=2, the
60-30-10 nets the defaults build for 120 features), the same data and settings for every M. Each M is
measured in the same process, one after the other:

* ``fit_s``: ``fit`` wall time, compilation included (what a user waits for);
* ``epoch_s``: the median steady epoch (compilation excluded);
* ``score_rows_per_s``: ``score`` of ``--score-rows`` rows that already sit on the device (a
  jax.Array), after a warm-up call, and of the same rows as host NumPy (``host_rows_per_s``).

The ratios to M = 1 are what the ensemble issue's target is about (on a GPU, M = 8 at most 1.5x
the wall time of M = 1 for fit and for score).

    python benchmarks/ensemble_cost.py --rows 20000 --epochs 5 --score-rows 200000   # 2-core CPU
    python benchmarks/ensemble_cost.py --rows 200000 --epochs 10 --score-rows 8000000  # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaegmm_jax import OutlierVAEGMM  # noqa: E402


def kdd_like(n: int, f: int = 120, seed: int = 0) -> np.ndarray:
    """Rows on a few low-dimensional manifolds, standardised-looking, KDD's width."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, 3, f)).astype(np.float32)
    which = rng.integers(0, 4, n)
    z = rng.normal(size=(n, 3)).astype(np.float32)
    x = np.einsum("nk,nkf->nf", z, basis[which]) + 0.1 * rng.normal(size=(n, f)).astype(np.float32)
    return x.astype(np.float32)


def measure(m: int, X: np.ndarray, X_score: np.ndarray, epochs: int, batch_size: int, repeats: int) -> dict:
    det = OutlierVAEGMM(n_gmm=4, latent_dim=2, n_members=m, seed=0)
    t0 = time.perf_counter()
    det.fit(X, epochs=epochs, batch_size=batch_size, verbose=False)
    fit_s = time.perf_counter() - t0
    steady = det.epoch_seconds[1:] or det.epoch_seconds
    x_dev = jax.device_put(X_score)
    det.score(x_dev[:batch_size])  # compile
    jax.block_until_ready(det.score(x_dev))
    dev = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(det.score(x_dev))
        dev.append(time.perf_counter() - t0)
    host = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        det.score(X_score)
        host.append(time.perf_counter() - t0)
    return {
        "members": m, "fit_s": fit_s, "setup_s": det.fit_seconds.get("setup"),
        "after_fit_s": det.fit_seconds.get("after_fit"), "epoch_s": float(np.median(steady)),
        "score_rows_per_s": len(X_score) / min(dev), "host_rows_per_s": len(X_score) / min(host),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000, help="training rows")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--score-rows", type=int, default=200000)
    p.add_argument("--members", default="1,4,8,16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="write the rows there too")
    args = p.parse_args(argv)
    X = kdd_like(args.rows)
    X_score = kdd_like(args.score_rows, seed=1)
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind} ({jax.device_count()} devices), jax {jax.__version__}, "
          f"{platform.machine()}; {args.rows} training rows x 120, {args.epochs} epochs, batch {args.batch_size}; "
          f"scoring {args.score_rows} rows", flush=True)
    rows = []
    for m in (int(v) for v in args.members.split(",")):
        rows.append(measure(m, X, X_score, args.epochs, args.batch_size, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print("\n| members | fit s (x M=1) | steady epoch s (x M=1) | score, device array, rows/s (x M=1) | "
          "score, host NumPy, rows/s (x M=1) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['members']} | {r['fit_s']:.2f} ({r['fit_s'] / base['fit_s']:.2f}x) "
              f"| {r['epoch_s']:.3f} ({r['epoch_s'] / base['epoch_s']:.2f}x) "
              f"| {r['score_rows_per_s'] / 1e6:.3f}M ({base['score_rows_per_s'] / r['score_rows_per_s']:.2f}x) "
              f"| {r['host_rows_per_s'] / 1e6:.3f}M ({base['host_rows_per_s'] / r['host_rows_per_s']:.2f}x) |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device.device_kind), "args": vars(args), "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
