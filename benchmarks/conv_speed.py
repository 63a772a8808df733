"""The conv VAE's training speed: XLA's transposed convolution against the sub-pixel form,
and vmapped seeds against seed groups, side by side in one process.

    python benchmarks/conv_speed.py --out benchmarks/results/conv_speed_cpu.json

Measures, for the teaching notebook's conv nets (28x28x1, latent 3, batch 128 by default):
1. per layer: the gradient of the decoder's three transposed convolutions with respect to
   the kernel and to the input, XLA form (``lax.conv_transpose``) vs sub-pixel form;
2. one full training step of ``OutlierVAE`` (Bernoulli likelihood) with the library's
   decoder on this platform, and with every transposed convolution forced to XLA's form;
3. ``multiseed.fit_many`` with S seeds vmapped vs ``seed_batch_size=1``: steady seconds per
   epoch (compilation excluded) and scoring time.
Milliseconds are medians over repeats after a warm-up call. Ratios are XLA form / ours.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import host_info, write_result  # noqa: E402

from vaegmm_jax.evaluation import multiseed  # noqa: E402
from vaegmm_jax.detectors import OutlierVAE  # noqa: E402
from vaegmm_jax.nets import conv as conv_nets  # noqa: E402
from vaegmm_jax.nets import conv_ops  # noqa: E402


def median_ms(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


@contextlib.contextmanager
def xla_transposed_convs():
    """Every ConvTranspose layer computed by XLA's lax.conv_transpose (the pre-sub-pixel library)."""
    saved = conv_nets.conv_transpose
    conv_nets.conv_transpose = conv_ops.xla_conv_transpose
    try:
        yield
    finally:
        conv_nets.conv_transpose = saved


def layer_rows(batch: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    # the notebook decoder's layers: (input H=W, C_in, C_out, stride)
    for n, cin, cout, s in [(7, 64, 64, 2), (14, 64, 32, 2), (28, 32, 1, 1)]:
        x = jnp.asarray(rng.normal(size=(batch, n, n, cin)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)) * 0.05, jnp.float32)
        row = {"layer": f"{n}x{n}x{cin} -> x{s}, {cout} ch"}
        for name, op in (("xla", conv_ops.xla_conv_transpose), ("ours", conv_ops.conv_transpose)):
            for wrt, argnum in (("kernel", 0), ("input", 1)):
                g = jax.jit(jax.grad(lambda w, x, op=op: jnp.sum(op(x, w, (s, s)) ** 2), argnums=argnum))
                row[f"{name}_{wrt}_grad_ms"] = median_ms(g, w, x, repeats=repeats)
            row[f"{name}_forward_ms"] = median_ms(jax.jit(lambda x, w, op=op: op(x, w, (s, s))), x, w, repeats=repeats)
        rows.append(row)
    return rows


def step_ms(images: np.ndarray, batch: int, repeats: int) -> float:
    """Steady milliseconds per training step: a fit of 1 + R epochs minus a fit of 1
    (both compile the same program), divided by R epochs' steps."""
    fit_args = dict(batch_size=batch, optimizer=optax.adam(1e-3), verbose=False)
    walls = []
    for epochs in (1, 1 + repeats):
        det = OutlierVAE(score_type="mse", likelihood="bernoulli", latent_dim=3, seed=0)
        t0 = time.perf_counter()
        det.fit(images, epochs=epochs, **fit_args)
        walls.append(time.perf_counter() - t0)
    return 1e3 * (walls[1] - walls[0]) / (repeats * (len(images) // batch))


def seeds_rows(images: np.ndarray, batch: int, n_seeds: int) -> list[dict]:
    def factory(seed):
        return OutlierVAE(score_type="mse", likelihood="bernoulli", latent_dim=3, samples=10, seed=seed)

    rows = []
    for label, sb in (("vmap", None), ("groups of 1", 1)):
        fit = multiseed.fit_many(factory, images, range(n_seeds), epochs=3, epochs_per_call=1, batch_size=batch,
                                 optimizer=optax.adam(1e-3), seed_batch_size=sb)
        multiseed.score_many(fit, images[:256], chunk_size=256)  # compile
        t0 = time.perf_counter()
        multiseed.score_many(fit, images[:1024], chunk_size=256)
        rows.append({"seeds": label, "epoch_s": float(np.median(fit.call_s[1:])),
                     "first_call_s": fit.call_s[0], "score_1024_rows_s": time.perf_counter() - t0})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=1280, help="training images for the step and seed timings")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="JSON result file")
    args = ap.parse_args()

    images = np.random.default_rng(1).random((args.images, 28, 28, 1), dtype=np.float32)
    result = {"benchmark": "conv_speed", "host": host_info(), "device": str(jax.devices()[0]),
              "jax": jax.__version__, "batch": args.batch}
    result["layers"] = layer_rows(args.batch, args.repeats)
    for r in result["layers"]:
        print(f"{r['layer']:>26}: kernel grad xla {r['xla_kernel_grad_ms']:7.1f} ms, ours {r['ours_kernel_grad_ms']:7.1f} "
              f"({r['xla_kernel_grad_ms'] / r['ours_kernel_grad_ms']:.1f}x); input grad xla {r['xla_input_grad_ms']:6.1f}, "
              f"ours {r['ours_input_grad_ms']:6.1f}; forward xla {r['xla_forward_ms']:6.1f}, ours {r['ours_forward_ms']:6.1f}",
              flush=True)
    ours = step_ms(images, args.batch, args.repeats)
    with xla_transposed_convs():
        xla = step_ms(images, args.batch, args.repeats)
    result["train_step_ms"] = {"ours": ours, "xla_conv_transpose": xla, "ratio": xla / ours}
    print(f"OutlierVAE train step (batch {args.batch}): ours {ours:.0f} ms, XLA transposed convs {xla:.0f} ms "
          f"({xla / ours:.1f}x)", flush=True)
    result["seeds"] = seeds_rows(images, args.batch, args.seeds)
    v, g = result["seeds"]
    print(f"{args.seeds} seeds, {args.images} images: epoch vmapped {v['epoch_s']:.1f} s, groups of 1 {g['epoch_s']:.1f} s "
          f"({v['epoch_s'] / g['epoch_s']:.2f}x); scoring 1024 rows x L=10: {v['score_1024_rows_s']:.1f} s vs "
          f"{g['score_1024_rows_s']:.1f} s ({v['score_1024_rows_s'] / g['score_1024_rows_s']:.2f}x)", flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
