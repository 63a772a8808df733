"""Weight initialisers by name: Flax's default, TensorFlow/Keras' Glorot uniform, PyTorch's."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import vaegmm_jax as vj
from tests.conftest import manifold_data
from vaegmm_jax.detectors import presets
from vaegmm_jax.nets import dense


def _init_params(det, n_features, seed=0):
    det.build_model(np.zeros((2, n_features), np.float32))
    return det.model.init(jax.random.PRNGKey(seed), jnp.zeros((2, n_features), jnp.float32))


def _kernels(params):
    """Every (fan_in, fan_out) Dense kernel in a parameter tree."""
    return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if getattr(path[-1], "key", None) == "kernel" and leaf.ndim == 2]


def test_default_is_flax_default_bit_for_bit():
    # The default must not move: trained results and tests depend on these exact draws.
    x = jnp.ones((3, 7))
    ours = dense.MLP(features=(5, 4, 2)).init(jax.random.PRNGKey(1), x)

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jnp.tanh(nn.Dense(5)(x))
            h = jnp.tanh(nn.Dense(4)(h))
            return nn.Dense(2)(h)

    plain = Plain().init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(ours) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, bound, variance", [
    ("glorot_uniform", lambda fi, fo: math.sqrt(6.0 / (fi + fo)), lambda fi, fo: 2.0 / (fi + fo)),
    ("torch_uniform", lambda fi, fo: 1.0 / math.sqrt(fi), lambda fi, fo: 1.0 / (3.0 * fi)),
])
def test_uniform_initialisers_reach_every_layer_and_head(name, bound, variance):
    det = presets.make_detector("kddcup", kernel_init=name)
    assert det.arch["kernel_init"] == name
    params = _init_params(det, 118)
    kernels = _kernels(params)
    assert len(kernels) == 3 + 1 + 4 + 2  # encoder, latent head, decoder, estimation net
    for w in kernels:
        fan_in, fan_out = w.shape
        assert float(jnp.max(jnp.abs(w))) <= bound(fan_in, fan_out) * (1 + 1e-6)
    big = params["encoder"]["Dense_0"]["kernel"]  # 118 x 60: 7,080 draws
    np.testing.assert_allclose(float(jnp.var(big)), variance(*big.shape), rtol=0.08)
    # a uniform's largest draw sits at its bound
    assert float(jnp.max(jnp.abs(big))) > 0.99 * bound(*big.shape)


def test_lecun_default_differs_from_glorot():
    # The bound check above would fail for Flax's truncated normal (it reaches 2 std = 0.21 > 0.18).
    params = _init_params(presets.make_detector("kddcup"), 118)
    big = params["encoder"]["Dense_0"]["kernel"]
    assert float(jnp.max(jnp.abs(big))) > math.sqrt(6.0 / (118 + 60))
    np.testing.assert_allclose(float(jnp.var(big)), 1.0 / 118, rtol=0.08)


def test_variational_heads_and_vae_use_the_named_initialiser():
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(8, 4), kernel_init="glorot_uniform")
    params = _init_params(det, 12)
    assert set(params["head"]) == {"mean", "logvar"}
    for w in _kernels(params["head"]):
        assert float(jnp.max(jnp.abs(w))) <= math.sqrt(6.0 / (4 + 2)) * (1 + 1e-6)
    vae = vj.OutlierVAE(latent_dim=2, hidden=(8, 4), kernel_init="torch_uniform")
    vae.build_model(np.zeros((2, 12), np.float32))
    vparams = vae.model.init(jax.random.PRNGKey(0), jnp.zeros((2, 12), jnp.float32))
    kernels = _kernels(vparams)
    assert len(kernels) >= 6 and vae.model.head_init == "torch_uniform"
    for w in kernels:
        assert float(jnp.max(jnp.abs(w))) <= 1.0 / math.sqrt(w.shape[0]) * (1 + 1e-6)


@pytest.mark.parametrize("make", [
    lambda: vj.OutlierAEGMM(kernel_init="xavier"),
    lambda: vj.OutlierVAEGMM(kernel_init="he"),
    lambda: vj.OutlierVAE(kernel_init=None),
    lambda: presets.make_detector("thyroid", kernel_init="glorot"),
])
def test_unknown_initialiser_is_rejected_at_construction(make):
    with pytest.raises(ValueError, match="kernel_init must be one of .*glorot_uniform.*lecun_normal"):
        make()


def test_kernel_init_survives_a_checkpoint_and_old_configs_load(tmp_path):
    X, X_test, _ = manifold_data(n_in=256, n_out=10, seed=2)
    det = vj.OutlierAEGMM(n_gmm=2, hidden=(8, 4), seed=3, kernel_init="glorot_uniform")
    det.fit(X, epochs=1, batch_size=64, verbose=False, optimizer=optax.adam(1e-3))
    vj.save_detector(det, tmp_path / "det")
    loaded = vj.load_detector(tmp_path / "det")
    assert loaded.arch["kernel_init"] == "glorot_uniform"
    assert loaded.model.head_init == "glorot_uniform"
    np.testing.assert_array_equal(loaded.score(X_test), det.score(X_test))
    # configs written before the option existed rebuild Flax's default
    config = det.config_dict()
    del config["arch"]["kernel_init"]
    assert vj.OutlierAEGMM.from_config(config).arch["kernel_init"] == "lecun_normal"
