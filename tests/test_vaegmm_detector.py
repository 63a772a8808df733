"""OutlierVAEGMM end to end: separation, determinism, chunking, alibi API, NNX and Linen nets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from sklearn.metrics import roc_auc_score

import vaegmm_jax as vj
from vaegmm_jax.engine.config import INIT_COMPILER_OPTIONS, xla_options
from vaegmm_jax.detectors.presets import PAPER_SCORING
from tests.conftest import manifold_data

X_TRAIN, X_TEST, Y_TEST = manifold_data()


class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.tanh(nn.Dense(8)(nn.tanh(nn.Dense(16)(x))))


class NNXEncoder(nnx.Module):
    def __init__(self, n_in, rngs):
        self.l1 = nnx.Linear(n_in, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, 8, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.l2(jnp.tanh(self.l1(x))))


class NNXDecoder(nnx.Module):
    def __init__(self, n_latent, n_out, rngs):
        self.l1 = nnx.Linear(n_latent, 16, rngs=rngs)
        self.l2 = nnx.Linear(16, n_out, rngs=rngs)

    def __call__(self, z):
        return self.l2(jnp.tanh(self.l1(z)))


class NNXGmmNet(nnx.Module):
    def __init__(self, n_in, k, rngs):
        self.l1 = nnx.Linear(n_in, 10, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(10, k, rngs=rngs)

    def __call__(self, z):
        return self.l2(self.drop(jnp.tanh(self.l1(z))))


FIT = dict(epochs=25, batch_size=128, verbose=False, optimizer=optax.adam(3e-3), w_recon=1.0, cov_elbo=dict(sim=0.05))


@pytest.fixture(scope="module")
def linen_det():
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, samples=10, seed=0, encoder_net=LinenEncoder(),
                           recon_features="dagmm", **PAPER_SCORING)
    history = det.fit(X_TRAIN, **FIT)
    return det, history


@pytest.fixture(scope="module")
def nnx_det():
    f = X_TRAIN.shape[1]
    rngs = nnx.Rngs(0, dropout=1)
    det = vj.OutlierVAEGMM(
        n_gmm=2, latent_dim=2, seed=0,
        encoder_net=NNXEncoder(f, rngs), decoder_net=NNXDecoder(2, f, rngs), gmm_density_net=NNXGmmNet(4, 2, rngs),
        recon_features="dagmm", **PAPER_SCORING,
    )
    det.fit(X_TRAIN, **FIT)
    return det


def test_linen_detector_separates_planted_outliers(linen_det):
    det, _ = linen_det
    assert roc_auc_score(Y_TEST, det.score(X_TEST)) > 0.95


def test_nnx_detector_separates_planted_outliers(nnx_det):
    assert roc_auc_score(Y_TEST, nnx_det.score(X_TEST)) > 0.95


def test_history_has_every_term_per_epoch_and_loss_decreases(linen_det):
    _, history = linen_det
    assert set(history) == {"recon", "energy", "cov_diag", "kl", "total"}
    assert all(len(v) == 25 for v in history.values())
    assert all(np.isfinite(v).all() for v in history.values())
    assert np.mean(history["total"][-3:]) < history["total"][0]


def test_scores_are_deterministic_and_key_resamples(linen_det):
    det, _ = linen_det
    a, b = det.score(X_TEST), det.score(X_TEST)
    np.testing.assert_array_equal(a, b)
    c = det.score(X_TEST, key=jax.random.PRNGKey(123))
    assert not np.array_equal(a, c)
    assert np.corrcoef(a, c)[0, 1] > 0.9  # other samples of the same per-row distribution


def test_chunked_scoring_equals_one_shot(linen_det):
    det, _ = linen_det
    one_shot = det.score(X_TEST, batch_size=4096)
    chunked = det.score(X_TEST, batch_size=100)
    np.testing.assert_allclose(chunked, one_shot, rtol=1e-5, atol=1e-5)
    # an iterable of ragged blocks and a memmap give the same rows
    blocks = (X_TEST[i : i + 77] for i in range(0, len(X_TEST), 77))
    np.testing.assert_allclose(det.score(blocks, batch_size=128), one_shot, rtol=1e-5, atol=1e-5)


def test_score_is_mean_energy_over_samples(linen_det):
    det, _ = linen_det
    x = jnp.asarray(X_TEST[:5])
    key = jax.random.PRNGKey(7)
    noise = vj.core.vae.row_normal_noise(key, jnp.arange(5), 10, 2)
    mean, logvar = jax.jit(det.model.encode)(det.params, x)

    @jax.jit
    def energy_of_sample(eps_l):  # written out by hand: sample, decode, features, mixture
        z_lat = mean + jnp.exp(0.5 * logvar) * eps_l
        z, _, _ = det.model.mixture_input(det.params, x, z_lat)
        return vj.energy(z, det.gmm_params, det.eps)

    energies = [energy_of_sample(noise[l]) for l in range(10)]
    np.testing.assert_allclose(det.score(X_TEST[:5], key=key), np.mean(energies, axis=0), rtol=1e-5, atol=1e-5)


def test_infer_threshold_and_predict_match_alibi_format(linen_det):
    det, _ = linen_det
    thr = det.infer_threshold(X_TRAIN, threshold_perc=95)
    scores = det.score(X_TRAIN)
    assert thr == pytest.approx(np.percentile(scores, 95))
    out = det.predict(X_TEST)
    assert set(out) == {"meta", "data"}
    assert out["meta"] == {"name": "OutlierVAEGMM", "detector_type": "outlier", "data_type": "tabular",
                           "online": False, "version": vj.__version__}
    data = out["data"]
    assert set(data) == {"instance_score", "feature_score", "is_outlier"}
    assert data["instance_score"].dtype == np.float32 and data["instance_score"].shape == (len(X_TEST),)
    assert data["feature_score"] is None
    np.testing.assert_array_equal(data["is_outlier"], (data["instance_score"] > thr).astype(int))
    assert out["data"]["is_outlier"][Y_TEST == 1].mean() > 0.8
    assert det.predict(X_TEST, return_instance_score=False)["data"]["instance_score"] is None


def test_mixture_is_fitted_on_whole_training_set(linen_det):
    det, _ = linen_det
    # fit() used the on-device program (scans over chunks); here the host-streamed path
    refit = vj.detectors.fit_mixture(det.model, det.params, X_TRAIN, det._key(2), chunk_size=256)
    for a, b in zip(det.gmm_params, refit):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and the device path with a chunk that leaves a ragged, padded last chunk
    assert len(X_TRAIN) % 104 != 0
    on_device = vj.detectors.fit_mixture(det.model, det.params, jnp.asarray(X_TRAIN), det._key(2), chunk_size=104)
    for a, b in zip(on_device, refit):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert abs(float(det.gmm_params.phi.sum()) - 1) < 1e-5


def test_dropout_is_off_when_scoring(nnx_det):
    np.testing.assert_array_equal(nnx_det.score(X_TEST[:50]), nnx_det.score(X_TEST[:50]))
    x = jnp.asarray(X_TEST[:8])
    z = jnp.ones((8, 4))
    a = nnx_det.model.gmm_net.apply(nnx_det.params["gmm"], z, False, None)
    b = nnx_det.model.gmm_net.apply(nnx_det.params["gmm"], z, True, jax.random.PRNGKey(0))
    assert not np.allclose(a, b)  # dropout is really there in training
    del x


@pytest.mark.parametrize(
    "cov_elbo, features", [(dict(cov_diag=None), "dagmm"), (dict(cov_full=None), "alibi")]
)
def test_cov_diag_cov_full_and_alibi_features_train(cov_elbo, features):
    # alibi-detect 0.13 raises on the first step for cov_diag / cov_full; here they work.
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, seed=1, hidden=(8, 4), recon_features=features)
    x = X_TRAIN[:256] + 2.0  # alibi's features divide by min(norms) - 1: keep norms > 1
    history = det.fit(x, cov_elbo=cov_elbo, epochs=2, batch_size=128, verbose=False)
    assert np.all(np.isfinite(history["recon"]))
    assert det.recon_cov.kind == next(iter(cov_elbo))
    assert np.all(np.isfinite(det.score(X_TEST[:20] + 2.0)))


def test_non_finite_loss_raises_naming_epoch_and_term_and_keeps_good_params():
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, seed=2, hidden=(8, 4), recon_features="dagmm", **PAPER_SCORING)
    # an absurd learning rate on huge inputs overflows within the first steps
    with pytest.raises(vj.NonFiniteLossError, match=r"epoch 1 at step \d+: term '(recon|energy|cov_diag|kl|total|gradient)'"):
        det.fit(X_TRAIN[:256] * 1e18, epochs=3, batch_size=128, verbose=False, optimizer=optax.sgd(1e30))
    assert det.epochs_done == 0
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(det.params))


def test_pure_functions_compose_with_jit_vmap_grad(linen_det):
    det, _ = linen_det
    model, params = det.model, det.params
    x = jnp.asarray(X_TEST[:16])

    @jax.jit
    def per_row_energy(params, x, noise):
        return model.energies(params, det.gmm_params, x, noise)

    noise = jax.random.normal(jax.random.PRNGKey(0), (10, 16, 2))
    e = per_row_energy(params, x, noise)
    # vmap over rows equals the batched call
    e_rows = jax.jit(jax.vmap(lambda xi, ni: model.energies(params, det.gmm_params, xi[None], ni[:, None])[0], in_axes=(0, 1)))(x, noise)
    np.testing.assert_allclose(e, e_rows, rtol=1e-4, atol=1e-4)
    g = jax.jit(jax.grad(lambda x: per_row_energy(params, x, noise).sum()))(x)  # input saliency
    assert g.shape == x.shape and np.all(np.isfinite(np.asarray(g)))


def test_initialisation_compile_options_give_bit_identical_parameters():
    """fit compiles initialisation with lighter LLVM optimisation (a run-once program): the
    parameters must be exactly those of a default compile, or results would depend on it."""
    import optax

    from vaegmm_jax.engine import training

    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(8, 4), seed=5, recon_features="dagmm", **PAPER_SCORING)
    det.build_model(X_TRAIN[:8])
    model, opt = det.model, optax.adam(1e-3)

    def init_state(key, x):
        return training.init_train_state(model.init(key, x), opt)

    args = (det._key(0), jnp.asarray(X_TRAIN[:64]))
    light = jax.jit(init_state, compiler_options=xla_options(INIT_COMPILER_OPTIONS))(*args)
    # XLA's default level (3), named: the test session's XLA_FLAGS lower the default (conftest)
    default = jax.jit(init_state, compiler_options={"xla_backend_optimization_level": 3})(*args)
    for a, b in zip(jax.tree.leaves(light), jax.tree.leaves(default)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
