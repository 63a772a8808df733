"""Choose VAEGMM's KL weight (beta) on a validation split of the DAGMM protocol's train half.

No test row is used: :func:`vaegmm_jax.evaluation.dagmm_validation_runs` trains on the
fit normals of the train half and evaluates on its validation normals plus the train
half's anomalies (which the protocol never trains on), with the protocol's threshold
rule. Use seeds other than the reported ones (the accuracy table reports 0..19; the
default here is 100..102). DAGMM on the same runs is printed for reference.

    VAEGMM_DATA=../shared/data python benchmarks/select_beta.py --dataset kddcup_rev \\
        --betas 1,0.1,0.01 --seeds 3 --json out/select_rev.json

The chosen values live in ``accuracy.VAEGMM_BETA``; ``ACCURACY.md``'s notes hold the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(_ROOT))


def add_validation_args(ap: argparse.ArgumentParser) -> None:
    """The options :func:`validation_data` reads (seeds, schedule, validation split, scaling, I/O)."""
    ap.add_argument("--first-seed", type=int, default=100, help="seeds first..first+N-1 (not the reported 0..19)")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="fraction of the paper's epochs")
    ap.add_argument("--val-anomaly-ratio", type=float, default=None,
                    help="anomaly ratio of the validation set (default: keep every train-half anomaly)")
    ap.add_argument("--scaling", choices=("minmax", "standard", "none"), default="minmax",
                    help="input transform fitted on the fit rows (vaegmm_jax.evaluation.SCALINGS; default: the paper's)")
    ap.add_argument("--data", default=None, help="data folder (default $VAEGMM_DATA)")
    ap.add_argument("--json", default=None, help="write every run's result dict here")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, choices=("kddcup", "thyroid", "arrhythmia", "kddcup_rev"))
    ap.add_argument("--betas", default="1,0.1,0.01,0.001", help="comma list of KL weights (fixed beforehand)")
    ap.add_argument("--seeds", type=int, default=3, help="runs per beta")
    ap.add_argument("--no-dagmm", action="store_true", help="skip the DAGMM reference cell")
    add_validation_args(ap)
    args = ap.parse_args(argv)
    try:
        args.betas = [float(b) for b in args.betas.split(",") if b.strip()]
    except ValueError:
        ap.error(f"--betas must be a comma list of numbers, got {args.betas!r}")
    if not args.betas or any(not b > 0 for b in args.betas):
        ap.error("--betas needs at least one positive value")
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 (the table reports a standard deviation)")
    return args


def validation_data(args):
    """The validation runs of ``args.dataset`` (seeds ``args.first_seed`` ..), printed."""
    if args.data is None and not os.environ.get("VAEGMM_DATA"):
        raise SystemExit("set VAEGMM_DATA to the data folder (e.g. ../shared/data) or pass --data")
    from vaegmm_jax import data as datasets
    from vaegmm_jax import evaluation

    name = args.dataset
    if name in ("kddcup", "kddcup_rev"):
        ds = datasets.load_kddcup99(args.data, protocol="dagmm")
    else:
        ds = datasets.load_odds(name, args.data)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    data = evaluation.dagmm_validation_runs(ds, seeds, rev=(name == "kddcup_rev"), name=name,
                                           anomaly_ratio=args.val_anomaly_ratio,
                                           scaling=args.scaling)
    info = data.info
    print(f"{name}: {info['n_train']} fit rows, {info['n_test']} validation rows "
          f"({info['test_anomaly_ratio']:.1%} anomalies), seeds {list(seeds)}; scaling: {info['scaling']}", flush=True)
    return data


def run_and_report(data, specs, json_path=None) -> None:
    """Runs each spec on the validation runs; prints one table row per spec (and per-seed F1)."""
    from vaegmm_jax import evaluation

    rows, all_runs = [], []
    for spec in specs:
        t0 = time.perf_counter()
        runs = evaluation.run_protocol(data, spec)
        s = evaluation.summarize(runs)
        for r in runs:
            r["label"] = spec.name
        all_runs += runs
        line = (f"| {spec.name} | {s['f1'][0]:.3f} ± {s['f1'][1]:.3f} | {s['auroc'][0]:.3f} ± {s['auroc'][1]:.3f} "
                f"| {s['ap'][0]:.3f} ± {s['ap'][1]:.3f} | {s['n_failed']}/{s['n_runs']} |")
        rows.append(line)
        per_seed = ", ".join(f"{r['f1']:.3f}" for r in runs)
        print(f"{line}  {time.perf_counter() - t0:.0f} s, {runs[0].get('epochs')} epochs; F1 per seed {per_seed}",
              flush=True)
    print("\n| detector | validation F1 | AUROC | AP | failed |\n|---|---|---|---|---|")
    print("\n".join(rows))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(all_runs, indent=1, default=float) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    from vaegmm_jax import evaluation

    data = validation_data(args)
    name = args.dataset
    specs = [] if args.no_dagmm else [evaluation.dagmm_spec(name, epochs_scale=args.epochs_scale)]
    specs += [evaluation.vaegmm_spec(name, epochs_scale=args.epochs_scale, beta=b, name=f"VAEGMM beta {b:g}")
              for b in args.betas]
    run_and_report(data, specs, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
