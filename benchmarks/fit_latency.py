"""How long a short fit takes from a cold start, compilation included, and where the time goes:
this tree against an earlier commit, side by side, each fit a fresh Python process with no
persistent compilation cache.

    python benchmarks/fit_latency.py --rows 20000 --epochs 10 --repeats 3 --baseline 9e3ffd2 \\
        --json benchmarks/results/fit_latency_cpu.json

Two detectors: the default ``OutlierVAEGMM(n_gmm=4, latent_dim=2)`` and the DAGMM KDD preset's
nets (120-60-30-10-1 tanh, estimation 10 tanh, dropout 0.5, batch 1024, Adam 1e-4), both on
KDD-shaped rows (``common.make_data``). Runs alternate between the trees so that the shared
machine's drift hits both alike. Reported per run: the fit's wall seconds (from ``fit`` called
to ``fit`` returned; the process's imports and the device runtime's start are outside), and
``fit_seconds`` where the tree records it (setup = compiling the epoch and initialisation
programs; after_fit_compile_wait = what the fit waited for the after-fit programs, which compile
while the epochs run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

#: the child: one fit in a fresh process, its timings as one JSON line
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import common
import jax
import numpy as np
import optax
import vaegmm_jax as vj
kind, rows, epochs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
x = common.make_data(rows)
jax.block_until_ready(jax.numpy.zeros(1))  # the device runtime starts outside the timed fit
if kind == "vaegmm":
    det, kw = vj.OutlierVAEGMM(n_gmm=4, latent_dim=2, seed=0), {}
else:
    det = vj.OutlierAEGMM(n_gmm=4, latent_dim=1, hidden=(60, 30, 10), gmm_hidden=10, gmm_dropout=0.5, seed=0)
    kw = dict(batch_size=1024, optimizer=optax.adam(1e-4))
t0 = time.perf_counter()
det.fit(x, epochs=epochs, verbose=False, **kw)
fit_s = time.perf_counter() - t0
print(json.dumps({"fit_s": fit_s, "phases": {k: float(v) for k, v in det.fit_seconds.items()},
                  "steady_epoch_s": float(np.median(det.epoch_seconds[1:])) if len(det.epoch_seconds) > 1 else None,
                  "last_loss": float(list(det.history.values())[-1][-1])}))
"""


def run_fit(src: Path, kind: str, rows: int, epochs: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PYTHONPATH"] = str(src)  # this tree's or the baseline's vaegmm_jax, not the installed one
    out = subprocess.run([sys.executable, "-c", CHILD, str(HERE), kind, str(rows), str(epochs)], env=env,
                         capture_output=True, text=True, cwd=str(src))
    if out.returncode != 0:
        raise RuntimeError(f"fit in {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--detectors", default="vaegmm,dagmm_kdd")
    p.add_argument("--baseline", default=None, help="a git revision to compare with (checked out in a temporary worktree)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    repo = HERE.parent
    result = {"runner": "fit latency, fresh processes", "rows": args.rows, "epochs": args.epochs,
              "repeats": args.repeats, "baseline": args.baseline, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": repo}
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
            trees["baseline"] = base
        try:
            for kind in args.detectors.split(","):
                for _ in range(args.repeats):
                    for name, src in trees.items():
                        run = run_fit(src, kind, args.rows, args.epochs)
                        result["runs"].setdefault(f"{kind}/{name}", []).append(run)
                        print(f"{kind:10s} {name:8s} fit {run['fit_s']:.2f} s  "
                              + " ".join(f"{k} {v:.2f}" for k, v in run["phases"].items()), file=sys.stderr)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(trees["baseline"])],
                               capture_output=True)
    summary = {}
    for key, runs in result["runs"].items():
        summary[key] = {"fit_s_median": float(np.median([r["fit_s"] for r in runs])),
                        "setup_s_median": float(np.median([r["phases"].get("setup", np.nan) for r in runs]))}
    if args.baseline:
        for kind in args.detectors.split(","):
            this, base = summary[f"{kind}/this"], summary[f"{kind}/baseline"]
            summary[f"{kind}/speed-up"] = {"fit": base["fit_s_median"] / this["fit_s_median"],
                                           "setup": base["setup_s_median"] / this["setup_s_median"]}
    result["summary"] = summary
    common.write_result(args.json, result)


if __name__ == "__main__":
    main()
