"""OutlierVAE: reconstruction error (alibi-detect) vs reconstruction probability (An & Cho, 2015).

Default: synthetic tabular data (inliers on a curved 2-D manifold in 20 dimensions,
outliers off it). With ``VAEGMM_DATA`` set: ODDS Thyroid (train on the normal rows of a
random half, test on the other half). ``--images``: small synthetic images with the
Bernoulli likelihood and the teaching notebook's conv nets instead.
Under a minute on a CPU (most of it is XLA compilation).

    python examples/vae_reconstruction_probability.py [--images]
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import optax

import vaegmm_jax as vj
from vaegmm_jax.evaluation import metrics


def tabular(seed: int = 0):
    """(X_train, X_test, y_test, description)."""
    rng = np.random.default_rng(seed)
    if os.environ.get("VAEGMM_DATA"):
        from vaegmm_jax.data import apply_column_scaler, fit_column_scaler, load_odds

        ds = load_odds("thyroid")
        idx = rng.permutation(len(ds.X))
        train, test = idx[: len(idx) // 2], idx[len(idx) // 2 :]
        train = train[ds.y[train] == 0]  # train on normal rows only
        scaler = fit_column_scaler(ds.X[train], "minmax")
        return (apply_column_scaler(scaler, ds.X[train]), apply_column_scaler(scaler, ds.X[test]),
                ds.y[test], "ODDS Thyroid")
    a = rng.normal(size=(2, 20)) / np.sqrt(2)

    def inliers(n):
        return (np.tanh(rng.normal(size=(n, 2)) @ a) + 0.03 * rng.normal(size=(n, 20))).astype(np.float32)

    x_test = np.concatenate([inliers(1000), rng.uniform(-1, 1, size=(50, 20)).astype(np.float32)])
    return inliers(4000), x_test, np.r_[np.zeros(1000), np.ones(50)], "synthetic manifold (20-D)"


def images(seed: int = 0):
    """16x16 Gaussian blobs in [0, 1]; outliers are inverted blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]

    def blobs(n):
        c = rng.uniform(4, 12, size=(n, 2))
        r = rng.uniform(2, 4, size=(n, 1, 1))
        d2 = (yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2
        return np.exp(-d2 / (2 * r**2))[..., None].astype(np.float32)

    x_test = np.concatenate([blobs(100), 1.0 - blobs(10)])
    return blobs(300), x_test, np.r_[np.zeros(100), np.ones(10)], "synthetic 16x16 images"


def main() -> None:
    use_images = "--images" in sys.argv[1:]
    x_train, x_test, y_test, what = images() if use_images else tabular()
    print(f"data: {what}; train {x_train.shape}, test {x_test.shape} with {int(y_test.sum())} outliers")
    if use_images:
        # pixels in [0, 1]: Bernoulli likelihood; the default nets for images are the notebook's conv nets
        # (few images, epochs and samples keep this short on a CPU)
        configs = {"mse (Bernoulli, conv)": dict(score_type="mse", likelihood="bernoulli", latent_dim=3, samples=3),
                   "recon_prob (Bernoulli, conv)": dict(score_type="recon_prob", likelihood="bernoulli", latent_dim=3,
                                                        samples=3)}
        fit = dict(optimizer=optax.adam(2e-3), epochs=2, batch_size=32)
    else:
        configs = {"mse (alibi-detect)": dict(score_type="mse", samples=10),
                   "recon_prob (An & Cho)": dict(score_type="recon_prob", samples=10)}
        fit = dict(optimizer=optax.adam(3e-3), epochs=40, batch_size=256)
    for name, kwargs in configs.items():
        t0 = time.perf_counter()
        det = vj.OutlierVAE(seed=0, **kwargs)
        det.fit(x_train, verbose=False, **fit)
        det.infer_threshold(x_train, threshold_perc=95)
        pred = det.predict(x_test)["data"]
        prf = metrics.precision_recall_f1(y_test, pred["is_outlier"])
        print(f"{name:30s} AUROC {metrics.auroc(y_test, pred['instance_score']):.3f}  "
              f"AP {metrics.average_precision(y_test, pred['instance_score']):.3f}  "
              f"P/R/F1 at the 95th train percentile {prf.precision:.3f}/{prf.recall:.3f}/{prf.f1:.3f}  "
              f"({time.perf_counter() - t0:.1f} s)")
    print("feature scores:", pred["feature_score"].shape, "(per-feature -log p(x_j | z), averaged over samples)")


if __name__ == "__main__":
    main()
