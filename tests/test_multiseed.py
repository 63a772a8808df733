"""Multi-seed training (vaegmm_jax.evaluation.multiseed, a layer over the ensemble engine): seed i of one
vmapped program == a single detector with seed=i."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vaegmm_jax import OutlierAEGMM, OutlierVAEGMM

from vaegmm_jax.engine import training
from vaegmm_jax.engine.members import split_devices
from vaegmm_jax.evaluation.multiseed import fit_many, score_many
from vaegmm_jax.detectors.presets import PAPER_SCORING

ROOT = Path(__file__).resolve().parents[1]

SEEDS = (3, 7)


def _data(n=200, n_test=40, f=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, f))
    x = np.tanh(rng.uniform(-1, 1, (n + n_test, 2)) @ a) + 0.05 * rng.normal(size=(n + n_test, f))
    return x[:n].astype(np.float32), x[n:].astype(np.float32)


def _vaegmm(seed):
    # dropout in the estimation net and a sampled latent: both draw from the step keys
    return OutlierVAEGMM(seed=seed, n_gmm=2, latent_dim=2, hidden=(8, 4), gmm_hidden=6, gmm_dropout=0.5, samples=3,
                         **PAPER_SCORING)


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
    make = lambda s: OutlierAEGMM(seed=s, n_gmm=2, hidden=(8, 4), gmm_hidden=6, **PAPER_SCORING)  # noqa: E731
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

    def fake_epoch(state, x, key, active):
        w = state.params["w"]
        bad = w + 1.0 > limit
        # as make_train_epoch's epochs: a member that is not active applies no step
        new = training.TrainState({"w": jnp.where(active, w + 1.0, w)}, state.opt_state, state.step + active)
        return new, training.EpochResult(
            terms=jnp.stack([w]), first_bad_step=jnp.where(bad, 0, -1).astype(jnp.int32), bad_terms=jnp.zeros(1)
        )

    runner = jax.jit(training.make_epoch_runner(fake_epoch, n_members=2, member_data=False, n_terms=1,
                                                epochs_per_call=4))
    state = training.TrainState({"w": jnp.array([0.0, 10.0])}, jnp.zeros(2), jnp.zeros(2, jnp.int32))
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    state, alive, failed, report = runner(
        state, jnp.ones(2, bool), jnp.full(2, -1, jnp.int32), jnp.zeros((3, 1)), keys, np.int32(0), np.int32(4)
    )
    terms = report.terms
    np.testing.assert_array_equal(np.asarray(report.first_bad_step), [-1, 0])
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
    with pytest.raises(ValueError, match="scaler=None"):  # one scaling per seed's own rows is not supported
        fit_many(lambda s: OutlierVAEGMM(seed=s), np.stack([X, X]), SEEDS, per_seed_data=True, epochs=1)
    with pytest.raises(ValueError, match="leading member axis"):
        fit_many(_vaegmm, np.stack([X, X, X]), SEEDS, per_seed_data=True, epochs=1)


def test_seed_groups_equal_vmapped_seeds():
    """lax.map over groups of seeds (conv nets on a CPU) computes what the vmapped program does,
    in groups of one and of two (3 seeds: a remainder group too); one reference for both."""
    X, X_test = _data()
    seeds = (3, 7, 11)
    fit_args = dict(epochs=2, batch_size=64, w_recon=1.0, cov_elbo=dict(sim=0.5), optimizer=optax.adam(1e-3))
    ref = fit_many(_vaegmm, X, seeds, **fit_args)
    ref_scores = score_many(ref, X_test)
    for seed_batch_size in (1, 2):
        grouped = fit_many(_vaegmm, X, seeds, seed_batch_size=seed_batch_size, **fit_args)
        assert grouped.seed_batch_size == seed_batch_size
        for a, b in zip(_leaves(ref.params), _leaves(grouped.params)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        for a, b in zip(_leaves(ref.extra), _leaves(grouped.extra)):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(score_many(grouped, X_test), ref_scores, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="seed_batch_size"):
        fit_many(_vaegmm, X, seeds, seed_batch_size=0, **fit_args)


def test_seed_split_over_devices():
    """Each device gets ceil(S / D) seeds, on the fewest devices that allows; padding only fills the last."""
    assert split_devices(4, 4) == (4, 0)
    assert split_devices(3, 4) == (3, 0)  # 3 devices, one seed each
    assert split_devices(5, 4) == (3, 1)  # 2 seeds per device on 3 devices, one padding seed
    assert split_devices(7, 4) == (4, 1)
    assert split_devices(10, 8) == (5, 0)
    assert split_devices(6, 1) == (1, 0)
    for s in range(1, 40):
        for d in range(1, 10):
            used, pad = split_devices(s, d)
            per_device = -(-s // d)
            assert used <= d and (s + pad) == used * per_device and pad < per_device


# Fits and scores in a fresh process with 4 fake CPU devices; the 1-device references run
# there too (devices=[first]). Every program multiseed jits is recorded with the abstract
# arguments of its calls, so its compiled HLO can be checked for collectives afterwards
# (lowering again with the same arguments hits the in-memory compilation cache).
_SHARDED_SEEDS = """
import re, jax, numpy as np, optax
import tests.conftest  # noqa: F401  (the suite's persistent compilation cache)
import vaegmm_jax.detectors.fit_driver as engine
import vaegmm_jax.detectors.score_driver as scoring
from vaegmm_jax import OutlierAEGMM
from vaegmm_jax.evaluation.multiseed import fit_many, score_many
from vaegmm_jax.detectors.presets import PAPER_SCORING

devs = jax.devices()
assert len(devs) == 4, devs

calls = []

class RecordingJax:
    def __getattr__(self, name):
        return getattr(jax, name)

    def jit(self, fun, **kwargs):
        jitted = jax.jit(fun, **kwargs)

        def call(*args):
            spec = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding if a.committed else None) \\
                if isinstance(a, jax.Array) else a
            calls.append((jitted, jax.tree.map(spec, args)))  # before the call: arguments may be donated
            return jitted(*args)

        call.lower, call.eval_shape = jitted.lower, jitted.eval_shape
        return call

engine.jax = scoring.jax = RecordingJax()  # records the engine's training and scoring programs

def data(seed, n=64, f=5):
    r = np.random.default_rng(seed)
    a = r.normal(size=(2, f))
    return (np.tanh(r.uniform(-1, 1, (n, 2)) @ a) + 0.05 * r.normal(size=(n, f))).astype(np.float32)

def close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)

# gmm_dropout draws from the train keys: a wrong key split over devices would show
make = lambda s: OutlierAEGMM(seed=s, n_gmm=2, hidden=(4,), gmm_hidden=4, gmm_dropout=0.5,  # noqa: E731
                              **PAPER_SCORING)
args = dict(epochs=2, epochs_per_call=1, batch_size=32, optimizer=optax.adam(1e-3))
seeds = (3, 7, 11, 19, 23)
X, XT = data(0), data(1, n=24)

# shared data, 4 members on 4 devices: one member per device, the data replicated. The
# reference: a template detector whose devices attribute (one device) is the default
template = make(0)
template.devices = devs[:1]
ref = fit_many(template, X, seeds[:4], **args)
assert ref.devices == (devs[0],)
ref_s = score_many(ref, XT)
four = fit_many(make, X, seeds[:4], **args)
assert four.devices == tuple(devs)
four_s = score_many(four, XT)
close(four.params, ref.params)
close(four.extra, ref.extra, 1e-4)
np.testing.assert_allclose(four.history["total"], ref.history["total"], rtol=1e-5)
# energies (log densities through a covariance inverse) amplify the last-bit differences of
# batched matmuls of another batch size (1 member per device vs 4): 1e-4, as for single detectors
np.testing.assert_allclose(four_s, ref_s, rtol=1e-4, atol=1e-4)
# scored with the rows split over 2 devices, and as an ordinary detector
np.testing.assert_allclose(score_many(four, XT, devices=devs[:2]), ref_s, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(four.detector(2).score(XT), ref_s[2], rtol=1e-4, atol=1e-4)

# per-member data, 5 members on 4 devices: 2 members per device on 3 devices, one padding member
Xs = np.stack([data(10 + i) for i in range(5)])
XTs = np.stack([data(20 + i, n=24) for i in range(5)])
ref5 = fit_many(make, Xs, seeds, per_seed_data=True, devices=devs[:1], **args)
five = fit_many(make, Xs, seeds, per_seed_data=True, **args)
close(five.params, ref5.params)
close(five.extra, ref5.extra, 1e-4)
np.testing.assert_allclose(five.history["total"], ref5.history["total"], rtol=1e-5)
assert five.ok.all() and five.failed_epoch.shape == (5,)
five_s = score_many(five, XTs, per_seed_data=True)
assert five_s.shape == (5, 24)
np.testing.assert_allclose(five_s, score_many(ref5, XTs, per_seed_data=True), rtol=1e-4, atol=1e-4)

# member groups run one after the other on one device: refused when the members are split over 4
try:
    fit_many(make, X, seeds[:4], seed_batch_size=1, **args)
except ValueError as e:
    assert "member_group_size" in str(e) and "4 devices" in str(e), e
else:
    raise AssertionError("member groups on 4 devices did not raise")

# the training programs were partitioned by members (4 and 3 partitions), with no communication
parts = set()
for jitted, call_args in calls:
    text = jitted.lower(*call_args).compile().as_text()
    found = {int(n) for n in re.findall(r"num_partitions=(\\d+)", text)}
    parts.update(found)
    if found:
        assert not re.search(r"all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter", text), text[:300]
assert {3, 4} <= parts, parts
"""


@pytest.mark.slow  # ~75 s of compilation on 2 cores (CI budget); run with --runslow
def test_seeds_sharded_over_4_devices_equal_one_device():
    """The engine splits the members over 4 (fake CPU) devices; member i equals member i on one device."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = textwrap.dedent(_SHARDED_SEEDS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
