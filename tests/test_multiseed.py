"""Multi-seed training (vaegmm_jax.multiseed): seed i of one vmapped program == a single detector with seed=i."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaegmm_jax import OutlierAEGMM, OutlierVAEGMM, training
from vaegmm_jax.multiseed import _make_train_runner, fit_many, score_many

SEEDS = (3, 7)


def _data(n=200, n_test=40, f=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, f))
    x = np.tanh(rng.uniform(-1, 1, (n + n_test, 2)) @ a) + 0.05 * rng.normal(size=(n + n_test, f))
    return x[:n].astype(np.float32), x[n:].astype(np.float32)


def _vaegmm(seed):
    # dropout in the estimation net and a sampled latent: both draw from the step keys
    return OutlierVAEGMM(seed=seed, n_gmm=2, latent_dim=2, hidden=(8, 4), gmm_hidden=6, gmm_dropout=0.5, samples=3)


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_vmapped_seeds_equal_single_runs():
    X, X_test = _data()
    fit_args = dict(epochs=3, batch_size=64, w_recon=1.0, cov_elbo=dict(sim=0.5))
    # epochs_per_call=2: two calls, the second with one epoch skipped (same program)
    fit = fit_many(_vaegmm, X, SEEDS, epochs_per_call=2, optimizer=optax.adam(1e-3), **fit_args)
    assert fit.train_calls == 2 and fit.epochs == 3
    assert fit.ok.all() and (fit.failed_epoch == -1).all()
    assert fit.history["total"].shape == (2, 3) and np.isfinite(fit.history["total"]).all()
    scores = score_many(fit, X_test)
    assert scores.shape == (2, len(X_test)) and scores.dtype == np.float32

    for i, seed in enumerate(SEEDS):
        det = _vaegmm(seed)
        hist = det.fit(X, verbose=False, optimizer=optax.adam(1e-3), **fit_args)
        for a, b in zip(_leaves(det.params), _leaves(jax.tree.map(lambda v: v[i], fit.params))):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        for a, b in zip(_leaves(det.gmm_params), _leaves(jax.tree.map(lambda v: v[i], fit.extra))):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fit.history["total"][i], hist["total"], rtol=1e-5)
        np.testing.assert_allclose(scores[i], det.score(X_test), rtol=1e-4, atol=1e-4)
        # the unstacked seed is an ordinary fitted detector
        single = fit.detector(i)
        assert single.seed == seed and single.epochs_done == 3
        np.testing.assert_allclose(single.score(X_test), scores[i], rtol=1e-4, atol=1e-4)


def test_per_seed_data_untrained():
    """epochs=0 (random-init baseline) with one training set per seed == each seed alone on its own set."""
    X0, X_test = _data(seed=1)
    X1, _ = _data(seed=2)
    make = lambda s: OutlierAEGMM(seed=s, n_gmm=2, hidden=(8, 4), gmm_hidden=6)  # noqa: E731
    per = fit_many(make, np.stack([X0, X1]), SEEDS, per_seed_data=True, epochs=0, batch_size=64)
    assert per.train_calls == 0 and per.history["total"].shape == (2, 0)
    tests = np.stack([X_test, X_test[::-1]])
    s_per = score_many(per, tests, per_seed_data=True)
    for i, (x, seed) in enumerate(zip((X0, X1), SEEDS)):
        alone = fit_many(make, x, [seed], epochs=0, batch_size=64)
        np.testing.assert_allclose(np.asarray(per.extra.cov[i]), np.asarray(alone.extra.cov[0]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(s_per[i], score_many(alone, tests[i])[0], rtol=1e-5, atol=1e-5)


def test_failed_seed_stops_and_is_reported():
    """A seed whose epoch reports a non-finite step keeps that epoch's state, then stops."""
    limit = 12.0

    def fake_epoch(state, x, key):
        w = state.params["w"]
        bad = w + 1.0 > limit
        new = training.TrainState({"w": w + 1.0}, state.opt_state, state.step + 1)
        return new, training.EpochResult(
            terms=jnp.stack([w]), first_bad_step=jnp.where(bad, 0, -1).astype(jnp.int32), bad_terms=jnp.zeros(1)
        )

    runner = _make_train_runner(fake_epoch, per_seed=False, n_terms=1, epochs_per_call=4)
    state = training.TrainState({"w": jnp.array([0.0, 10.0])}, jnp.zeros(2), jnp.zeros(2, jnp.int32))
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    state, alive, failed, terms = runner(
        state, jnp.ones(2, bool), jnp.full(2, -1, jnp.int32), jnp.zeros((3, 1)), keys, np.int32(0), np.int32(4)
    )
    # seed 1: w 10 -> 11 -> 12 (epochs 0, 1), epoch 2 reports a bad step (12 + 1 > 12): its state
    # (w = 13) is kept, as a single detector keeps the good steps of its failing epoch, then frozen
    np.testing.assert_array_equal(np.asarray(failed), [-1, 2])
    np.testing.assert_array_equal(np.asarray(alive), [True, False])
    np.testing.assert_allclose(np.asarray(state.params["w"]), [4.0, 13.0])
    t = np.asarray(terms)[:, :, 0]
    np.testing.assert_allclose(t[:, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(t[:2, 1], [10, 11])
    assert np.isnan(t[2:, 1]).all()  # the failing epoch and later ones are not recorded


def test_fit_many_argument_errors():
    X, _ = _data(n=40)
    with pytest.raises(TypeError, match="epochs"):
        fit_many(_vaegmm, X, SEEDS, batch_size=8)
    with pytest.raises(ValueError, match="seeds"):
        fit_many(_vaegmm, X, [], epochs=1)
    with pytest.raises(ValueError, match="cov_elbo"):
        fit_many(_vaegmm, np.stack([X, X]), SEEDS, per_seed_data=True, epochs=1, cov_elbo=dict(cov_diag=None))
    with pytest.raises(ValueError, match="leading axis"):
        fit_many(_vaegmm, np.stack([X, X, X]), SEEDS, per_seed_data=True, epochs=1)
