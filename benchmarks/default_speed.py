"""What the new defaults cost in scoring speed: the default score against the paper's energy.

Same nets (KDD shape: 120 features, 60-30-10 tanh, latent 2, K 2, L 10), same training rows
(``common.make_data``), one run, side by side:

* ``default``: the library defaults (standard scaling inside the score program, RMSE
  reconstruction feature, score_type 'energy_recon': energy plus log RMSE, each standardised);
* ``paper``: ``presets.PAPER_SCORING`` (no scaling, energy only) with the paper's features.

Scoring is timed on an array already on the device (device-resident), after a warm-up call,
best of ``--repeats``. Prints one JSON line per configuration.

    python benchmarks/default_speed.py --train-rows 20000 --score-rows 200000       # 2-core CPU proxy
    python benchmarks/default_speed.py --train-rows 200000 --score-rows 8000000     # a GPU
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
import vaegmm_jax as vj
from vaegmm_jax.detectors import presets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-rows", type=int, default=20000)
    p.add_argument("--score-rows", type=int, default=200000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    x_train = common.make_data(args.train_rows, seed=0)
    x_score = jax.device_put(jnp.asarray(common.make_data(args.score_rows, seed=1)))
    configs = {
        "default": {},
        "paper": dict(presets.PAPER_SCORING, recon_features="dagmm"),
    }
    device = jax.devices()[0]
    for name, extra in configs.items():
        det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(60, 30, 10), seed=0, **extra)
        started = time.perf_counter()
        det.fit(x_train, epochs=args.epochs, batch_size=1024, verbose=False)
        fit_s = time.perf_counter() - started
        det.score(x_score)  # warm-up: compiles the chunk program (score returns host NumPy: synchronous)
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            scores = det.score(x_score)
            best = min(best, time.perf_counter() - started)
        # the fused GPU decoder kernel ("auto" on NVIDIA GPUs) against plain XLA, same detector
        det.scoring_kernel = "xla"
        xla_scores = det.score(x_score[: min(args.score_rows, 65536)])
        det.scoring_kernel = "auto"
        kernel_diff = float(np.max(np.abs(xla_scores - scores[: len(xla_scores)])))
        print(json.dumps({
            "config": name, "device": f"{device.platform}:{device.device_kind}", "score_rows": args.score_rows,
            "score_rows_per_s": round(args.score_rows / best), "score_s": round(best, 4), "fit_s": round(fit_s, 2),
            "fit_seconds": {k: round(v, 3) for k, v in det.fit_seconds.items()},
            "finite": bool(np.isfinite(scores).all()), "max_abs_diff_auto_vs_xla": kernel_diff,
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
