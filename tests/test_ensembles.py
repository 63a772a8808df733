"""Ensembles (n_members=M): one engine, member i == a single detector with member i's seed."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vaegmm_jax as vj
from vaegmm_jax.engine.config import EPOCH_COMPILER_OPTIONS, INIT_COMPILER_OPTIONS, RUN_ONCE_COMPILER_OPTIONS, xla_options
from vaegmm_jax.io import model_card
from vaegmm_jax.engine import members, training
from vaegmm_jax.core import vae as vae_lib
from vaegmm_jax.detectors.fit_driver import NonFiniteLossError
from vaegmm_jax.engine.config import FitOptions
from vaegmm_jax.engine.mixture import mixture_chunk, mixture_from_device_array
from vaegmm_jax.models.gmm_autoencoder import LOSS_TERMS, LossWeights, gmm_autoencoder_loss, squared_error_sum
from vaegmm_jax.detectors.presets import PAPER_SCORING


def _data(n=160, n_test=40, f=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, f))
    x = np.tanh(rng.uniform(-1, 1, (n + n_test, 2)) @ a) + 0.05 * rng.normal(size=(n + n_test, f))
    x = x * np.array([1.0, 10.0, 100.0, 1.0, 0.1])[:f]  # columns of very different scales: the scaler is on
    x_test = x[n:].copy()
    x_test[:5] += 3 * x.std(0)  # a few clear outliers
    return x[:n].astype(np.float32), x_test.astype(np.float32)


X, X_TEST = _data()
FIT = dict(epochs=2, batch_size=32, verbose=False)
SMALL = {
    vj.OutlierVAEGMM: dict(hidden=(8, 4), gmm_hidden=6, samples=3),
    vj.OutlierAEGMM: dict(hidden=(8, 4), gmm_hidden=6),
    vj.OutlierVAE: dict(hidden=(8, 4), samples=3),
}


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


@pytest.fixture(scope="module", params=[vj.OutlierVAEGMM, vj.OutlierAEGMM, vj.OutlierVAE], ids=lambda c: c.__name__)
def fitted(request):
    cls = request.param
    ens = cls(seed=5, n_members=3, **SMALL[cls])
    ens.fit(X, **FIT)
    return cls, ens


def test_member_i_equals_single_fit_with_its_seed(fitted):
    cls, ens = fitted
    assert ens.member_seeds == (5, 6, 7) and ens.n_members == 3
    member_scores = ens.score_members(X_TEST)
    assert member_scores.shape == (3, len(X_TEST)) and member_scores.dtype == np.float32
    for i, seed in enumerate(ens.member_seeds):
        single = cls(seed=seed, **SMALL[cls])
        history = single.fit(X, **FIT)
        member = ens.member(i)
        assert member.n_members == 1 and member.seed == seed
        for a, b in zip(_leaves(single.params), _leaves(member.params), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        for term, values in history.items():
            np.testing.assert_allclose(member.history[term], values, rtol=1e-5)
        expected = single.score(X_TEST)
        np.testing.assert_allclose(member_scores[i], expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(member.score(X_TEST), expected, rtol=1e-4, atol=1e-4)


def test_ensemble_score_is_the_mean_of_standardised_member_scores(fitted):
    _, ens = fitted
    cal = ens.member_calibration
    assert cal["center"].shape == (3,) and (cal["scale"] > 0).all()
    # the calibration is each member's median and IQR on the (training) rows
    train_scores = ens.score_members(X)
    np.testing.assert_allclose(cal["center"], np.median(train_scores, axis=1), rtol=1e-4, atol=1e-4)
    q75, q25 = np.percentile(train_scores, [75, 25], axis=1)
    np.testing.assert_allclose(cal["scale"], q75 - q25, rtol=1e-3, atol=1e-4)
    expected = np.mean((ens.score_members(X_TEST) - cal["center"][:, None]) / cal["scale"][:, None], axis=0)
    scores = ens.score(X_TEST)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    # chunking does not change the ensemble's scores
    np.testing.assert_allclose(ens.score(X_TEST, batch_size=7), scores, rtol=1e-5, atol=1e-5)
    # the planted outliers rank on top
    assert set(np.argsort(-scores)[:5]) == set(range(5))


def test_ensemble_predict_threshold_and_card(fitted, tmp_path):
    _, ens = fitted
    thr = ens.infer_threshold(X, threshold_perc=90)
    pred = ens.predict(X_TEST)
    assert pred["data"]["is_outlier"][:5].all()
    np.testing.assert_array_equal(pred["data"]["is_outlier"], (ens.score(X_TEST) > thr).astype(int))
    card = model_card.build_model_card(ens)
    assert card["detector"]["ensemble"]["n_members"] == 3
    assert card["detector"]["ensemble"]["member_seeds"] == [5, 6, 7]
    json.dumps(card)


def test_ensemble_saves_and_loads_bit_identically(fitted, tmp_path):
    cls, ens = fitted
    path = tmp_path / "ens"
    vj.save_detector(ens, path)
    loaded = vj.load_detector(path)
    assert type(loaded) is cls and loaded.n_members == 3 and loaded.member_seeds == (5, 6, 7)
    np.testing.assert_array_equal(loaded.score(X_TEST), ens.score(X_TEST))
    np.testing.assert_array_equal(loaded.score_members(X_TEST), ens.score_members(X_TEST))
    for a, b in zip(_leaves(ens.params), _leaves(loaded.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.member(1).score(X_TEST), ens.member(1).score(X_TEST))
    assert loaded.member_history == ens.member_history and loaded.member(2).history == ens.member(2).history
    np.testing.assert_array_equal(loaded.member_failed_epoch, ens.member_failed_epoch)


def test_one_member_is_the_plain_single_model_bit_for_bit():
    """M = 1 runs the single model's own programs: rebuilt here from the public pure functions
    (init, epoch, mixture, energy) it equals the detector bit for bit."""
    seed, batch = 11, 32
    opt = optax.adam(1e-3)
    det = vj.OutlierAEGMM(seed=seed, n_members=1, **SMALL[vj.OutlierAEGMM], **PAPER_SCORING)
    det.fit(X, optimizer=opt, epochs=2, batch_size=batch, verbose=False)
    model = det.model
    weights = LossWeights(w_recon=1.0, w_energy=0.1, w_cov_diag=0.005, beta=0.0)

    def loss(params, x, w, key):
        return gmm_autoencoder_loss(model, weights, squared_error_sum, params, x, w, key)

    init = jax.jit(lambda k, x: training.init_train_state(model.init(k, x), opt),
                   compiler_options=xla_options(INIT_COMPILER_OPTIONS))
    state = init(members.stream_key(seed, 0), jnp.asarray(X[:batch]))
    epoch = jax.jit(training.make_train_epoch(loss, opt, LOSS_TERMS, batch), donate_argnums=0,
                    compiler_options=xla_options(EPOCH_COMPILER_OPTIONS))
    x = jnp.asarray(X)
    for e in range(2):
        state, _ = epoch(state, x, training.epoch_key(members.stream_key(seed, 1), e))
    for a, b in zip(_leaves(state.params), _leaves(det.params), strict=True):
        np.testing.assert_array_equal(a, b)
    chunk = mixture_chunk(len(X), 65536, None)
    gmm, ok = jax.jit(lambda p, x, k: mixture_from_device_array(model, p, x, k, chunk),
                      compiler_options=xla_options(RUN_ONCE_COMPILER_OPTIONS))(state.params, x, members.stream_key(seed, 2))
    assert bool(ok)
    for a, b in zip(_leaves(gmm), _leaves(det.gmm_params), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = jnp.arange(len(X_TEST), dtype=jnp.int32)
    noise = vae_lib.row_normal_noise(members.stream_key(seed, 3), rows, 1, model.latent_dim)
    energies = jax.jit(lambda p, g, x, n: model.energies(p, g, x, n, "xla"))(state.params, gmm, X_TEST, noise)
    np.testing.assert_allclose(det.score(X_TEST), np.asarray(energies), rtol=1e-6, atol=1e-6)
    assert det.config_dict() == vj.OutlierAEGMM(seed=seed, **SMALL[vj.OutlierAEGMM], **PAPER_SCORING).config_dict() | {
        "data_type": "tabular"}


def test_non_finite_member_is_named():
    """One training set per member: member 1's rows overflow the loss; the error names it."""
    bad = X[:, :3].copy()
    bad[::2] *= 1e30
    data = np.stack([X[:, :3], bad, X[:, :3]])
    ens = vj.OutlierAEGMM(seed=[4, 8, 9], scaler=None, **SMALL[vj.OutlierAEGMM])
    with pytest.raises(NonFiniteLossError, match=r"member 1 \(seed 8\)"):
        ens.fit(data, options=FitOptions(member_data=True), **FIT)
    # recorded instead: the other members train on
    ens = vj.OutlierAEGMM(seed=[4, 8, 9], scaler=None, **SMALL[vj.OutlierAEGMM])
    ens.fit(data, options=FitOptions(member_data=True, on_nonfinite="record"), **FIT)
    assert ens.member_failed_epoch.tolist()[0] == -1 and ens.member_failed_epoch[1] == 0
    assert ens.member_failed_epoch[2] == -1


def test_member_arguments_are_checked():
    with pytest.raises(ValueError, match="n_members"):
        vj.OutlierVAEGMM(n_members=0)
    with pytest.raises(ValueError, match="n_members=2 but 3 seeds"):
        vj.OutlierVAEGMM(seed=[1, 2, 3], n_members=2)
    with pytest.raises(ValueError, match="on_nonfinite"):
        FitOptions(on_nonfinite="ignore")
    ens = vj.OutlierAEGMM(n_members=2, **SMALL[vj.OutlierAEGMM])
    with pytest.raises(vj.NotFittedError):
        ens.member(0)
    ens.fit(X, **FIT)
    with pytest.raises(IndexError, match="member 2"):
        ens.member(2)


def test_old_single_checkpoint_config_has_no_member_fields():
    """A one-member detector writes the checkpoint a single detector always wrote (no member
    fields), and a checkpoint without them loads as one member."""
    det = vj.OutlierAEGMM(seed=3, **SMALL[vj.OutlierAEGMM])
    config = det.config_dict()
    assert "n_members" not in config and "member_seeds" not in config
    again = vj.OutlierAEGMM.from_config(config)
    assert again.n_members == 1 and again.seed == 3
