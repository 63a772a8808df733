"""The public extension interface: a new detector written against it alone trains, scores,
reports a metric and thresholds like the library's own; settings are values that a checkpoint keeps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from sklearn.metrics import roc_auc_score

import vaegmm_jax as vj
from vaegmm_jax.detectors.base import BaseDetector
from vaegmm_jax.engine import training
from vaegmm_jax.engine.config import CompileOptions, FitOptions
from tests.conftest import manifold_split


class _AE(nn.Module):
    n_features: int

    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(8)(x))
        return nn.Dense(self.n_features)(nn.Dense(2)(h))


class ReconstructionErrorDetector(BaseDetector):
    """A plain autoencoder scored by its squared reconstruction error: only the public hooks."""

    loss_terms = ("total",)

    def build_model(self, x_sample):
        if self.model is None:
            self.model = _AE(int(x_sample.shape[1]))

    def training_objective(self, X, fit_kwargs):
        model = self.model

        def loss_fn(params, x, row_weights, key):
            err = jnp.sum((model.apply(params, x) - x) ** 2, axis=1)
            total = jnp.sum(err * row_weights) / jnp.maximum(jnp.sum(row_weights), 1.0)
            return total, {"total": total}

        return training.Objective(loss_fn)

    def reconstruct(self, params, x, key):
        return self.model.apply(params, x)

    def score_chunk_fn(self, n_samples, output=None):
        model = self.model

        def score(params, state, x, offset, key):
            return jnp.sum((model.apply(params, x) - x) ** 2, axis=1)

        return score

    def _own_config(self):
        return {}

    @classmethod
    def _own_kwargs(cls, config):
        return {}

    def fit(self, X, **run):
        return self._fit(X, {}, verbose=False, **run)


def _rmse(x, x_recon):
    return jnp.sqrt(jnp.mean((x - x_recon) ** 2, axis=1))


def test_a_detector_written_against_the_extension_interface_detects():
    x_train, x_test, y_test = manifold_split(n_train=512, n_test=100, n_out=25, seed=3)
    det = ReconstructionErrorDetector(seed=1)
    history = det.fit(x_train, epochs=30, batch_size=64, log_metric=("rmse", _rmse))
    assert len(history["total"]) == 30 and history["total"][-1] < history["total"][0]
    assert len(history["rmse"]) == 30 and history["rmse"][-1] < history["rmse"][0]
    scores = det.score(x_test)
    assert scores.shape == (125,) and scores.dtype == np.float32
    assert roc_auc_score(y_test, scores) > 0.9
    det.infer_threshold(x_train, threshold_perc=95.0)
    flags = det.predict(x_test)["data"]["is_outlier"]
    assert flags[y_test == 1].mean() > flags[y_test == 0].mean()
    # an ensemble of it comes from the same engine, without a line of its own
    ensemble = ReconstructionErrorDetector(seed=[1, 2])
    ensemble.fit(x_train, epochs=5, batch_size=64)
    assert ensemble.score_members(x_test).shape == (2, 125)
    single = ReconstructionErrorDetector(seed=1)
    single.fit(x_train, epochs=5, batch_size=64)
    np.testing.assert_allclose(ensemble.member(0).score(x_test), single.score(x_test), rtol=1e-5, atol=1e-6)


def test_settings_are_values_that_a_checkpoint_keeps(tmp_path):
    x_train, x_test, _ = manifold_split(n_train=256, n_test=20, n_out=5, seed=4)
    det = vj.OutlierVAEGMM(samples=2, scoring_kernel="xla", devices=jax.devices()[:1])
    det.fit(x_train, epochs=2, batch_size=64, verbose=False,
            options=FitOptions(compile=CompileOptions(epoch={"xla_gpu_autotune_level": 0}), train_steps=10))
    vj.save_detector(det, tmp_path / "m")
    loaded = vj.load_detector(tmp_path / "m")
    assert loaded.scoring_kernel == "xla"
    assert loaded.devices == tuple(jax.devices()[:1])
    assert loaded.fit_config["compile"]["epoch"] == {"xla_gpu_autotune_level": 0}  # non-default: recorded
    np.testing.assert_array_equal(loaded.score(x_test), det.score(x_test))


def test_settings_are_checked_and_immutable():
    with pytest.raises(ValueError, match="scoring_kernel"):
        vj.OutlierVAEGMM(scoring_kernel="triton")
    with pytest.raises(TypeError, match="devices"):
        vj.OutlierVAE(devices=["gpu:0"])
    with pytest.raises(TypeError, match="no \\['samples'\\]"):
        vj.OutlierAEGMM(samples=3)
    options = CompileOptions(epoch={"xla_gpu_autotune_level": 0})
    with pytest.raises(AttributeError):
        options.epoch = {}  # frozen: another setting is another value
    assert dict(options.epoch) == {"xla_gpu_autotune_level": 0} and hash(FitOptions(compile=options))
    with pytest.raises(ValueError, match="train_steps"):
        FitOptions(train_steps=0)


def test_the_vae_score_takes_outlier_perc_as_a_keyword_only():
    x_train, x_test, _ = manifold_split(n_train=128, n_test=10, n_out=2, seed=5)
    det = vj.OutlierVAE(samples=2)
    det.fit(x_train, epochs=1, batch_size=64, verbose=False)
    # the second positional argument is batch_size, as for every detector
    np.testing.assert_allclose(det.score(x_test, 4), det.score(x_test, batch_size=64), rtol=1e-5, atol=1e-5)
    assert not np.allclose(det.score(x_test, outlier_perc=25.0), det.score(x_test))
