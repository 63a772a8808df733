"""Compare weight initialisers on a validation split of the DAGMM protocol's train half.

The frameworks whose models we reproduce draw their weights differently (Flax: LeCun
normal; TensorFlow/Keras, the DAGMM paper's and alibi-detect's: Glorot uniform; PyTorch:
U(+-1/sqrt(fan_in))). This runs a detector with each on the same validation runs as
``select_beta.py`` (no test row; seeds 100+ by default, disjoint from the reported 0..19):

    VAEGMM_DATA=../shared/data python benchmarks/select_init.py --dataset kddcup \\
        --inits lecun_normal,glorot_uniform --seeds 5

A preset's choice lives in its ``kernel_init`` field (``vaegmm_jax.detectors.presets``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
for _p in (_ROOT, _ROOT / "benchmarks"):  # run from a checkout without installing
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from select_beta import add_validation_args, run_and_report, validation_data  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, choices=("kddcup", "thyroid", "arrhythmia", "kddcup_rev"))
    ap.add_argument("--inits", default="lecun_normal,glorot_uniform", help="comma list of vaegmm_jax KERNEL_INITS")
    ap.add_argument("--detector", choices=("dagmm", "vaegmm"), default="dagmm")
    ap.add_argument("--beta", type=float, default=None, help="VAEGMM KL weight (default: accuracy.VAEGMM_BETA)")
    ap.add_argument("--seeds", type=int, default=5, help="runs per initialiser")
    add_validation_args(ap)
    args = ap.parse_args(argv)
    from vaegmm_jax.nets.dense import KERNEL_INITS

    args.inits = [i.strip() for i in args.inits.split(",") if i.strip()]
    unknown = [i for i in args.inits if i not in KERNEL_INITS]
    if unknown or not args.inits:
        ap.error(f"--inits must name some of {sorted(KERNEL_INITS)}, got {unknown or 'none'}")
    if args.seeds < 2:
        ap.error("--seeds must be at least 2 (the table reports a standard deviation)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from accuracy import VAEGMM_BETA

    from vaegmm_jax import evaluation

    data = validation_data(args)
    kw = dict(epochs_scale=args.epochs_scale)
    if args.detector == "dagmm":
        specs = [evaluation.dagmm_spec(args.dataset, name=f"DAGMM {i}", kernel_init=i, **kw) for i in args.inits]
    else:
        beta = args.beta if args.beta is not None else VAEGMM_BETA.get(args.dataset, 1.0)
        specs = [evaluation.vaegmm_spec(args.dataset, name=f"VAEGMM {i} (beta {beta:g})", beta=beta, kernel_init=i, **kw)
                 for i in args.inits]
    run_and_report(data, specs, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
