"""ODDS Thyroid: DAGMM (paper preset) and VAEGMM side by side, one seed, DAGMM protocol.

    VAEGMM_DATA=../shared/data python examples/thyroid.py --epochs 300
(the paper trains 20,000 epochs; Thyroid's run-to-run spread is large, so compare means over
many seeds: benchmarks/accuracy.py.)
"""

import argparse

import numpy as np
import optax
from sklearn.ensemble import IsolationForest

import vaegmm_jax as vj
from vaegmm_jax.data import load_odds
from vaegmm_jax.evaluation import metrics
from vaegmm_jax.detectors import presets


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None)
    args = p.parse_args()

    data = load_odds("thyroid", args.data)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data.y))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    train = train[data.y[train] == 0]
    x_train, x_test, y_test = data.X[train], data.X[test], data.y[test]
    ratio = 0.025

    results = {}
    dagmm = presets.make_detector("thyroid", seed=args.seed)
    dagmm.fit(x_train, **presets.fit_kwargs("thyroid", epochs=args.epochs), verbose=False)
    results["DAGMM (paper preset)"] = dagmm.score(x_test)

    vaegmm = vj.OutlierVAEGMM(n_gmm=2, latent_dim=1, hidden=(12, 4), seed=args.seed)
    vaegmm.fit(x_train, w_recon=1.0, cov_elbo=dict(sim=0.1), epochs=args.epochs, batch_size=1024,
               optimizer=optax.adam(1e-3), verbose=False)
    results["VAEGMM"] = vaegmm.score(x_test)
    results["IsolationForest"] = -IsolationForest(random_state=args.seed).fit(x_train).score_samples(x_test)

    print(f"{'detector':24s} precision  recall     F1   AUROC   (DAGMM paper F1 0.4782)")
    for name, scores in results.items():
        prf = metrics.precision_recall_f1_at_ratio(scores, y_test, ratio)
        print(f"{name:24s} {prf.precision:9.4f} {prf.recall:7.4f} {prf.f1:6.4f} {metrics.auroc(y_test, scores):7.4f}")


if __name__ == "__main__":
    main()
