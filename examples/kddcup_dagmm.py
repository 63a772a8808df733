"""KDDCUP 10% with the DAGMM paper's protocol and architecture (one seed).

Protocol (Zong et al. 2018): random 50/50 split; train only on the non-`normal.` rows of the
train half (in this protocol the `normal.` traffic, 20%, is the anomaly class); flag the top
20% of test energies. 118 one-hot + numeric columns (see vaegmm_jax.data.load_kddcup99), continuous
columns min-max scaled on the training rows only.

    VAEGMM_DATA=../shared/data python examples/kddcup_dagmm.py --epochs 10
(the paper trains 200 epochs; benchmarks/accuracy.py runs the full 20-seed table.)
"""

import argparse
import time

import numpy as np

from vaegmm_jax.data import apply_column_scaler, fit_column_scaler, load_kddcup99

from vaegmm_jax.evaluation import metrics

from vaegmm_jax.detectors import presets


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="data folder (default: $VAEGMM_DATA)")
    args = p.parse_args()

    kdd = load_kddcup99(args.data, protocol="dagmm")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(kdd.y))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    train = train[kdd.y[train] == 0]  # the protocol's normal class only
    scaler = fit_column_scaler(kdd.X[train], "minmax", kdd.continuous)
    x_train, x_test = apply_column_scaler(scaler, kdd.X[train]), apply_column_scaler(scaler, kdd.X[test])

    det = presets.make_detector("kddcup", seed=args.seed)
    t0 = time.perf_counter()
    det.fit(x_train, **presets.fit_kwargs("kddcup", epochs=args.epochs), verbose=True)
    scores = det.score(x_test)
    prf = metrics.precision_recall_f1_at_ratio(scores, kdd.y[test], 0.2)
    print(f"trained {args.epochs} epochs on {len(train):,} rows in {time.perf_counter() - t0:.1f} s")
    print(f"precision {prf.precision:.4f}  recall {prf.recall:.4f}  F1 {prf.f1:.4f}  "
          f"AUROC {metrics.auroc(kdd.y[test], scores):.4f}   (paper F1 0.9369, 200 epochs, mean of 20 runs)")


if __name__ == "__main__":
    main()
