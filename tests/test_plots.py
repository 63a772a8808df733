"""vaegmm_jax.evaluation.plots: valid, non-blank PNGs, headless, without touching matplotlib's global state.

One small detector is fitted for the module (few epochs) to exercise the mixture
scatter through ``model.sampled_mixture_inputs``; the other plots take arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from vaegmm_jax.evaluation import plots  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_side: int = 50) -> np.ndarray:
    from matplotlib.image import imread

    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    img = imread(str(path))
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side, img.shape
    assert float(np.var(img[..., :3])) > 1e-3, f"{path} looks blank"
    return img


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """ONE small OutlierAEGMM fitted on 2-D structured data, plus labelled test rows."""
    import optax

    from vaegmm_jax import OutlierAEGMM

    rng = np.random.default_rng(0)

    def rows(n):
        t = rng.normal(size=(n, 1))
        return np.concatenate([t, 0.5 * t, -t, 0.2 * t], axis=1) + 0.05 * rng.normal(size=(n, 4))

    X = rows(256).astype(np.float32)
    X_test = np.concatenate([rows(60), rng.normal(scale=2.0, size=(20, 4))]).astype(np.float32)
    y_test = np.r_[np.zeros(60, int), np.ones(20, int)]
    det = OutlierAEGMM(n_gmm=2, latent_dim=1, hidden=(8, 4), seed=0, recon_features="dagmm")
    det.fit(X, epochs=3, batch_size=64, optimizer=optax.adam(3e-3), verbose=False)
    det.infer_threshold(X, threshold_perc=95)
    return det, X_test, y_test


def test_training_curves_png_one_panel_per_term(tmp_path):
    history = {
        "recon": list(np.linspace(5.0, 0.5, 30)),
        "energy": list(np.linspace(-1.0, -4.0, 30)),  # negative: linear axis
        "cov_diag": list(np.geomspace(1000.0, 10.0, 30)),  # positive, wide: log axis
        "kl": [0.0] * 30,  # zero throughout: no panel
        "total": list(np.linspace(9.0, 1.0, 30)),
    }
    fig = plots.plot_training_curves(history, path=tmp_path / "curves.png")
    assert len(fig.axes) == 4
    scales = {ax.get_title().split()[0]: ax.get_yscale() for ax in fig.axes}
    assert scales == {"recon": "log", "energy": "linear", "cov_diag": "log", "total": "log"}
    assert_png(tmp_path / "curves.png")
    with pytest.raises(ValueError):
        plots.plot_training_curves({})


def test_score_histogram_and_roc_pr(tmp_path):
    rng = np.random.default_rng(1)
    scores = np.r_[rng.normal(0, 1, 300), rng.normal(3, 1, 40), [1e6]]  # one far outlier is clipped
    labels = np.r_[np.zeros(300, int), np.ones(41, int)]
    fig = plots.plot_score_histogram(scores, labels, threshold=2.0, path=tmp_path / "hist.png")
    assert any(line.get_xdata()[0] == 2.0 for line in fig.axes[0].lines)  # the threshold line
    assert_png(tmp_path / "hist.png")
    plots.plot_score_histogram(scores, None, threshold=None, path=tmp_path / "hist_unlabelled.png")
    assert_png(tmp_path / "hist_unlabelled.png")
    fig = plots.plot_roc_pr(labels, scores, path=tmp_path / "roc.png", threshold=2.0)
    assert len(fig.axes) == 2
    assert "AUROC" in fig.axes[0].get_legend().get_texts()[0].get_text()
    assert_png(tmp_path / "roc.png")
    with pytest.raises(ValueError, match="both"):
        plots.plot_roc_pr(np.zeros(5, int), np.arange(5.0))


def test_mixture_scatter_from_detector(fitted, tmp_path):
    det, X_test, y_test = fitted
    z, gamma = plots.mixture_inputs(det, X_test)
    assert z.shape == (len(X_test), det.latent_dim + 2) and gamma.shape == (len(X_test), 2)
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, rtol=1e-5)
    fig = plots.plot_mixture(det, X_test, path=tmp_path / "mixture.png", labels=y_test)
    assert len(fig.axes) == 3  # D = 3: all pairs
    assert {ax.get_xlabel() for ax in fig.axes} >= {"latent 0", "rel. Euclidean"}
    assert_png(tmp_path / "mixture.png")


def test_mixture_scatter_from_arrays(tmp_path):
    rng = np.random.default_rng(2)
    z = rng.normal(size=(200, 4))
    gamma = np.eye(3)[rng.integers(0, 3, 200)]
    fig = plots.plot_mixture(z=z, gamma=gamma, latent_dim=2, path=tmp_path / "m.png")
    assert len(fig.axes) == 6
    assert fig.axes[0].get_xlabel() == "latent 0" and fig.axes[0].get_ylabel() == "latent 1"  # latent pair first
    assert_png(tmp_path / "m.png")
    with pytest.raises(ValueError):
        plots.plot_mixture(z=z, gamma=gamma[:10], latent_dim=2)
    with pytest.raises(ValueError):
        plots.mixture_inputs(object(), z)


def test_image_grid_shows_top_outliers(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.random((40, 12, 12, 1)).astype(np.float32)
    scores = rng.normal(size=40)
    labels = (scores > 1).astype(int)
    fig = plots.plot_image_grid(images, scores, path=tmp_path / "grid.png", n=10, labels=labels)
    titles = [ax.get_title() for ax in fig.axes]
    top = np.sort(scores)[::-1][:10]
    assert [float(t.split()[0]) for t in titles] == pytest.approx(top, rel=1e-2)
    assert_png(tmp_path / "grid.png")
    plots.plot_image_grid(rng.random((5, 8, 8, 3)), np.arange(5.0), path=tmp_path / "rgb.png")
    assert_png(tmp_path / "rgb.png", min_side=40)


def test_plots_leave_matplotlib_global_state_alone(tmp_path):
    backend = matplotlib.get_backend()
    rc = dict(matplotlib.rcParams)
    plots.plot_score_histogram(np.arange(10.0), path=tmp_path / "h.png")
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == rc
    src = open(plots.__file__).read()
    assert "import pyplot" not in src and "matplotlib.pyplot" not in src and "matplotlib.use(" not in src
