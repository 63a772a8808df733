"""Presets: the DAGMM paper's and alibi-detect's KDD settings, and the detectors they build."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import roc_auc_score

import vaegmm_jax as vj
from vaegmm_jax.detectors import presets

# (preset, encoder widths F->..., latent, K, estimation input D, epochs, batch) from the paper's
# section 4.2 (REFERENCE section 2, "Paper settings").
PAPER = [
    (presets.KDDCUP, [120, 60, 30, 10], 1, 4, 3, 200, 1024),
    (presets.THYROID, [6, 12, 4], 1, 2, 3, 20_000, 1024),
    (presets.ARRHYTHMIA, [274, 10], 2, 2, 4, 10_000, 128),
    (presets.KDDCUP_REV, [120, 60, 30, 10], 1, 2, 3, 400, 1024),
]


@pytest.mark.parametrize("preset, widths, latent, k, d, epochs, batch", PAPER, ids=[row[0].name for row in PAPER])
def test_dagmm_presets_match_the_paper(preset, widths, latent, k, d, epochs, batch):
    assert (preset.n_features, list(preset.hidden)) == (widths[0], widths[1:])
    assert (preset.latent_dim, preset.n_gmm, preset.epochs, preset.batch_size) == (latent, k, epochs, batch)
    assert (preset.activation, preset.gmm_hidden, preset.gmm_dropout) == ("tanh", 10, 0.5)
    assert (preset.learning_rate, preset.w_energy, preset.w_cov_diag) == (1e-4, 0.1, 0.005)
    assert preset.recon_features == "dagmm" and preset.detector == "OutlierAEGMM"
    assert preset.latent_dim + 2 == d  # z = [latent, relative Euclidean distance, cosine]


def test_paper_ratios_and_f1():
    assert presets.KDDCUP.anomaly_ratio == 0.2 and presets.KDDCUP.threshold_perc == pytest.approx(80.0)
    assert presets.THYROID.anomaly_ratio == 0.025 and presets.ARRHYTHMIA.anomaly_ratio == 0.15
    assert [p.paper_f1 for p in (presets.KDDCUP, presets.THYROID, presets.ARRHYTHMIA, presets.KDDCUP_REV)] == [
        0.9369, 0.4782, 0.4983, 0.9380]


def test_alibi_kdd_preset():
    p = presets.ALIBI_KDD_VAEGMM
    assert (p.n_features, p.hidden, p.latent_dim, p.n_gmm, p.activation) == (18, (20, 15, 7), 2, 2, "relu")
    assert (p.epochs, p.batch_size, p.sim, p.learning_rate, p.threshold_perc) == (50, 1024, 0.0025, 1e-4, 95.0)
    assert (p.w_recon, p.w_energy, p.w_cov_diag, p.samples, p.gmm_dropout) == (1e-7, 0.1, 0.005, 10, 0.0)
    assert p.detector == "OutlierVAEGMM"
    # the example's own reconstruction features (the paper's fail on standardised data)
    assert p.recon_features == "alibi" and presets.make_detector(p).recon_features_name == "alibi"


def test_presets_are_frozen_and_replaceable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        presets.KDDCUP.n_gmm = 2
    p = dataclasses.replace(presets.THYROID, epochs=100, n_gmm=3)
    assert (p.epochs, p.n_gmm, presets.THYROID.epochs) == (100, 3, 20_000)
    assert presets.get_preset("thyroid") is presets.THYROID
    assert set(presets.PRESETS) == {"kddcup", "thyroid", "arrhythmia", "kddcup_rev", "alibi_kdd_vaegmm"}
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get_preset("mnist")
    with pytest.raises(TypeError):
        presets.make_detector(42)


def _param_shapes(det, n_features):
    x = jnp.zeros((2, n_features), jnp.float32)
    det.build_model(np.zeros((2, n_features), np.float32))
    params = jax.eval_shape(det.model.init, jax.random.PRNGKey(0), x)  # traced, not compiled
    return jax.tree.map(lambda a: a.shape, params)


def _dense_shapes(tree):
    names = sorted(tree, key=lambda n: int(n.split("_")[1]))
    return [tree[n]["kernel"] for n in names]


@pytest.mark.parametrize("preset, widths, latent, k, d, epochs, batch", PAPER, ids=[row[0].name for row in PAPER])
def test_make_detector_builds_the_paper_architecture(preset, widths, latent, k, d, epochs, batch):
    det = presets.make_detector(preset)
    assert isinstance(det, vj.OutlierAEGMM)
    shapes = _param_shapes(det, preset.n_features)
    enc = list(zip(widths[:-1], widths[1:]))
    assert _dense_shapes(shapes["encoder"]) == enc  # FC(120,60,tanh)-FC(60,30,tanh)-FC(30,10,tanh)
    assert shapes["head"]["latent"]["kernel"] == (widths[-1], latent)  # -FC(10,1)
    mirror = [(latent, widths[-1])] + [(b, a) for a, b in reversed(enc)]
    assert _dense_shapes(shapes["decoder"]) == mirror  # FC(1,10,tanh)-...-FC(60,120)
    assert _dense_shapes(shapes["gmm"]) == [(d, 10), (10, k)]  # FC(3,10,tanh)-Drop-FC(10,K,softmax)
    enc_mod, dec_mod, gmm_mod = (det.model.encoder.module, det.model.decoder.module, det.model.gmm_net.module)
    assert (enc_mod.activation, enc_mod.out_activation) == ("tanh", "tanh")
    assert (dec_mod.activation, dec_mod.out_activation) == ("tanh", "linear")
    assert (gmm_mod.activation, gmm_mod.dropout) == ("tanh", 0.5)


def test_make_detector_alibi_architecture():
    det = presets.make_detector("alibi_kdd_vaegmm")
    assert isinstance(det, vj.OutlierVAEGMM) and det.samples == 10
    shapes = _param_shapes(det, 18)
    assert _dense_shapes(shapes["encoder"]) == [(18, 20), (20, 15), (15, 7)]
    assert shapes["head"]["mean"]["kernel"] == shapes["head"]["logvar"]["kernel"] == (7, 2)
    assert _dense_shapes(shapes["decoder"]) == [(2, 7), (7, 15), (15, 20), (20, 18)]
    assert _dense_shapes(shapes["gmm"]) == [(4, 10), (10, 2)]
    assert det.model.encoder.module.activation == "relu" and det.model.gmm_net.module.dropout == 0.0
    # Keras' default draw, in every net and head, as in alibi's example
    assert det.arch["kernel_init"] == "glorot_uniform" == det.model.head_init
    assert {det.model.encoder.module.kernel_init, det.model.decoder.module.kernel_init,
            det.model.gmm_net.module.kernel_init} == {"glorot_uniform"}


def test_overrides_and_fit_kwargs():
    det = presets.make_detector(presets.KDDCUP, n_gmm=2, seed=3, eps=1e-5)
    assert (det.n_gmm, det.seed, det.eps, det.arch["hidden"]) == (2, 3, 1e-5, [60, 30, 10])
    kw = presets.fit_kwargs(presets.ARRHYTHMIA, epochs=5, verbose=False)
    assert {k: kw[k] for k in ("epochs", "batch_size", "w_energy", "w_cov_diag", "verbose")} == dict(
        epochs=5, batch_size=128, w_energy=0.1, w_cov_diag=0.005, verbose=False)
    assert "cov_elbo" not in kw and "w_recon" not in kw
    kw = presets.fit_kwargs("alibi_kdd_vaegmm")
    assert kw["cov_elbo"] == {"sim": 0.0025} and kw["w_recon"] == 1e-7 and kw["epochs"] == 50
    # the optimizer is Adam at the preset's learning rate: its first step is -lr * sign(g)
    opt = kw["optimizer"]
    assert isinstance(opt, optax.GradientTransformation)
    step = jax.jit(lambda g: opt.update(g, opt.init(g))[0])(jnp.array([2.0, -3.0]))
    np.testing.assert_allclose(np.asarray(step), [-1e-4, 1e-4], rtol=1e-4)


def test_alibi_preset_detector_separates_outliers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 20)) / np.sqrt(2)

    def inliers(n):
        return (np.tanh(rng.normal(size=(n, 2)) @ a) + 0.03 * rng.normal(size=(n, 20))).astype(np.float32)

    x_train = inliers(1000)
    x_test = np.concatenate([inliers(200), rng.uniform(-1, 1, size=(50, 20)).astype(np.float32)])
    y = np.r_[np.zeros(200), np.ones(50)]
    p = presets.ALIBI_KDD_VAEGMM
    det = presets.make_detector(p, samples=4)
    # alibi's w_recon=1e-7 needs its ~20k steps; 240 steps need a larger reconstruction weight
    det.fit(x_train, **presets.fit_kwargs(p, epochs=30, batch_size=128, learning_rate=3e-3, w_recon=1e-4,
                                          verbose=False))
    assert roc_auc_score(y, det.score(x_test)) > 0.9
