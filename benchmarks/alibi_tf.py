"""alibi-detect 0.13 OutlierVAEGMM on TensorFlow: the incumbent side of the speed benchmark.

Install (its own virtual environment, OUTSIDE the repository; ~2 GB):
    python3 -m venv /work/venvs/tf
    /work/venvs/tf/bin/pip install -r benchmarks/requirements-tf.txt
    # alibi-detect[tensorflow]==0.13.*, tensorflow==2.18.1, tf-keras==2.18.0,
    # tensorflow-probability==0.25.0, numpy<2 (alibi-detect 0.13 requires tensorflow<2.19)
Run:
    /work/venvs/tf/bin/python benchmarks/alibi_tf.py --rows 100000 --epochs 2 \
        --score-rows 200000 --json out/alibi_tf.json [--legacy-keras]

Both Keras front ends work with alibi-detect 0.13 + TF 2.18 for fit/score: the default is Keras 3
(what `tf.keras` is after a plain install); --legacy-keras sets TF_USE_LEGACY_KERAS=1 so that
`tf.keras` is tf-keras 2.18 (needed there only for alibi's legacy save/load).

Model (same shape as benchmarks/torch_vaegmm.py, Keras Sequential nets as in alibi's examples):
encoder 120-60-30-10 tanh (alibi adds the mean/log-variance heads of latent 2), decoder
2-10-30-60-120 (tanh hidden, linear output), gmm_density_net 4-10 tanh-4 softmax, n_gmm 4,
samples 10; fit with batch 1024, Adam lr 1e-4, w_recon 1e-7, w_energy 0.1, w_cov_diag 0.005,
cov_elbo=dict(sim=0.05), beta 1.

Timing: OutlierVAEGMM.fit(X, epochs=E) is one call; to get per-epoch times this runner calls
alibi's own `trainer` (what fit calls) once per epoch with exactly the arguments fit builds
and one Adam instance kept across epochs, then fixes the GMM parameters the way fit does
(one forward pass over all of X, timed separately as gmm_fit_s). --fit-api calls od.fit once
instead and reports the total only. Scoring times od.score(X) (X repeated `samples` times,
alibi's default batch_size=1e10, i.e. one forward pass) after a warm-up call on a few rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="alibi-detect OutlierVAEGMM (TensorFlow) benchmark")
    p.add_argument("--rows", type=int, default=100_000, help="training rows")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--score-rows", type=int, default=200_000)
    p.add_argument("--device", default="cpu", help="cpu (GPUs hidden) | gpu (TF's default placement)")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--legacy-keras", action="store_true",
                   help="TF_USE_LEGACY_KERAS=1: tf.keras is tf-keras 2.x instead of Keras 3")
    p.add_argument("--fit-api", action="store_true",
                   help="time one od.fit(epochs=E) call instead of per-epoch trainer calls")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--score-batch", type=int, default=int(1e10),
                   help="od.score batch_size in repeated (sample) rows; alibi's default 1e10 = all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="intra- and inter-op thread pools (default: TensorFlow's, all cores)")
    p.add_argument("--eval-rows", type=int, default=8192,
                   help="rows of a fixed batch on which the loss is evaluated after each epoch "
                        "(untimed; 0 to skip)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.legacy_keras:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy as np

    import common

    import tensorflow as tf

    if args.device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import alibi_detect
    from alibi_detect.models.tensorflow.gmm import gmm_params
    from alibi_detect.models.tensorflow.losses import loss_vaegmm
    from alibi_detect.models.tensorflow.trainer import trainer
    from alibi_detect.od import OutlierVAEGMM

    tf.random.set_seed(args.seed)
    tf.keras.utils.set_random_seed(args.seed)
    cfg = dict(common.ARCH)
    cfg["batch_size"] = args.batch_size
    nf = cfg["n_features"]

    x = common.make_data(args.rows, seed=args.seed)
    xs = common.make_data(args.score_rows, seed=args.seed + 1)

    Dense = tf.keras.layers.Dense

    def inp(n):  # tf.keras.Input works in both Keras 3 and tf-keras 2
        return tf.keras.Input(shape=(n,))

    tanh = tf.nn.tanh
    encoder_net = tf.keras.Sequential(
        [inp(nf)] + [Dense(h, activation=tanh) for h in cfg["encoder_hidden"]])
    decoder_net = tf.keras.Sequential(
        [inp(cfg["latent_dim"])] + [Dense(h, activation=tanh) for h in cfg["decoder_hidden"]]
        + [Dense(nf, activation=None)])
    gmm_density_net = tf.keras.Sequential(
        [inp(cfg["latent_dim"] + 2), Dense(cfg["gmm_hidden"], activation=tanh),
         Dense(cfg["n_gmm"], activation=tf.nn.softmax)])
    od = OutlierVAEGMM(threshold=None, encoder_net=encoder_net, decoder_net=decoder_net,
                       gmm_density_net=gmm_density_net, n_gmm=cfg["n_gmm"],
                       latent_dim=cfg["latent_dim"], samples=cfg["samples"], beta=cfg["beta"])
    optimizer = tf.keras.optimizers.Adam(learning_rate=cfg["lr"])
    loss_kwargs = {"w_recon": cfg["w_recon"], "w_energy": cfg["w_energy"],
                   "w_cov_diag": cfg["w_cov_diag"]}
    # fit() casts the cov_elbo value with tf.dtypes.cast(cov, tf.float32): do the same
    loss_kwargs["sim"] = tf.dtypes.cast(cfg["sim"], tf.float32)

    keras_version = getattr(tf.keras, "__version__", None)
    if keras_version is None:
        try:
            import tf_keras
            keras_version = "tf_keras " + tf_keras.__version__
        except ImportError:
            keras_version = "?"
    gpus = tf.config.list_logical_devices("GPU")
    result = {
        "runner": "alibi_tf",
        "framework": "tensorflow",
        "tensorflow": tf.__version__,
        "keras": keras_version,
        "legacy_keras": bool(args.legacy_keras),
        "alibi_detect": alibi_detect.__version__,
        "device": args.device,
        "device_name": (tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU")
            if gpus else common.cpu_name()),
        "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "note": "0 = TensorFlow default (all cores)"},
        "fit_mode": "od.fit" if args.fit_api else "alibi trainer per epoch",
        "rows": args.rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "score_rows": args.score_rows,
        "score_batch": args.score_batch,
        "samples": cfg["samples"],
        "data_fingerprint": common.fingerprint(x),
        "score_data_fingerprint": common.fingerprint(xs),
        "arch": cfg,
    }

    x_eval = x[: args.eval_rows] if args.eval_rows else None

    def eval_loss():
        if x_eval is None:
            return None
        x_rec, z, gamma = od.vaegmm(x_eval)
        loss = loss_vaegmm(x_eval, x_rec, z, gamma, **loss_kwargs) + sum(od.vaegmm.losses)
        return float(loss.numpy())

    result["loadavg_start"] = common.loadavg()
    epoch_s, epoch_cpu_s, losses = [], [], []
    if args.fit_api:
        t0 = time.perf_counter()
        od.fit(x, w_recon=cfg["w_recon"], w_energy=cfg["w_energy"], w_cov_diag=cfg["w_cov_diag"],
               optimizer=optimizer, cov_elbo=dict(sim=cfg["sim"]), epochs=args.epochs,
               batch_size=args.batch_size, verbose=False)
        fit_total_s = time.perf_counter() - t0
        gmm_fit_s = None
        losses.append(eval_loss())
        print(f"od.fit({args.epochs} epochs): {fit_total_s:.3f} s  eval loss {losses[-1]}",
              file=sys.stderr)
    else:
        for ep in range(args.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            # exactly what OutlierVAEGMM.fit passes to trainer, one epoch at a time
            trainer(od.vaegmm, loss_vaegmm, x, optimizer=optimizer, epochs=1,
                    batch_size=args.batch_size, verbose=False, log_metric=None, callbacks=None,
                    loss_fn_kwargs=loss_kwargs)
            epoch_s.append(time.perf_counter() - t0)
            epoch_cpu_s.append(time.process_time() - c0)
            losses.append(eval_loss())
            print(f"epoch {ep + 1}: {epoch_s[-1]:.3f} s  eval loss {losses[-1]}", file=sys.stderr)
        # the end of OutlierVAEGMM.fit: one forward pass over all of X fixes phi/mu/Sigma
        t0 = time.perf_counter()
        _, z, gamma = od.vaegmm(x)
        od.phi, od.mu, od.cov, od.L, od.log_det_cov = gmm_params(z, gamma)
        gmm_fit_s = time.perf_counter() - t0
        fit_total_s = sum(epoch_s) + gmm_fit_s

    t0 = time.perf_counter()
    od.score(xs[:1000], batch_size=args.score_batch)
    warmup_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    sc = od.score(xs, batch_size=args.score_batch)
    score_s = time.perf_counter() - t0
    score_cpu_s = time.process_time() - c0

    result.update(
        first_epoch_s=(epoch_s[0] if epoch_s else None),
        epoch_s_steady=(float(np.mean(epoch_s[1:])) if len(epoch_s) > 1 else None),
        epoch_s_steady_median=(float(np.median(epoch_s[1:])) if len(epoch_s) > 1 else None),
        epoch_s=epoch_s,
        epoch_cpu_s=epoch_cpu_s,
        train_rows_per_s_steady=(args.rows / float(np.mean(epoch_s[1:])) if len(epoch_s) > 1 else None),
        fit_total_s=fit_total_s,
        eval_loss=losses,
        gmm_fit_s=gmm_fit_s,
        score_warmup_s=warmup_s,
        score_s=score_s,
        score_cpu_s=score_cpu_s,
        score_rows_per_s=args.score_rows / score_s,
        score_finite=bool(np.isfinite(sc).all()),
        score_mean=float(np.mean(sc)),
        score_std=float(np.std(sc)),
        peak_rss_mb=common.peak_rss_mb(),
        loadavg_end=common.loadavg(),
    )
    common.write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
