"""vaegmm_jax side of the speed benchmark: same data, architecture and JSON fields as
torch_vaegmm.py and alibi_tf.py (see benchmarks/common.py).

    python benchmarks/jax_vaegmm.py --rows 100000 --epochs 3 --score-rows 200000 --json out/jax_cpu.json

Training goes through the public detector (one jitted lax.scan per epoch); scoring is
timed twice: from host NumPy (streamed in chunks, the fair comparison with the other
runners' host arrays) and, on accelerators, from an array already on the device.
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
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--score-rows", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=common.ARCH["batch_size"])
    p.add_argument("--score-chunk", type=int, default=None, help="rows per scoring chunk")
    p.add_argument("--bf16", action="store_true", help="also time bf16 scoring and report its AUROC change")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet-epochs", type=int, default=0,
                   help="after everything else, train this many more epochs in a second fit whose programs come "
                        "from a persistent compilation cache (a temporary folder, on from the start), so that no "
                        "compilation runs beside them: the steady epoch time, like for like with the PyTorch port")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import optax

    quiet_cache = None
    if args.quiet_epochs:
        import tempfile

        quiet_cache = tempfile.TemporaryDirectory()
        jax.config.update("jax_compilation_cache_dir", quiet_cache.name)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    import vaegmm_jax as vj

    cfg = common.ARCH
    dev = jax.devices()[0]
    on_accel = dev.platform != "cpu"
    chunk = args.score_chunk or (262_144 if on_accel else 2048)
    x_np = common.make_data(args.rows, seed=args.seed)
    xs_np = common.make_data(args.score_rows, seed=args.seed + 1)
    result = {
        "runner": "vaegmm_jax",
        "framework": "jax",
        "jax": jax.__version__,
        "device": dev.platform,
        "device_name": dev.device_kind if on_accel else common.cpu_name(),
        "n_devices": jax.local_device_count(),
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "score_rows": args.score_rows,
        "score_chunk": chunk,
        "samples": cfg["samples"],
        "data_fingerprint": common.fingerprint(x_np),
        "score_data_fingerprint": common.fingerprint(xs_np),
        "arch": cfg,
        "loadavg_start": common.loadavg(),
    }
    det = vj.OutlierVAEGMM(
        n_gmm=cfg["n_gmm"], latent_dim=cfg["latent_dim"], samples=cfg["samples"], beta=cfg["beta"],
        hidden=tuple(cfg["encoder_hidden"]), gmm_hidden=cfg["gmm_hidden"], gmm_dropout=0.0, seed=args.seed,
    )
    t0 = time.perf_counter()
    det.fit(
        x_np, w_recon=cfg["w_recon"], w_energy=cfg["w_energy"], w_cov_diag=cfg["w_cov_diag"],
        optimizer=optax.adam(cfg["lr"]), cov_elbo=dict(sim=cfg["sim"]), epochs=args.epochs,
        batch_size=args.batch_size, verbose=False,
    )
    fit_total_s = time.perf_counter() - t0
    epoch_s = list(det.epoch_seconds)
    # the mixture (and calibration) step after training alone; until 2026-12-04 this field was
    # fit_total_s - sum(epoch_s), which also counted the fit's setup (compilation of the epoch
    # and initialisation programs): the H200's "9.96 s mixture fit" was mostly that setup
    gmm_fit_s = det.fit_seconds["after_fit"]

    t0 = time.perf_counter()
    det.score(xs_np[: min(len(xs_np), chunk)], batch_size=chunk)  # compile the chunk shape
    warmup_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    scores = det.score(xs_np, batch_size=chunk)
    score_s = time.perf_counter() - t0
    result.update(
        first_epoch_s=epoch_s[0],
        epoch_s_steady=float(np.mean(epoch_s[1:])) if len(epoch_s) > 1 else None,
        epoch_s_steady_median=float(np.median(epoch_s[1:])) if len(epoch_s) > 1 else None,
        epoch_s=epoch_s,
        train_rows_per_s_steady=args.rows / float(np.mean(epoch_s[1:])) if len(epoch_s) > 1 else None,
        loss=det.history["total"],
        gmm_fit_s=gmm_fit_s,
        score_warmup_s=warmup_s,
        score_s=score_s,
        score_cpu_s=time.process_time() - c0,
        score_rows_per_s=args.score_rows / score_s,
        score_rows_per_s_host=args.score_rows / score_s,  # the rows start as host NumPy (like for like: torch host paths)
        fit_total_s=fit_total_s,
        fit_phases_s=dict(det.fit_seconds),  # setup (compilation included), epochs, after_fit
        score_finite=bool(np.isfinite(scores).all()),
        score_mean=float(np.mean(scores)),
        score_std=float(np.std(scores)),
    )
    if args.quiet_epochs:
        # the fit above trained while its after-fit programs compiled on the same cores; this one
        # loads every program from the cache, so its epochs after the first run alone
        quiet = vj.OutlierVAEGMM(
            n_gmm=cfg["n_gmm"], latent_dim=cfg["latent_dim"], samples=cfg["samples"], beta=cfg["beta"],
            hidden=tuple(cfg["encoder_hidden"]), gmm_hidden=cfg["gmm_hidden"], gmm_dropout=0.0, seed=args.seed,
        )
        quiet.fit(x_np, w_recon=cfg["w_recon"], w_energy=cfg["w_energy"], w_cov_diag=cfg["w_cov_diag"],
                  optimizer=optax.adam(cfg["lr"]), cov_elbo=dict(sim=cfg["sim"]), epochs=args.quiet_epochs + 1,
                  batch_size=args.batch_size, verbose=False)
        result["epoch_s_quiet"] = list(quiet.epoch_seconds[1:])
        result["epoch_s_quiet_median"] = float(np.median(quiet.epoch_seconds[1:]))
        result["quiet_fit_phases_s"] = dict(quiet.fit_seconds)
        quiet_cache.cleanup()
    if on_accel:
        xs_dev = jax.device_put(xs_np)
        det.score(xs_dev[:chunk], batch_size=chunk)
        best = []
        for _ in range(3):
            t0 = time.perf_counter()
            det.score(xs_dev, batch_size=chunk)
            best.append(time.perf_counter() - t0)
        result["score_rows_per_s_device_resident"] = args.score_rows / min(best)
    if args.bf16:
        from sklearn.metrics import roc_auc_score

        # A labelled evaluation set: fresh inlier-distribution rows plus 5% uniform outliers.
        x_eval, y_eval = _labelled_eval_set(max(20_000, min(args.score_rows, 200_000)), args.seed)
        result["auroc_fp32"] = float(roc_auc_score(y_eval, det.score(x_eval, batch_size=chunk)))
        bf_eval = det.score(x_eval, batch_size=chunk, compute_dtype="bfloat16")
        result["auroc_bf16"] = float(roc_auc_score(y_eval, bf_eval))
        result["auroc_change_bf16"] = result["auroc_bf16"] - result["auroc_fp32"]
        t0 = time.perf_counter()
        bf = det.score(xs_np, batch_size=chunk, compute_dtype="bfloat16")
        result["bf16_score_rows_per_s"] = args.score_rows / (time.perf_counter() - t0)
        result["bf16_max_abs_score_error"] = float(np.max(np.abs(bf - scores)))
        if on_accel:
            xs_dev = jax.device_put(xs_np)
            best = []
            for _ in range(3):
                t0 = time.perf_counter()
                det.score(xs_dev, batch_size=chunk, compute_dtype="bfloat16")
                best.append(time.perf_counter() - t0)
            result["bf16_score_rows_per_s_device_resident"] = args.score_rows / min(best)
    result["peak_rss_mb"] = common.peak_rss_mb()
    if on_accel:
        stats = dev.memory_stats() or {}
        result["device_peak_memory_mb"] = stats.get("peak_bytes_in_use", 0) / 2**20
    result["loadavg_end"] = common.loadavg()
    common.write_result(args.json, result)
    return 0


def _labelled_eval_set(n: int, seed: int):
    """(x (n + n/20, F), y) with y = 1 for uniform outliers appended to common.make_data rows."""
    inliers = common.make_data(n, seed=seed + 2)
    rng = np.random.default_rng(seed + 3)
    outliers = rng.random((n // 20, inliers.shape[1])).astype(np.float32)
    return np.concatenate([inliers, outliers]), np.r_[np.zeros(n), np.ones(n // 20)]


if __name__ == "__main__":
    sys.exit(main())
