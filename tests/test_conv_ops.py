"""The sub-pixel transposed convolution equals XLA's, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vaegmm_jax.nets import conv_ops

# (kernel, stride, input size): the decoder's layers (3, 2) and (3, 1), and odd cases where
# the tap bookkeeping differs (kernel < stride, kernel = stride, even kernels, stride 3).
CASES = [(3, 2, 7), (3, 2, 14), (3, 1, 9), (5, 2, 6), (4, 2, 5), (2, 2, 4), (1, 2, 4), (3, 3, 4), (5, 3, 3)]


def _data(k, s, n, cin=3, cout=2, seed=0):
    rng = np.random.default_rng([k, s, n, seed])
    x = jnp.asarray(rng.normal(size=(2, n, n + 1, cin)), jnp.float32)  # H != W catches swapped axes
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)), jnp.float32)
    return x, w


def _reference(x, w, s):
    return lax.conv_transpose(x, w, (s, s), "SAME", precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize("k,s,n", CASES)
def test_subpixel_equals_xla_conv_transpose(k, s, n):
    x, w = _data(k, s, n)
    want = np.asarray(_reference(x, w, s))
    got = np.asarray(conv_ops.subpixel_conv_transpose(x, w, (s, s)))
    assert got.shape == want.shape == (2, s * n, s * (n + 1), 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("k,s,n", [(3, 2, 7), (4, 2, 5), (3, 3, 4)])
def test_subpixel_gradients_equal_xla(k, s, n):
    x, w = _data(k, s, n)
    target = jnp.asarray(np.random.default_rng(1).normal(size=(2, s * n, s * (n + 1), 2)), jnp.float32)

    def loss(f):
        return lambda x, w: jnp.sum((f(x, w) - target) ** 2)

    want = jax.grad(loss(lambda x, w: _reference(x, w, s)), argnums=(0, 1))(x, w)
    got = jax.grad(loss(lambda x, w: conv_ops.subpixel_conv_transpose(x, w, (s, s))), argnums=(0, 1))(x, w)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4 * float(jnp.abs(r).max()))


def test_conv_transpose_dispatch_equals_both_forms_and_avoids_dilation_on_cpu():
    x, w = _data(3, 2, 7)
    y = jax.jit(lambda x, w: conv_ops.conv_transpose(x, w, (2, 2)))(x, w)
    np.testing.assert_allclose(np.asarray(y), np.asarray(_reference(x, w, 2)), rtol=1e-5, atol=1e-4)
    hlo = jax.jit(jax.grad(lambda w: conv_ops.conv_transpose(x, w, (2, 2)).sum())).lower(w).as_text()
    if jax.default_backend() == "cpu":
        # the lowered program holds only the CPU branch: no input-dilated convolution left
        assert "lhs_dilate" not in hlo
    else:
        assert "lhs_dilate" in hlo


def test_subpixel_taps_cover_every_kernel_tap_once_per_phase_pattern():
    for k, s in [(3, 2), (5, 2), (4, 2), (3, 3), (1, 2), (2, 2)]:
        taps, (before, after) = conv_ops.subpixel_taps(k, s)
        used = taps[taps < k]
        # every tap of the original kernel is used exactly once (each lands on one phase)
        assert sorted(used.tolist()) == list(range(k))
        assert before >= 0 and after >= 0 and taps.shape == (before + after + 1, s)


def test_conv_transpose_under_vmap_matches_loop():
    x, _ = _data(3, 2, 5)
    ws = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 3, 3, 2)), jnp.float32)
    batched = jax.vmap(lambda w: conv_ops.conv_transpose(x, w, (2, 2)))(ws)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(_reference(x, ws[i], 2)), rtol=1e-5, atol=1e-4)


def test_conv_transpose_module_matches_flax_layer():
    from flax import linen as nn

    from vaegmm_jax.nets.conv import ConvTranspose, kernel_init

    x = jnp.asarray(np.random.default_rng(3).normal(size=(4, 7, 7, 5)), jnp.float32)
    ours = ConvTranspose(6, (3, 3), strides=(2, 2))
    flax_layer = nn.ConvTranspose(6, (3, 3), strides=(2, 2), padding="SAME", kernel_init=kernel_init)
    p_ours = ours.init(jax.random.key(0), x)
    p_flax = flax_layer.init(jax.random.key(0), x)
    # same parameter tree and initial values: checkpoints of the Flax layer load unchanged
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_flax)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_flax)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    p = jax.tree.map(lambda a: a + 0.1, p_flax)  # a non-zero bias
    np.testing.assert_allclose(np.asarray(ours.apply(p, x)), np.asarray(flax_layer.apply(p, x)), rtol=1e-5, atol=1e-5)
