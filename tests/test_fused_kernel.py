"""The fused decoder + reconstruction-sums kernel (Pallas) against the XLA path.

On CPU the kernel runs in Pallas' interpreter (same kernel code, same padding and
block logic); the GPU test compiles it with Triton. Interpreter comparisons run at
HIGHEST matmul precision, so that they also hold on GPUs (whose default is TF32).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

highest = jax.default_matmul_precision("highest")

import vaegmm_jax as vj
from vaegmm_jax.kernels import fused_decoder as fd
from vaegmm_jax.nets.dense import MLP


def _decoder(features, activation="tanh", out_activation="linear", latent=2, seed=0):
    module = MLP(features=features, activation=activation, out_activation=out_activation)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, latent)))["params"]
    return module, params


@pytest.mark.parametrize(
    "features, activation, out_activation, n_rows",
    [((10, 30, 60, 120), "tanh", "linear", 200),  # KDD shape, rows not a multiple of the block
     ((5, 24), "relu", "tanh", 64)],  # odd widths; tanh(0) = 0 needs no mask
)
@highest
def test_kernel_sums_equal_xla(features, activation, out_activation, n_rows):
    module, params = _decoder(features, activation, out_activation)
    x = jax.random.normal(jax.random.PRNGKey(1), (n_rows, features[-1]))
    z_lat = jax.random.normal(jax.random.PRNGKey(2), (3, n_rows, 2))
    got = fd.decoder_sums(fd.dense_stack(module, params, 2), x, z_lat, interpret=True)
    want = fd.xla_decoder_sums(module, params, x, z_lat)
    for g, w in zip(got, want):
        assert g.shape == (3, n_rows) and g.dtype == jnp.float32
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(w))))


@highest
def test_padded_output_columns_are_masked_when_activation_of_zero_is_not_zero():
    # sigmoid(0) = 0.5: the 12 padded output columns (20 -> 32) must not enter the sums
    module, params = _decoder((8, 20), "tanh", "sigmoid")
    x = jax.random.uniform(jax.random.PRNGKey(1), (40, 20))
    z_lat = jax.random.normal(jax.random.PRNGKey(2), (2, 40, 2))
    got = fd.decoder_sums(fd.dense_stack(module, params, 2), x, z_lat, interpret=True)
    for g, w in zip(got, fd.xla_decoder_sums(module, params, x, z_lat)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5)


@highest
def test_bf16_weights_accumulate_in_float32():
    module, params = _decoder((10, 30, 60, 120))
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 120))
    z_lat = jax.random.normal(jax.random.PRNGKey(2), (2, 64, 2))
    stack = fd.dense_stack(module, jax.tree.map(lambda a: a.astype(jnp.bfloat16), params), 2)
    got = fd.decoder_sums(stack, x.astype(jnp.bfloat16), z_lat, interpret=True)
    want = fd.xla_decoder_sums(module, params, x, z_lat)
    assert all(g.dtype == jnp.float32 for g in got)
    # bf16 inputs (8 mantissa bits): close to the fp32 sums, not equal
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0.05, atol=0.02 * float(jnp.max(jnp.abs(w))))


def test_wide_decoders_get_fewer_rows_per_program_or_the_xla_path():
    kdd, _ = _decoder((10, 30, 60, 120), latent=1)
    assert fd.padded_widths(kdd, 1) == (16, 16, 32, 64, 128)
    assert fd.block_rows_for(fd.padded_widths(kdd, 1)) == fd.BLOCK_ROWS == 128  # the tuned shape keeps its block
    arrhythmia, _ = _decoder((10, 274))  # Arrhythmia's DAGMM decoder: 274 features, 512 padded
    assert fd.block_rows_for(fd.padded_widths(arrhythmia, 2)) == 32
    assert fd.supports(arrhythmia, 2) and fd.supports(kdd, 1)
    # a 3,000-wide output (16 rows x 4,096 > the tile) and a 256 x 256 weight take the XLA path
    assert not fd.supports(_decoder((10, 3000))[0], 2)
    assert not fd.supports(_decoder((256, 256))[0], 2)


def test_the_model_asks_the_tile_rule_with_its_latent_width(fitted_vaegmm, monkeypatch):
    det, x = fitted_vaegmm  # decoder 2 -> 6 -> 12 -> 24: padded 16, 16, 16, 32
    assert det.model.fused_kernel_applies(jnp.asarray(x[:4]))
    monkeypatch.setattr(fd, "MAX_TILE_ELEMENTS", 16 * 16)  # 16 rows x 32 no longer fit: XLA path
    assert not det.model.fused_kernel_applies(jnp.asarray(x[:4]))


@highest
def test_kernel_sums_equal_xla_with_the_arrhythmia_width():
    # 274 features: the program's block shrinks to 32 rows; 70 rows are not a multiple of it
    module, params = _decoder((10, 274))
    x = jax.random.uniform(jax.random.PRNGKey(1), (70, 274))
    z_lat = jax.random.normal(jax.random.PRNGKey(2), (2, 70, 2))
    got = fd.decoder_sums(fd.dense_stack(module, params, 2), x, z_lat, interpret=True)
    for g, w in zip(got, fd.xla_decoder_sums(module, params, x, z_lat)):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_kernel_rejects_mismatched_shapes():
    module, params = _decoder((10, 30))
    stack = fd.dense_stack(module, params, 2)
    with pytest.raises(ValueError, match="expected \\(8, 30\\)"):
        fd.decoder_sums(stack, jnp.zeros((8, 29)), jnp.zeros((1, 8, 2)), interpret=True)
    with pytest.raises(ValueError, match="latent dims"):
        fd.decoder_sums(stack, jnp.zeros((8, 30)), jnp.zeros((1, 8, 3)), interpret=True)


@pytest.fixture(scope="module")
def fitted_vaegmm():
    rng = np.random.default_rng(0)
    x = np.tanh(rng.normal(size=(512, 2)) @ rng.normal(size=(2, 24))).astype(np.float32)
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(12, 6), samples=4, seed=0)
    det.fit(x, epochs=2, batch_size=128, verbose=False, optimizer=optax.adam(1e-3))
    return det, x


@highest
def test_model_scores_and_gradients_equal_through_the_kernel(fitted_vaegmm):
    det, x = fitted_vaegmm
    model, params, gmm = det.model, det.params, det.gmm_params
    xb = jnp.asarray(x[:48])
    noise = jax.random.normal(jax.random.PRNGKey(5), (4, 48, 2))
    np.testing.assert_allclose(model.energies(params, gmm, xb, noise, "interpret"),
                               model.energies(params, gmm, xb, noise, "xla"), rtol=1e-5, atol=1e-5)
    # the default score's second component (the RMSE from the kernel's sums) too
    assert model.recon_features is vj.core.features.rmse_features
    np.testing.assert_allclose(model.energies_and_errors(params, gmm, xb, noise, "interpret"),
                               model.energies_and_errors(params, gmm, xb, noise, "xla"), rtol=1e-5, atol=1e-5)

    def total(p, xx, kernel):
        return model.energies(p, gmm, xx, noise, kernel).sum()

    g_kernel = jax.grad(total, argnums=(0, 1))(params, xb, "interpret")
    g_xla = jax.grad(total, argnums=(0, 1))(params, xb, "xla")
    for a, b in zip(jax.tree.leaves(g_kernel), jax.tree.leaves(g_xla)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_auto_uses_xla_off_gpu_and_detector_switch(fitted_vaegmm):
    det, x = fitted_vaegmm
    if jax.default_backend() == "gpu":
        pytest.skip("checks the non-GPU lowering")
    det.scoring_kernel = "auto"
    auto = det.score(x[:100])
    det.scoring_kernel = "xla"
    try:
        xla = det.score(x[:100])
    finally:
        det.scoring_kernel = "auto"
    np.testing.assert_array_equal(auto, xla)  # off GPUs "auto" is the XLA program itself
    hlo = jax.jit(det.model.energies, static_argnums=4).lower(
        det.params, det.gmm_params, jnp.asarray(x[:8]), jnp.zeros((4, 8, 2)), "auto").as_text()
    assert "triton" not in hlo.lower()


def test_kernel_requests_that_cannot_be_met_say_why(fitted_vaegmm):
    det, x = fitted_vaegmm
    images = jnp.zeros((4, 4, 6, 1))
    with pytest.raises(ValueError, match="dense MLP decoder"):
        det.model.sampled_z(det.params, images, jnp.zeros((1, 4, 2)), kernel="interpret")
    with pytest.raises(ValueError, match="kernel must be"):
        det.model.sampled_z(det.params, jnp.asarray(x[:4]), jnp.zeros((1, 4, 2)), kernel="cuda")


@pytest.mark.gpu
def test_triton_kernel_on_gpu_matches_xla(fitted_vaegmm):
    det, x = fitted_vaegmm
    det.scoring_kernel = "xla"
    want = det.score(x)
    want_bf16 = det.score(x, compute_dtype="bfloat16")
    det.scoring_kernel = "auto"
    got = det.score(x)
    got_bf16 = det.score(x, compute_dtype="bfloat16")
    # both paths use TF32 matmuls at default precision: close, not bit-equal
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * float(np.max(np.abs(want))))
    np.testing.assert_allclose(got_bf16, want_bf16, rtol=0.05, atol=0.05 * float(np.max(np.abs(want))))
    hlo = jax.jit(det.model.energies, static_argnums=4).lower(
        det.params, det.gmm_params, jnp.asarray(x[:8]), jnp.zeros((4, 8, 2)), "auto").as_text()
    assert "triton" in hlo.lower()


@pytest.mark.gpu
def test_triton_kernel_on_gpu_runs_wide_rows():
    """Arrhythmia's width (274 features) once failed to launch: 128 rows x 512 padded features
    asked for more shared memory than an H100 block has."""
    module, params = _decoder((10, 274))
    x = jax.random.uniform(jax.random.PRNGKey(1), (300, 274))
    z_lat = jax.random.normal(jax.random.PRNGKey(2), (3, 300, 2))
    with jax.default_matmul_precision("highest"):
        got = jax.jit(lambda p, x, z: fd.differentiable_decoder_sums(module, x, z, p))(params, x, z_lat)
        want = fd.xla_decoder_sums(module, params, x, z_lat)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(w))))


@highest
def test_kernel_vmapped_over_members_equals_xla(fitted_vaegmm):
    """An ensemble scores its members through the kernel vmapped over the member axis."""
    det, x = fitted_vaegmm
    ens = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(12, 6), samples=4, seed=0, n_members=2)
    ens.fit(x, epochs=1, batch_size=128, verbose=False)
    model = ens.model
    xb = jnp.asarray(x[:40])
    noise = jax.random.normal(jax.random.PRNGKey(2), (4, 40, 2))

    def member_energies(kernel):
        return jax.vmap(lambda p, g: model.energies_and_errors(p, g, xb, noise, kernel))(ens.params, ens.gmm_params)

    np.testing.assert_allclose(member_energies("interpret"), member_energies("xla"), rtol=1e-5, atol=1e-5)
