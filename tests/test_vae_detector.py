"""OutlierVAE on tabular data: both score families, exact maths, persistence, errors.

Each detector is fitted once per module (JAX compilation dominates on a CPU).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

import vaegmm_jax as vj
from tests.conftest import manifold_split
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.models import VAEModel
from vaegmm_jax.models.vae_model import decoder_layout, top_percent_mean
from vaegmm_jax.nets import Network, from_linen
from vaegmm_jax.nets.dense import MLP

F = 20


X_TRAIN, X_TEST, Y_TEST = manifold_split(n_features=F)


def _mse_metric(x, x_recon):
    return jnp.mean((x - x_recon) ** 2, axis=-1)


@pytest.fixture(scope="module")
def mse_det():
    det = vj.OutlierVAE(score_type="mse", hidden=(16, 8), latent_dim=2, samples=4, seed=0)
    det.fit(X_TRAIN, optimizer=optax.adam(3e-3), epochs=30, batch_size=128, verbose=False,
            log_metric=("mse", _mse_metric))
    return det


@pytest.fixture(scope="module")
def rp_det():
    # unscaled: the float64 reference below reads the rows as given
    det = vj.OutlierVAE(score_type="recon_prob", hidden=(16, 8), latent_dim=2, samples=4, seed=0, scaler=None)
    det.fit(X_TRAIN, optimizer=optax.adam(3e-3), epochs=30, batch_size=128, verbose=False)
    return det


def _sibling(det, score_type):
    """A detector sharing det's trained model under another (compatible) score type."""
    other = vj.OutlierVAE(score_type=score_type, vae=det.model, samples=det.samples, seed=det.seed)
    other.params, other.input_shape, other.scaler = det.params, det.input_shape, det.scaler
    return other


# -- training and separation ------------------------------------------------------------
def test_mse_history_and_separation(mse_det):
    h = mse_det.history
    assert set(h) == {"recon", "kl", "total", "mse"} and len(h["total"]) == 30
    assert h["total"][-1] < h["total"][0]
    assert h["mse"][-1] < h["mse"][0]
    assert mse_det.fit_config["cov_elbo"] == {"sim": 0.05}
    assert roc_auc_score(Y_TEST, mse_det.score(X_TEST)) > 0.9


def test_recon_prob_separation(rp_det):
    assert rp_det.history["total"][-1] < rp_det.history["total"][0]
    s = rp_det.score(X_TEST)
    assert s.shape == (len(X_TEST),) and s.dtype == np.float32 and np.all(np.isfinite(s))
    assert roc_auc_score(Y_TEST, s) > 0.9
    s_mean = _sibling(rp_det, "recon_prob_mean").score(X_TEST)
    assert roc_auc_score(Y_TEST, s_mean) > 0.9
    # Jensen: the log of a mean is >= the mean of logs, so -log RP <= the negated mean log-likelihood
    assert np.all(s <= s_mean + 1e-4)


# -- exact maths ------------------------------------------------------------------------
def _np_mlp(params, x, last_activation):
    layers = sorted(params, key=lambda n: int(n.split("_")[1]))
    for i, name in enumerate(layers):
        x = x @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"], np.float64)
        if i < len(layers) - 1 or last_activation:
            x = np.tanh(x)
    return x


def test_recon_prob_equals_float64_numpy(rp_det):
    x = X_TEST  # the same row count as the other tests: one compiled chunk shape
    key = jax.random.PRNGKey(7)
    p = rp_det.params
    L, d = rp_det.samples, rp_det.latent_dim
    noise = np.asarray(vae_lib.row_normal_noise(key, jnp.arange(len(x)), L, d), np.float64)  # (L, N, d)
    x64 = x.astype(np.float64)
    h = _np_mlp(p["encoder"], x64, last_activation=True)
    dense = lambda q, v: v @ np.asarray(q["kernel"], np.float64) + np.asarray(q["bias"], np.float64)  # noqa: E731
    mean, logvar = dense(p["head"]["mean"], h), dense(p["head"]["logvar"], h)
    ll = []
    for eps in noise:  # independent z_l per sample
        out = _np_mlp(p["decoder"], mean + np.exp(0.5 * logvar) * eps, last_activation=False)
        mu, lv = out[:, :F], np.clip(out[:, F:], -30.0, 20.0)
        ll.append(np.sum(-0.5 * (math.log(2 * math.pi) + lv + (x64 - mu) ** 2 * np.exp(-lv)), axis=1))
    ll = np.stack(ll)  # (L, N)
    expected = -(logsumexp(ll, axis=0) - math.log(L))
    np.testing.assert_allclose(rp_det.score(x, key=key), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(_sibling(rp_det, "recon_prob_mean").score(x, key=key), -ll.mean(0), rtol=1e-4, atol=1e-3)
    # feature scores: per-feature NLL averaged over the samples, summing to the mean-of-logs score
    np.testing.assert_allclose(rp_det.feature_score(x, key=key).sum(axis=1), -ll.mean(0), rtol=1e-4, atol=1e-3)


def test_scores_do_not_depend_on_chunking_and_are_repeatable(rp_det):
    a = rp_det.score(X_TEST)
    np.testing.assert_array_equal(a, rp_det.score(X_TEST))
    np.testing.assert_allclose(rp_det.score(X_TEST, batch_size=16), a, rtol=1e-5, atol=1e-5)
    blocks = (X_TEST[i : i + 100] for i in range(0, len(X_TEST), 100))
    np.testing.assert_allclose(rp_det.score(blocks, batch_size=16), a, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(rp_det.score(X_TEST, key=jax.random.PRNGKey(123)), a)


def test_mse_feature_and_instance_scores(mse_det):
    x = X_TEST
    fs = mse_det.feature_score(x)
    assert fs.shape == x.shape and np.all(fs >= 0)
    np.testing.assert_allclose(mse_det.score(x), fs.mean(axis=1), rtol=1e-5)
    k = math.ceil(0.25 * F)
    top = np.sort(fs, axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(mse_det.score(x, outlier_perc=25), top, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(top_percent_mean(jnp.asarray(fs), 25)), top, rtol=1e-5)


def test_predict_and_thresholds(mse_det):
    thr = mse_det.infer_threshold(X_TRAIN[:256], threshold_perc=90)
    assert thr == pytest.approx(np.percentile(mse_det.score(X_TRAIN[:256]), 90))
    out = mse_det.predict(X_TEST)
    assert out["meta"]["name"] == "OutlierVAE" and out["meta"]["data_type"] == "tabular"
    data = out["data"]
    assert data["feature_score"].shape == X_TEST.shape
    np.testing.assert_array_equal(data["is_outlier"], (data["instance_score"] > thr).astype(int))
    assert data["is_outlier"][Y_TEST == 1].mean() > 0.8
    out = mse_det.predict(X_TEST, return_feature_score=False, return_instance_score=False)
    assert out["data"]["feature_score"] is None and out["data"]["instance_score"] is None
    mse_det.infer_threshold(X_TRAIN[:256], outlier_type="feature", threshold_perc=99)
    feat = mse_det.predict(X_TEST, outlier_type="feature")["data"]
    assert feat["is_outlier"].shape == X_TEST.shape
    np.testing.assert_array_equal(feat["is_outlier"], (feat["feature_score"] > mse_det.threshold).astype(int))


def test_fixed_covariance_options_give_finite_losses(mse_det):
    # a fresh detector of the same architecture, so the shared fixture's state is untouched
    det = vj.OutlierVAE(score_type="mse", hidden=(16, 8), latent_dim=2)
    det.build_model(X_TRAIN[:8])
    x, w, key = jnp.asarray(X_TRAIN[:64]), jnp.ones((64,)), jax.random.PRNGKey(0)
    for cov_elbo in ({"cov_diag": None}, {"cov_full": None}):
        fit_kwargs = {"cov_elbo": cov_elbo}
        objective = det.training_objective(X_TRAIN, fit_kwargs)
        total, terms = jax.jit(objective.loss_fn)(mse_det.params, x, w, key)
        assert objective.recon_cov.kind == next(iter(cov_elbo))
        assert fit_kwargs == {"cov_elbo": cov_elbo}  # the settings are read, never written into
        assert np.isfinite(float(total)) and float(terms["kl"]) >= 0


# -- persistence ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mse_det", "rp_det"])
def test_save_load_roundtrip(name, request, tmp_path):
    det = request.getfixturevalue(name)
    det.threshold = 1.5
    vj.save_detector(det, tmp_path / "vae")
    loaded = vj.load_detector(tmp_path / "vae")
    assert isinstance(loaded, vj.OutlierVAE) and loaded.score_type == det.score_type
    assert loaded.threshold == 1.5 and loaded.history == det.history
    np.testing.assert_array_equal(loaded.score(X_TEST), det.score(X_TEST))
    if name == "mse_det":
        assert loaded.recon_cov.kind == "sim"
        np.testing.assert_array_equal(loaded.feature_score(X_TEST), det.feature_score(X_TEST))


# -- decoder layouts (shapes only: no compilation) ----------------------------------------
def test_decoder_layouts():
    shape = (F,)
    assert decoder_layout(from_linen(MLP((8, F))), 2, shape, learn_variance=False) == "mean"
    assert decoder_layout(from_linen(MLP((8, 2 * F))), 2, shape, learn_variance=True) == "split"
    mean_only = VAEModel(from_linen(MLP((8,), out_activation="tanh")), from_linen(MLP((8, F))), 2, shape,
                         learn_variance=True, decoder_layout="mean")
    params = jax.eval_shape(mean_only.init, jax.random.PRNGKey(0), jnp.zeros((3, F)))
    assert params["logvar_head"]["logvar"]["kernel"].shape == (2, F)  # a z -> log-variance head is added
    net = from_linen(MLP((8, F)))
    pair = Network(init=net.init, apply=lambda p, z, train=False, key=None: (net.apply(p, z), net.apply(p, z)))
    assert decoder_layout(pair, 2, shape, learn_variance=True) == "tuple"
    with pytest.raises(ValueError, match="per row"):
        decoder_layout(from_linen(MLP((8, F + 1))), 2, shape, learn_variance=True)
    with pytest.raises(ValueError, match="fixed variance"):
        decoder_layout(from_linen(MLP((8, 2 * F))), 2, shape, learn_variance=False)


# -- errors -----------------------------------------------------------------------------
def test_constructor_errors():
    with pytest.raises(ValueError, match="score_type"):
        vj.OutlierVAE(score_type="elbo")
    with pytest.raises(ValueError, match="likelihood"):
        vj.OutlierVAE(likelihood="poisson")
    with pytest.raises(ValueError, match="logvar_clip"):
        vj.OutlierVAE(score_type="recon_prob", logvar_clip=(5, -5))
    with pytest.raises(ValueError, match="samples"):
        vj.OutlierVAE(samples=0)


def test_usage_errors(mse_det, rp_det):
    with pytest.raises(vj.NotFittedError):
        vj.OutlierVAE().score(X_TEST)
    with pytest.raises(ValueError, match="cov_elbo"):
        vj.OutlierVAE(score_type="recon_prob").fit(X_TRAIN, cov_elbo=dict(sim=0.1), verbose=False)
    with pytest.raises(ValueError, match="outlier_perc"):
        rp_det.score(X_TEST, outlier_perc=50)
    with pytest.raises(ValueError, match="outlier_perc"):
        mse_det.score(X_TEST, outlier_perc=0)
    with pytest.raises(ValueError, match="rows of shape"):
        mse_det.score(X_TEST[:, :10])
    bad = X_TEST.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mse_det.score(bad)
    with pytest.raises(ValueError, match="outlier_type"):
        mse_det.predict(X_TEST, outlier_type="row")
