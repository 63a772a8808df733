"""Scoring with the fused Pallas decoder kernel against the XLA path, side by side (GPU).

    python benchmarks/fused_kernel.py --rows 8000000 --json out/fused.json

One VAEGMM of the KDD shape (120 features, 60-30-10 tanh, latent 2, K 4, L 10) is
fitted briefly; then the same device-resident rows are scored by both paths, in fp32
and bf16, best of 3. Reports rows/s, their ratio, the largest score difference and the
AUROC of each path on a labelled set (inliers of the training distribution plus 5%
uniform outliers), plus a sweep of the kernel's block size and warps.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=8_000_000)
    p.add_argument("--chunk", type=int, default=262_144)
    p.add_argument("--train-rows", type=int, default=200_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sweep", action="store_true", help="also sweep block rows and warps")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import jax
    import optax
    from sklearn.metrics import roc_auc_score

    import vaegmm_jax as vj
    from vaegmm_jax.kernels import fused_decoder
    from jax_vaegmm import _labelled_eval_set

    det = vj.OutlierVAEGMM(n_gmm=4, latent_dim=2, hidden=(60, 30, 10), samples=10, seed=0)
    det.fit(common.make_data(args.train_rows), epochs=args.epochs, batch_size=1024, verbose=False,
            optimizer=optax.adam(1e-3))
    xs = jax.device_put(common.make_data(args.rows, seed=1))
    x_eval, y_eval = _labelled_eval_set(200_000, 0)

    def rate(kernel, dtype):
        det.scoring_kernel = kernel
        det.clear_compiled()
        det.score(xs[: args.chunk], batch_size=args.chunk, compute_dtype=dtype)  # compile
        best = []
        for _ in range(3):
            t0 = time.perf_counter()
            det.score(xs, batch_size=args.chunk, compute_dtype=dtype)
            best.append(time.perf_counter() - t0)
        return args.rows / min(best)

    result = {"device_name": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": args.rows,
              "chunk": args.chunk, "samples": 10}
    scores = {}
    for dtype in ("float32", "bfloat16"):
        for kernel in ("xla", "auto"):
            result[f"{kernel}_{dtype}_rows_per_s"] = rate(kernel, dtype)
            scores[kernel, dtype] = det.score(x_eval, batch_size=args.chunk, compute_dtype=dtype)
            result[f"{kernel}_{dtype}_auroc"] = float(roc_auc_score(y_eval, scores[kernel, dtype]))
        result[f"speedup_{dtype}"] = result[f"auto_{dtype}_rows_per_s"] / result[f"xla_{dtype}_rows_per_s"]
        result[f"max_abs_score_diff_{dtype}"] = float(np.max(np.abs(scores["auto", dtype] - scores["xla", dtype])))
    result["auroc_change_bf16_kernel_vs_fp32_xla"] = result["auto_bfloat16_auroc"] - result["xla_float32_auroc"]
    if args.sweep:
        sweep = {}
        for block, warps in itertools.product((64, 128, 256), (2, 4, 8)):
            fused_decoder.BLOCK_ROWS, fused_decoder.NUM_WARPS = block, warps
            for dtype in ("float32", "bfloat16"):
                try:
                    sweep[f"{dtype}_b{block}_w{warps}"] = rate("auto", dtype)
                except Exception as e:  # a configuration Triton cannot run (e.g. out of shared memory)
                    sweep[f"{dtype}_b{block}_w{warps}"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        result["sweep_rows_per_s"] = sweep
    common.write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
