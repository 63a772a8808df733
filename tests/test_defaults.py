"""The library defaults: detectors given only the data, the in-detector scaler, compatibility presets."""

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import vaegmm_jax as vj
from vaegmm_jax.detectors import presets
from vaegmm_jax.core import scaling
from vaegmm_jax.engine import config as base
from vaegmm_jax.io.model_card import build_model_card


def three_clusters(seed=0, n_train=1500, n_test=300, n_out=60, dim=20):
    """Three Gaussian clusters (sd 0.5 around centres of sd 3); outliers uniform in [-8, 8]^dim.

    Columns are put on very different raw scales, as user data often are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(3, dim))

    def inliers(n):
        return centres[rng.integers(0, 3, n)] + rng.normal(0.0, 0.5, size=(n, dim))

    col_scale = 10.0 ** rng.uniform(-2, 3, size=dim)
    col_shift = rng.uniform(-100, 100, size=dim)
    x_train = inliers(n_train) * col_scale + col_shift
    x_test = np.concatenate([inliers(n_test), rng.uniform(-8, 8, size=(n_out, dim))]) * col_scale + col_shift
    y_test = np.r_[np.zeros(n_test), np.ones(n_out)]
    return x_train.astype(np.float32), x_test.astype(np.float32), y_test


@pytest.fixture(scope="module")
def clusters():
    return three_clusters()


@pytest.mark.parametrize("cls", [vj.OutlierVAEGMM, vj.OutlierAEGMM, vj.OutlierVAE])
def test_default_detector_separates_three_clusters(cls, clusters):
    x_train, x_test, y_test = clusters
    det = cls(seed=0)
    det.fit(x_train, verbose=False)  # the data and nothing else
    scores = det.score(x_test)
    assert np.isfinite(scores).all()
    assert roc_auc_score(y_test, scores) > 0.95
    # the defaults it used are recorded
    assert det.fit_config["scaler"] == "standard"
    assert det.fit_config["epochs"] == base.auto_epochs(len(x_train), base.DEFAULT_BATCH_SIZE)
    assert det.fit_config["batch_size"] == base.DEFAULT_BATCH_SIZE
    assert det.fit_config["optimizer"] == {"name": "adam", "learning_rate": base.DEFAULT_LEARNING_RATE}


def test_auto_epochs_adapts_to_the_number_of_rows():
    assert base.auto_epochs(64, 128) == base.DEFAULT_TRAIN_STEPS  # one step per epoch
    assert base.auto_epochs(1280, 128) == base.DEFAULT_TRAIN_STEPS // 10
    assert base.auto_epochs(10_000_000, 128) == 1  # never less than one full pass
    assert base.auto_epochs(10, 10, steps=10 ** 9) == base.MAX_AUTO_EPOCHS


@pytest.mark.parametrize("kind", ["standard", "minmax", "robust"])
def test_fit_scaler_kinds(kind):
    rng = np.random.default_rng(1)
    x = np.c_[rng.normal(5.0, 3.0, 400), rng.uniform(-2.0, 7.0, 400), np.full(400, 4.0)]
    s = scaling.fit_scaler(x, kind)
    out = scaling.apply_scaler_numpy(s, x.astype(np.float32))
    assert out.dtype == np.float32
    assert s.scale[2] == 1.0 and np.all(out[:, 2] == 0.0)  # a constant column is only centred
    if kind == "standard":
        np.testing.assert_allclose(out[:, :2].mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(out[:, :2].std(0), 1.0, rtol=1e-4)
    elif kind == "minmax":
        np.testing.assert_allclose(out[:, :2].min(0), 0.0, atol=1e-6)
        np.testing.assert_allclose(out[:, :2].max(0), 1.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(np.median(out[:, :2], 0), 0.0, atol=1e-5)
        q25, q75 = np.percentile(out[:, :2], [25, 75], axis=0)
        np.testing.assert_allclose(q75 - q25, 1.0, rtol=1e-4)
    # the device form equals the host form
    np.testing.assert_allclose(np.asarray(scaling.apply_scaler(s, x.astype(np.float32))), out, rtol=1e-6, atol=1e-6)


def test_scaler_is_applied_in_score_and_round_trips(tmp_path):
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(300, 5)) * [1e3, 1e-2, 1.0, 50.0, 7.0] + [1e4, 0.0, -3.0, 2.0, 1.0]).astype(np.float32)
    xt = x[:40] + np.float32(0.5) * np.asarray([1e3, 1e-2, 1.0, 50.0, 7.0], np.float32)
    fit = dict(epochs=3, batch_size=64, verbose=False)
    det = vj.OutlierAEGMM(seed=3, scaler="robust")
    det.fit(x, **fit)
    s = scaling.fit_scaler(x, "robust")
    np.testing.assert_array_equal(det.scaler.shift, s.shift)
    np.testing.assert_array_equal(det.scaler.scale, s.scale)
    # the same detector without a scaler, trained and scored on rows scaled by hand, gives the same scores
    plain = vj.OutlierAEGMM(seed=3, scaler=None)
    plain.fit(scaling.apply_scaler_numpy(s, x), **fit)
    np.testing.assert_allclose(det.score(xt), plain.score(scaling.apply_scaler_numpy(s, xt)), rtol=1e-5, atol=1e-5)
    assert plain.scaler is None and plain.fit_config["scaler"] is None
    # save/load: the scaler's arrays and the scores come back bit for bit
    vj.save_detector(det, tmp_path / "m")
    back = vj.load_detector(tmp_path / "m")
    assert back.scaler_kind == "robust" and back.score_type == det.score_type
    np.testing.assert_array_equal(back.scaler.shift, det.scaler.shift)
    np.testing.assert_array_equal(back.scaler.scale, det.scaler.scale)
    for k in ("center", "scale"):
        np.testing.assert_array_equal(back.score_calibration[k], det.score_calibration[k])
    np.testing.assert_array_equal(back.score(xt), det.score(xt))
    card = build_model_card(back)
    assert card["detector"]["config"]["scaler"] == "robust"
    np.testing.assert_allclose(card["detector"]["input_scaling"]["scale"], det.scaler.scale)


def test_images_are_not_scaled_by_default():
    rng = np.random.default_rng(4)
    det = vj.OutlierVAE(likelihood="bernoulli", latent_dim=2, seed=0)
    assert det.resolved_scaler_kind(rng.uniform(size=(4, 8, 8, 1))) is None
    assert det.resolved_scaler_kind(rng.uniform(size=(4, 8))) is None  # Bernoulli needs [0, 1]
    assert vj.OutlierVAEGMM().resolved_scaler_kind(np.zeros((4, 8, 8, 1))) is None
    assert vj.OutlierVAEGMM().resolved_scaler_kind(np.zeros((4, 8))) == "standard"


def test_energy_recon_score_is_the_sum_of_standardised_components(clusters):
    x_train, x_test, _ = clusters
    det = vj.OutlierAEGMM(seed=0)
    det.fit(x_train[:400], epochs=2, verbose=False)
    energy_only = vj.OutlierAEGMM(seed=0, score_type="energy")
    energy_only.fit(x_train[:400], epochs=2, verbose=False)
    e = energy_only.score(x_test)
    comps = np.asarray(det.model.energies_and_errors(
        det.params, det.gmm_params, scaling.apply_scaler(det.scaler, x_test),
        np.zeros((1, len(x_test), det.latent_dim), np.float32), "xla"))
    np.testing.assert_allclose(comps[:, 0], e, rtol=1e-5, atol=1e-4)
    cal = det.score_calibration
    expected = ((comps - cal["center"]) / cal["scale"]).sum(1)
    np.testing.assert_allclose(det.score(x_test), expected, rtol=1e-5, atol=1e-4)
    # the calibration is the training rows' median and interquartile range
    train_comps = np.asarray(det.model.energies_and_errors(
        det.params, det.gmm_params, scaling.apply_scaler(det.scaler, x_train[:400]),
        np.zeros((1, 400, det.latent_dim), np.float32), "xla"))
    np.testing.assert_allclose(cal["center"], np.median(train_comps, 0), rtol=1e-4, atol=1e-4)


def test_alibi_preset_reproduces_alibi_defaults():
    kw = presets.ALIBI.fit_kwargs(vj.OutlierVAEGMM)
    assert (kw["w_recon"], kw["w_energy"], kw["w_cov_diag"]) == (1e-7, 0.1, 0.005)
    assert kw["cov_elbo"] == {"sim": 0.05} and (kw["epochs"], kw["batch_size"]) == (20, 64)
    assert "optimizer" in kw and "learning_rate" not in kw
    det = presets.ALIBI.make_detector(vj.OutlierVAEGMM, n_gmm=2, latent_dim=2)
    assert det.scaler_kind is None and det.score_type == "energy"
    assert det.recon_features_name == "alibi" and det.arch["kernel_init"] == "glorot_uniform"
    assert presets.ALIBI.fit_kwargs(det, epochs=5)["epochs"] == 5  # overrides win
    aegmm = presets.ALIBI.make_detector(vj.OutlierAEGMM, n_gmm=2)
    assert aegmm.scaler_kind is None and presets.ALIBI.fit_kwargs(aegmm)["w_energy"] == 0.1
    vae = presets.ALIBI.make_detector(vj.OutlierVAE, latent_dim=2)
    assert vae.scaler_kind is None and vae.score_type == "mse"
    with pytest.raises(ValueError, match="not dict"):
        presets.ALIBI.fit_kwargs(dict)


def test_paper_presets_keep_the_paper_scoring():
    for name in presets.PRESETS:
        det = presets.make_detector(name, seed=0)
        assert det.scaler_kind is None and det.score_type == "energy"
        assert det.recon_features_name == presets.get_preset(name).recon_features
    thyroid = dataclasses.replace(presets.THYROID, n_gmm=3)
    assert presets.make_detector(thyroid, scaler="standard").scaler_kind == "standard"  # overridable


def test_checkpoints_from_before_the_scaler_load_as_unscaled_energy():
    det = vj.OutlierVAEGMM(seed=0)
    config = det.config_dict()
    del config["scaler"], config["score_type"]
    old = vj.OutlierVAEGMM.from_config(config)
    assert old.scaler_kind is None and old.score_type == "energy"


@pytest.mark.parametrize("make, match", [
    (lambda: vj.OutlierVAEGMM(scaler="zscore"), "scaler"),
    (lambda: vj.OutlierAEGMM(scaler=1), "scaler"),
    (lambda: vj.OutlierVAE(scaler="minmaxx"), "scaler"),
    (lambda: vj.OutlierVAEGMM(score_type="recon"), "score_type"),
    (lambda: vj.OutlierAEGMM(threshold=float("nan")), "threshold"),
    (lambda: scaling.fit_scaler(np.zeros((3, 2)), "quantile"), "scaler"),
])
def test_bad_new_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("fit_kw, match", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"), (dict(epochs=2.5), "epochs"),
])
def test_bad_training_length_is_refused(fit_kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        vj.OutlierAEGMM().fit(np.zeros((10, 3), np.float32), verbose=False, **fit_kw)
