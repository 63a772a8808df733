"""Shared test configuration.

The test suite (never the library) turns on JAX's persistent compilation cache:
XLA compilation dominates test time on a 2-core CPU.
"""

import os
from pathlib import Path

# XLA's backend (LLVM) optimisation off for the tests: compilation, not running, is most of a
# cold test run on a 2-core CPU (a multiseed test: 50 s -> 30 s), and the tests' programs are
# tiny. Read when JAX starts its backend, so it is set before any test touches a device.
# VAEGMM_TEST_XLA_OPT=default runs the suite at XLA's default level instead.
if os.environ.get("VAEGMM_TEST_XLA_OPT", "0") != "default" and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import numpy as np
import pytest

# VAEGMM_TEST_XLA_CACHE=<empty dir> measures a cold run.
_cache = os.environ.get("VAEGMM_TEST_XLA_CACHE") or str(Path.home() / ".cache" / "vaegmm_jax_tests_xla")
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: heavy check, run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
    if not any(d.platform == "gpu" for d in jax.devices()):
        skip_gpu = pytest.mark.skip(reason="needs a GPU; this machine has none")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


def manifold_split(n_train=1000, n_test=200, n_out=50, seed=0, n_features=20):
    """Inliers tanh(t @ A) + noise with a 2-D latent t in n_features dims; outliers uniform off the manifold."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, n_features)) / np.sqrt(2)

    def inliers(n):
        return (np.tanh(rng.normal(size=(n, 2)) @ a) + 0.03 * rng.normal(size=(n, n_features))).astype(np.float32)

    x_train = inliers(n_train)
    x_test = np.concatenate([inliers(n_test), rng.uniform(-1, 1, size=(n_out, n_features)).astype(np.float32)])
    return x_train, x_test, np.r_[np.zeros(n_test), np.ones(n_out)]


@pytest.fixture(scope="session")
def data_dir():
    """The shared real-data folder (VAEGMM_DATA), or a skip with the reason."""
    path = os.environ.get("VAEGMM_DATA")
    if not path or not Path(path).is_dir():
        pytest.skip("VAEGMM_DATA is not set to the data folder (.ci/run sets it to ../shared/data)")
    return Path(path)


def manifold_data(n_in: int = 1500, n_out: int = 75, n_features: int = 12, seed: int = 0):
    """Inliers on a 2-D curved manifold in n_features dims; outliers off it.

    Returns (X_train (n_in, F), X_test (n_in//2 + n_out, F), y_test) with y_test = 1 for outliers.
    """
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, n_features))

    def inliers(n):
        t = rng.uniform(-1, 1, size=(n, 2))
        return np.tanh(t @ a) + 0.02 * rng.normal(size=(n, n_features))

    x_train = inliers(n_in)
    x_test_in = inliers(n_in // 2)
    x_out = rng.uniform(-1, 1, size=(n_out, n_features))
    x_test = np.concatenate([x_test_in, x_out]).astype(np.float32)
    y_test = np.r_[np.zeros(len(x_test_in)), np.ones(n_out)]
    return x_train.astype(np.float32), x_test, y_test


class SaveCrash(BaseException):
    """Stands for a kill at one step of a save (BaseException: nothing on the way catches it)."""


def crash_save_at_step(monkeypatch, k: int) -> dict:
    """The next save raises :class:`SaveCrash` at its step ``k`` (0-based, as counted by
    ``checkpoint._step``), with its own clean-up disabled: what a kill there would leave.
    Returns {'n': steps passed}."""
    from vaegmm_jax.io import checkpoint

    calls = {"n": 0}

    def step(name):
        if calls["n"] == k:
            raise SaveCrash(name)
        calls["n"] += 1

    monkeypatch.setattr(checkpoint, "_step", step)
    monkeypatch.setattr(checkpoint, "_discard", lambda p: None)  # a kill cleans nothing up
    return calls


@pytest.fixture
def no_training(monkeypatch):
    """The CLI's fit and demo commands fail if they reach training (for checks that must refuse
    their input before any work)."""
    from vaegmm_jax.cli import demo as cli_demo
    from vaegmm_jax.cli import fit as cli_fit

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(cli_fit, "fit_detector", refuse)
    monkeypatch.setattr(cli_demo, "fit_detector", refuse)

