"""Where the GPU time goes: scoring and DAGMM training variants timed side by side, plus a
kernel-level breakdown from a profiler trace.

    python benchmarks/gpu_profile.py --out out/gpu_profile

Variants (each timed best-of-3 on device-resident data, same process, same model):
  * ``default``: the library as it is;
  * ``linalg``: the mixture maths through jnp.linalg / HIGHEST einsum (``gmm.SMALL_D = 0``,
    the path the library used before the unrolled small-D kernels);
  * ``feat_barrier``: the reconstruction features behind an optimization barrier (their own
    reduction kernel instead of being fused into the concatenate that builds z);
  * ``batch_rng``: latent noise drawn per chunk instead of per row (NOT chunk-invariant: only
    to measure what per-row threefry costs).
The trace summary (``kernels_*.txt``) lists the GPU kernels by total time; it needs the
profiler (CUPTI) and is skipped with a message when that is unavailable.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def _summarise_trace(trace_dir: str, out_txt: str, n_calls: int) -> None:
    files = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not files:
        with open(out_txt, "w") as f:
            f.write(f"no perfetto trace under {trace_dir}\n")
        return
    with gzip.open(sorted(files)[-1], "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    proc = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    total = defaultdict(float)
    count = defaultdict(int)
    for e in events:
        if e.get("ph") != "X":
            continue
        pname = proc.get(e.get("pid"), "?")
        if "GPU" not in pname and "gpu" not in pname:
            continue
        total[e["name"]] += float(e.get("dur", 0.0))
        count[e["name"]] += 1
    grand = sum(total.values())
    with open(out_txt, "w") as f:
        f.write(f"GPU events: {sum(count.values())} ({sum(count.values()) / n_calls:.1f} per call), "
                f"{grand / 1e3:.2f} ms in total, {grand / 1e3 / n_calls:.3f} ms per call\n")
        for name, us in sorted(total.items(), key=lambda kv: -kv[1])[:40]:
            f.write(f"{us / 1e3:10.3f} ms {count[name] / n_calls:8.1f}/call  {name[:150]}\n")


def _best_of(fn, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--score-rows", type=int, default=8_000_000)
    p.add_argument("--chunks", default="262144,1048576,2097152")
    p.add_argument("--dagmm-epochs", type=int, default=12)
    p.add_argument("--variants", default="default,feat_barrier,linalg,batch_rng")
    p.add_argument("--trace-dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--out", default="out/gpu_profile")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    import jax
    import jax.numpy as jnp
    import optax

    import vaegmm_jax as vj
    from vaegmm_jax.core import gmm as gmm_lib
    from vaegmm_jax.core import vae as vae_lib

    cfg = common.ARCH
    dev = jax.devices()[0]
    result: dict = {"device_name": dev.device_kind, "jax": jax.__version__, "score_rows": args.score_rows}
    x_np = common.make_data(args.rows)
    det = vj.OutlierVAEGMM(
        n_gmm=cfg["n_gmm"], latent_dim=cfg["latent_dim"], samples=cfg["samples"], beta=cfg["beta"],
        hidden=tuple(cfg["encoder_hidden"]), gmm_hidden=cfg["gmm_hidden"], gmm_dropout=0.0, seed=0,
    )
    det.fit(x_np, w_recon=cfg["w_recon"], optimizer=optax.adam(cfg["lr"]), cov_elbo=dict(sim=cfg["sim"]),
            epochs=1, batch_size=cfg["batch_size"], verbose=False)
    xs = jax.device_put(common.make_data(args.score_rows, seed=1))
    reference = det.score(xs[:65536])

    true_row_noise = vae_lib.row_normal_noise

    def batch_noise(key, rows, n_samples, dim, dtype=jnp.float32):
        return jax.random.normal(jax.random.fold_in(key, rows[0]), (n_samples, rows.shape[0], dim), dtype)

    from vaegmm_jax.models import gmm_autoencoder as gmm_ae

    true_mixture_input = gmm_ae.GMMAutoencoder.mixture_input

    def barrier_mixture_input(self, params, x, z_lat, train=False, key=None):
        # the reconstruction features as their own fusion (not fused into the concatenate)
        x_recon = self.decode(params, z_lat, train, None)
        feats = jax.lax.optimization_barrier(self.recon_features(gmm_ae._flat(x), gmm_ae._flat(x_recon).astype(x.dtype)))
        z = jnp.concatenate([z_lat, feats.astype(z_lat.dtype)], axis=-1)
        logits = self.gmm_net.apply(params["gmm"], z, train, None)
        return z, jax.nn.softmax(logits.astype(jnp.float32), axis=-1), x_recon

    variants = {
        "default": lambda: None,
        "feat_barrier": lambda: setattr(gmm_ae.GMMAutoencoder, "mixture_input", barrier_mixture_input),
        "linalg": lambda: setattr(gmm_lib, "SMALL_D", 0),
        "batch_rng": lambda: setattr(vae_lib, "row_normal_noise", batch_noise),
    }
    selected = [v for v in args.variants.split(",") if v]
    # the optimised HLO of the default scoring program, to read the fusions
    x0 = xs[: int(args.chunks.split(",")[0])]
    lowered = det._jitted_score(args.trace_dtype).lower(det.params, det._score_inputs(), x0, np.int32(0), det._key(3))
    with open(os.path.join(args.out, "score_hlo.txt"), "w") as f:
        f.write(lowered.compile().as_text())
    scoring = {}
    for name in selected:
        apply = variants[name]
        small_d = gmm_lib.SMALL_D
        apply()
        try:
            for dtype in ("float32", "bfloat16"):
                for chunk in [int(c) for c in args.chunks.split(",")]:
                    det.clear_compiled()
                    t0 = time.perf_counter()
                    det.score(xs[:chunk], batch_size=chunk, compute_dtype=dtype)
                    compile_s = time.perf_counter() - t0
                    s = _best_of(lambda: det.score(xs, batch_size=chunk, compute_dtype=dtype))
                    check = det.score(xs[:65536], batch_size=chunk, compute_dtype=dtype)
                    scoring[f"{name}/{dtype}/{chunk}"] = {
                        "rows_per_s": args.score_rows / s, "first_call_s": compile_s,
                        "max_abs_diff_vs_default_fp32": float(np.max(np.abs(check - reference))),
                    }
                    print(name, dtype, chunk, f"{args.score_rows / s / 1e6:.1f} M rows/s", flush=True)
        finally:
            gmm_lib.SMALL_D = small_d
            vae_lib.row_normal_noise = true_row_noise
            gmm_ae.GMMAutoencoder.mixture_input = true_mixture_input
    result["scoring"] = scoring
    det.clear_compiled()

    # kernel breakdown of two default scoring calls of 2 chunks each
    chunk = 1_048_576
    det.score(xs[: 2 * chunk], batch_size=chunk, compute_dtype=args.trace_dtype)
    trace_dir = os.path.join(args.out, "trace_score")
    try:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(2):
                det.score(xs[: 2 * chunk], batch_size=chunk, compute_dtype=args.trace_dtype)
        _summarise_trace(trace_dir, os.path.join(args.out, "kernels_score.txt"), n_calls=4)
    except Exception as exc:  # the profiler is a diagnostic, never a reason to lose the timings
        result["trace_score_error"] = repr(exc)

    if args.skip_train:
        common.write_result(os.path.join(args.out, "profile.json"), result)
        return 0
    # DAGMM KDD preset: steady epoch, default vs linalg mixture maths, and a trace of 2 epochs
    training = {}
    for name in ("default", "linalg"):
        small_d = gmm_lib.SMALL_D
        if name == "linalg":
            gmm_lib.SMALL_D = 0
        try:
            d = vj.OutlierAEGMM(n_gmm=4, latent_dim=1, hidden=(60, 30, 10), gmm_hidden=10, gmm_dropout=0.5, seed=0)
            t0 = time.perf_counter()
            d.fit(x_np, epochs=args.dagmm_epochs, batch_size=1024, optimizer=optax.adam(1e-4), verbose=False)
            training[name] = {
                "fit_s": time.perf_counter() - t0,
                "first_epoch_s": d.epoch_seconds[0],
                "steady_epoch_s_median": float(np.median(d.epoch_seconds[1:])),
                "mixture_fit_s": time.perf_counter() - t0 - sum(d.epoch_seconds),
            }
            print("dagmm", name, training[name], flush=True)
        finally:
            gmm_lib.SMALL_D = small_d
    result["dagmm"] = training
    d = vj.OutlierAEGMM(n_gmm=4, latent_dim=1, hidden=(60, 30, 10), gmm_hidden=10, gmm_dropout=0.5, seed=0)
    d.fit(x_np, epochs=1, batch_size=1024, optimizer=optax.adam(1e-4), verbose=False)
    trace_dir = os.path.join(args.out, "trace_train")
    try:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            d.fit(x_np, epochs=2, batch_size=1024, optimizer=optax.adam(1e-4), verbose=False)
        n_steps = 2 * -(-args.rows // 1024)
        _summarise_trace(trace_dir, os.path.join(args.out, "kernels_train_per_step.txt"), n_calls=n_steps)
    except Exception as exc:
        result["trace_train_error"] = repr(exc)
    common.write_result(os.path.join(args.out, "profile.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
