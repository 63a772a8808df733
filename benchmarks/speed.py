"""Side-by-side speed benchmark: vaegmm_jax vs PyTorch vs alibi-detect (TensorFlow).

Each runner is its own process on the same synthetic data (benchmarks/common.py) and
architecture (KDD shape: 120 features, encoder 60-30-10 tanh, latent 2, estimation
10 tanh -> 4, L = 10, batch 1024). Prints a Markdown table with ratios against
vaegmm_jax and writes every runner's JSON.

    python benchmarks/speed.py --rows 100000 --epochs 3 --score-rows 200000 \
        --tf-python /work/venvs/tf/bin/python --out out/speed_cpu

Options decide which runners take part (--no-torch, --torch-compile, --tf-python ''),
so the same command serves the GPU (--device cuda) where TensorFlow is absent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(name: str, cmd: list[str], out_json: str, env=None) -> dict:
    print(f"[speed] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not os.path.exists(out_json):
        return {"runner": name, "error": (proc.stderr or proc.stdout)[-800:]}
    with open(out_json) as f:
        result = json.load(f)
    result["runner"] = name
    return result


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def table(results: list[dict]) -> str:
    base = next((r for r in results if r["runner"] == "vaegmm_jax" and "error" not in r), None)
    rows = [
        "| runner | device | first epoch s (incl. compile) | s / epoch (steady) | epoch speed-up of vaegmm_jax | "
        "score rows/s | scoring speed-up of vaegmm_jax | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['runner']} | failed: {r['error'].splitlines()[-1][:120] if r['error'] else '?'} | | | | | | |")
            continue
        epoch = r.get("epoch_s_steady")
        score = r.get("score_rows_per_s")
        train_ratio = (epoch / base["epoch_s_steady"]) if (base and epoch and base.get("epoch_s_steady")) else None
        score_ratio = (base["score_rows_per_s"] / score) if (base and score) else None
        rows.append(
            f"| {r['runner']} | {r.get('device_name', '?')} | {_fmt(r.get('first_epoch_s'))} | {_fmt(epoch)} | "
            f"{_fmt(train_ratio, 3) + 'x' if train_ratio else '-'} | {_fmt(score)} | "
            f"{_fmt(score_ratio, 3) + 'x' if score_ratio else '-'} | {_fmt(r.get('peak_rss_mb'))} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--score-rows", type=int, default=200_000)
    p.add_argument("--tf-epochs", type=int, default=2, help="alibi-detect is slow: fewer epochs")
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch); JAX uses its default backend")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--torch-compile", action="store_true", help="also run torch.compile")
    p.add_argument("--tf-python", default="/work/venvs/tf/bin/python",
                   help="python of the alibi-detect venv ('' to skip)")
    p.add_argument("--out", default="out/speed")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    common_args = ["--rows", str(args.rows), "--score-rows", str(args.score_rows)]
    results = []
    out = os.path.join(args.out, "jax.json")
    results.append(_run("vaegmm_jax", [sys.executable, f"{HERE}/jax_vaegmm.py", *common_args,
                                       "--epochs", str(args.epochs), "--json", out], out))
    if not args.no_torch:
        out = os.path.join(args.out, "torch.json")
        results.append(_run("pytorch eager", [sys.executable, f"{HERE}/torch_vaegmm.py", *common_args, "--epochs",
                                              str(args.epochs), "--device", args.device, "--json", out], out))
        if args.torch_compile:
            out = os.path.join(args.out, "torch_compile.json")
            results.append(_run("pytorch torch.compile", [sys.executable, f"{HERE}/torch_vaegmm.py", *common_args,
                                                          "--epochs", str(args.epochs), "--device", args.device,
                                                          "--compile", "--json", out], out))
    if args.tf_python and os.path.exists(args.tf_python):
        out = os.path.join(args.out, "alibi_tf.json")
        results.append(_run("alibi-detect 0.13 (TF)", [args.tf_python, f"{HERE}/alibi_tf.py", *common_args,
                                                       "--epochs", str(args.tf_epochs), "--json", out], out))
    md = table(results)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = f"Measured {stamp} with `{cmd}`\n\n{md}\n"
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
