"""What users construct gets the fast paths: a default-constructed VAEGMM scores with the very
program of the benchmark configuration (same nets), the fused GPU decoder kernel included."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

import vaegmm_jax as vj

X = np.random.default_rng(0).random((512, 120)).astype(np.float32)  # the KDD shape: 120 features
BENCHMARK = dict(samples=10, beta=1.0, hidden=(60, 30, 10), gmm_hidden=10, gmm_dropout=0.0)  # benchmarks/jax_vaegmm.py


def _score_program(det, platform, compute_dtype="float32"):
    fn = det._jitted_score(compute_dtype, output=None, checked=True)
    traced = fn.trace(det.params, det._score_inputs(), jnp.asarray(X[:256]), np.int32(0), det._score_keys(None))
    text = traced.lower(lowering_platforms=(platform,)).as_text()
    return re.sub(r"loc\([^)]*\)|#loc\d*( = .*)?", "", text)  # source locations differ, the program must not


@pytest.fixture(scope="module")
def detectors():
    out = {}
    for name, settings in (("default", {}), ("benchmark", BENCHMARK)):
        det = vj.OutlierVAEGMM(n_gmm=4, latent_dim=2, **settings)
        det.fit(X, epochs=1, batch_size=128, verbose=False)
        out[name] = det
    return out


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_the_default_detector_scores_with_the_benchmark_configurations_program(detectors, platform, compute_dtype):
    default = _score_program(detectors["default"], platform, compute_dtype)
    benchmark = _score_program(detectors["benchmark"], platform, compute_dtype)
    assert default == benchmark
    if platform == "cuda":  # the fused Pallas (Triton) decoder kernel is in it
        assert "__gpu$xla.gpu.triton" in default
