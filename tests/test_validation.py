"""Bad input gets a clear error that names the problem."""

import numpy as np
import optax
import pytest

import vaegmm_jax as vj
from tests.conftest import manifold_data

X_TRAIN, X_TEST, _ = manifold_data(n_in=256, n_out=10, seed=4)


@pytest.fixture(scope="module")
def det():
    d = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, seed=5, hidden=(8, 4))
    d.fit(X_TRAIN, epochs=1, batch_size=128, verbose=False, optimizer=optax.adam(1e-3))
    return d


def test_unfitted_detector_raises():
    with pytest.raises(vj.NotFittedError, match="not fitted"):
        vj.OutlierVAEGMM().score(X_TEST)
    with pytest.raises(vj.NotFittedError):
        vj.OutlierVAEGMM().predict(X_TEST)


def test_predict_before_threshold_raises(det):
    assert det.threshold is None
    with pytest.raises(vj.NotFittedError, match="no threshold"):
        det.predict(X_TEST)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (np.where(np.arange(12) == 3, np.nan, 0.0)[None].repeat(4, 0), ValueError, "NaN"),
        (np.full((4, 12), np.inf), ValueError, "inf"),
        (np.zeros((4, 7)), ValueError, r"rows of shape \(7,\).*\(12,\)"),
        (np.zeros(12), ValueError, "leading batch axis"),
        (np.zeros((0, 12)), ValueError, "empty"),
        (np.array([["a"] * 12] * 3), TypeError, "numeric"),
        (np.zeros((3, 12), dtype=object), TypeError, "numeric"),
        (np.zeros((3, 12), dtype=complex), TypeError, "real"),
    ],
)
def test_bad_scoring_input(det, bad, exc, match):
    with pytest.raises(exc, match=match):
        det.score(bad)


def test_bad_fit_input():
    d = vj.OutlierVAEGMM()
    x = X_TRAIN.copy()
    x[17, 2] = np.nan
    with pytest.raises(ValueError, match="first bad row 17"):
        d.fit(x, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="at least 2"):
        d.fit(X_TRAIN[:1], epochs=1, verbose=False)
    with pytest.raises(ValueError, match="epochs"):
        d.fit(X_TRAIN, epochs=0, verbose=False)
    with pytest.raises(ValueError, match="batch_size"):
        d.fit(X_TRAIN, batch_size=-3, verbose=False)
    with pytest.raises(ValueError, match="cov_elbo"):
        d.fit(X_TRAIN, cov_elbo=dict(sim=0.1, cov_full=None), verbose=False)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        d.fit(X_TRAIN, checkpoint_every=2, verbose=False)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="n_gmm"):
        vj.OutlierVAEGMM(n_gmm=0)
    with pytest.raises(ValueError, match="eps"):
        vj.OutlierVAEGMM(eps=0.0)
    with pytest.raises(TypeError, match="encoder_net"):
        vj.OutlierVAEGMM(encoder_net="dense").fit(X_TRAIN, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="threshold_perc"):
        vj.OutlierVAEGMM().infer_threshold(X_TRAIN, threshold_perc=120)


def test_fit_prints_nothing_when_not_a_terminal(capsys):
    d = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, seed=5, hidden=(8, 4))
    d.fit(X_TRAIN, epochs=1, batch_size=128, verbose=True, optimizer=optax.adam(1e-3))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_import_changes_no_global_state():
    import subprocess
    import sys

    code = (
        "import logging, jax; before = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision, "
        "len(logging.getLogger().handlers)); import vaegmm_jax; "
        "after = (jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision, len(logging.getLogger().handlers)); "
        "assert before == after, (before, after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""


def test_whole_model_passed_in_still_validates_shape_and_saves(tmp_path):
    from vaegmm_jax.models import GMMAutoencoder
    from vaegmm_jax.nets import as_network, dense

    model = GMMAutoencoder(
        encoder=as_network(dense.default_encoder(12, (8, 4))),
        decoder=as_network(dense.default_decoder(12, (8, 4))),
        gmm_net=as_network(dense.default_gmm_density_net(2, dropout=0.0)),
        latent_dim=2, n_gmm=2, recon_features=vj.dagmm_features,
    )
    d = vj.OutlierVAEGMM(vaegmm=model, seed=5)
    d.fit(X_TRAIN, epochs=1, batch_size=128, verbose=False, optimizer=optax.adam(1e-3))
    assert d.input_shape == (12,)
    with pytest.raises(ValueError, match="rows of shape"):
        d.score(np.zeros((3, 5)))
    vj.save_detector(d, tmp_path / "m")
    loaded = vj.load_detector(tmp_path / "m", vaegmm=model)
    np.testing.assert_array_equal(loaded.score(X_TEST), d.score(X_TEST))
