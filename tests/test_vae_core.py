"""VAE pieces and reconstruction features against closed forms and hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from vaegmm_jax.core import vae
from vaegmm_jax.core.features import alibi_eucl_cosim_features, dagmm_features, resolve_recon_features

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 5)).astype(np.float32)
XR = (X + 0.3 * RNG.normal(size=(16, 5))).astype(np.float32)


def test_reparameterize_mean_and_variance():
    mean, logvar = jnp.full((20000, 2), 1.5), jnp.full((20000, 2), np.log(0.25))
    z = np.asarray(vae.reparameterize(jax.random.PRNGKey(0), mean, logvar))
    np.testing.assert_allclose(z.mean(0), 1.5, atol=0.02)
    np.testing.assert_allclose(z.std(0), 0.5, atol=0.02)
    # differentiable in the distribution parameters
    g = jax.grad(lambda m: vae.reparameterize(jax.random.PRNGKey(1), m, logvar[:3]).sum())(mean[:3])
    np.testing.assert_allclose(g, 1.0)


def test_row_noise_depends_only_on_row_index():
    key = jax.random.PRNGKey(3)
    full = vae.row_normal_noise(key, jnp.arange(10), 4, 2)
    part = vae.row_normal_noise(key, jnp.arange(6, 10), 4, 2)
    assert full.shape == (4, 10, 2)
    np.testing.assert_array_equal(full[:, 6:], part)
    assert not np.allclose(full[:, 0], full[:, 1])


def test_kl_alibi_convention():
    mean, logvar = RNG.normal(size=(8, 3)), RNG.normal(size=(8, 3)) * 0.3
    usual_kl_per_row = 0.5 * np.sum(mean**2 + np.exp(logvar) - 1 - logvar, axis=1)
    np.testing.assert_allclose(vae.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar)), usual_kl_per_row.mean() / 3, rtol=1e-5)
    w = np.r_[np.ones(5), np.zeros(3)]
    np.testing.assert_allclose(
        vae.kl_divergence(jnp.asarray(mean), jnp.asarray(logvar), jnp.asarray(w)), usual_kl_per_row[:5].mean() / 3, rtol=1e-5
    )


def test_nll_sim_equals_isotropic_gaussian():
    cov = vae.recon_covariance(dict(sim=0.05))
    expected = -multivariate_normal(np.zeros(5), 0.05**2 * np.eye(5)).logpdf(X - XR)
    np.testing.assert_allclose(vae.gaussian_nll(jnp.asarray(X), jnp.asarray(XR), cov), expected, rtol=1e-5)


def test_nll_cov_diag_uses_training_standard_deviations():
    train = RNG.normal(size=(500, 5)) * np.array([0.5, 1, 2, 3, 4])
    cov = vae.recon_covariance(dict(cov_diag=None), train)
    std = train.std(0)
    np.testing.assert_allclose(cov.scale, std, rtol=1e-4)
    expected = -multivariate_normal(np.zeros(5), np.diag(std**2)).logpdf(X - XR)
    np.testing.assert_allclose(vae.gaussian_nll(jnp.asarray(X), jnp.asarray(XR), cov), expected, rtol=1e-4)


def test_nll_cov_full_uses_training_covariance():
    a = RNG.normal(size=(5, 5))
    train = RNG.normal(size=(800, 5)) @ a
    cov = vae.recon_covariance(dict(cov_full=None), train)
    sigma = np.cov(train, rowvar=False) + 1e-6 * np.eye(5)
    expected = -multivariate_normal(np.zeros(5), sigma).logpdf(X - XR)
    np.testing.assert_allclose(vae.gaussian_nll(jnp.asarray(X), jnp.asarray(XR), cov), expected, rtol=2e-4)


@pytest.mark.parametrize("bad", [dict(), dict(sim=0.05, cov_diag=None), dict(foo=1), dict(sim=-1.0), "sim"])
def test_cov_elbo_errors(bad):
    with pytest.raises(ValueError, match="cov_elbo"):
        vae.recon_covariance(bad, X)


def test_bernoulli_nll_matches_bce_and_is_stable():
    x = RNG.uniform(size=(4, 6))
    logits = RNG.normal(size=(4, 6)) * 3
    p = 1 / (1 + np.exp(-logits))
    expected = -(x * np.log(p) + (1 - x) * np.log(1 - p))
    np.testing.assert_allclose(vae.bernoulli_nll(jnp.asarray(x), jnp.asarray(logits)), expected, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(vae.bernoulli_nll(jnp.ones(2), jnp.array([-200.0, 200.0])))))


def test_gaussian_log_prob_diag():
    x, m, lv = RNG.normal(size=3), RNG.normal(size=3), RNG.normal(size=3)
    expected = [multivariate_normal(m[i], np.exp(lv[i])).logpdf(x[i]) for i in range(3)]
    np.testing.assert_allclose(vae.gaussian_log_prob_diag(jnp.asarray(x), jnp.asarray(m), jnp.asarray(lv)), expected, rtol=1e-5)


def test_dagmm_features_are_the_papers():
    f = np.asarray(dagmm_features(jnp.asarray(X), jnp.asarray(XR)))
    rel = np.linalg.norm(X - XR, axis=1) / np.linalg.norm(X, axis=1)
    cos = np.sum(X * XR, axis=1) / (np.linalg.norm(X, axis=1) * np.linalg.norm(XR, axis=1))
    np.testing.assert_allclose(f[:, 0], rel, rtol=1e-5)
    np.testing.assert_allclose(f[:, 1], cos, rtol=1e-5)
    # finite gradients even for a perfect reconstruction
    g = jax.grad(lambda r: dagmm_features(jnp.asarray(X), r).sum())(jnp.asarray(X))
    assert np.all(np.isfinite(np.asarray(g)))


def test_reconstruction_sums_one_pass_equals_plain_sums_with_gradients():
    from jax.test_util import check_grads

    from vaegmm_jax.core.features import reconstruction_sums

    x, r = jnp.asarray(X, jnp.float32), jnp.asarray(XR, jnp.float32)
    sums = reconstruction_sums(x, r)
    np.testing.assert_allclose(sums[0], np.sum((X - XR) ** 2, axis=1), rtol=1e-5)
    np.testing.assert_allclose(sums[1], np.sum(XR**2, axis=1), rtol=1e-5)
    np.testing.assert_allclose(sums[2], np.sum(X * XR, axis=1), rtol=1e-5)
    # the custom JVP against finite differences (forward and reverse, second order too)
    x64, r64 = np.asarray(X[:4], np.float64), np.asarray(XR[:4], np.float64)
    with jax.enable_x64(True):
        check_grads(lambda a, b: dagmm_features(a, b), (jnp.asarray(x64), jnp.asarray(r64)), order=2, modes=("fwd", "rev"))
    # vmapped over a leading sample axis with x shared, as in scoring
    stacked = jnp.stack([r, 2.0 * r])
    batched = jax.vmap(dagmm_features, in_axes=(None, 0))(x, stacked)
    np.testing.assert_allclose(batched[1], dagmm_features(x, 2.0 * r), rtol=1e-6)


def test_alibi_features_reproduce_its_quirks_by_hand():
    # Hand-computed alibi-detect 0.13 eucl_cosim_features for two rows.
    x = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    xr = np.array([[3.0, 0.0], [0.0, 2.0]], np.float32)
    f = np.asarray(alibi_eucl_cosim_features(jnp.asarray(x), jnp.asarray(xr)))
    # row 0: cos = 9/(5*3) = 0.6 -> neg_cos -0.6; ||xr - x|| = 4; min norm 3; eps = -1 -> 4 / 2 = 2
    # row 1: cos = 0 -> -0; ||xr - x|| = sqrt(5); min norm 1; 1 + (-1) = 0 -> inf -> clipped to 100
    np.testing.assert_allclose(f[0], [-0.6, 2.0], rtol=1e-6)
    np.testing.assert_allclose(f[1], [0.0, 100.0], atol=1e-6)
    # column order and sign differ from the paper's features
    p = np.asarray(dagmm_features(jnp.asarray(x), jnp.asarray(xr)))
    np.testing.assert_allclose(f[0, 0], -p[0, 1], rtol=1e-6)


def _alibi_features_plain_numpy(x, xr, max_eucl=100.0):
    # alibi-detect 0.13's formula verbatim (float64, numpy): the reference values
    def l2n(v):
        return v / np.sqrt(np.maximum(np.sum(v * v, axis=-1, keepdims=True), 1e-12))

    neg_cos = -np.sum(l2n(x) * l2n(xr), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.linalg.norm(xr - x, axis=-1) / (np.minimum(np.linalg.norm(xr, axis=-1), np.linalg.norm(x, axis=-1)) - 1.0)
    return np.stack([neg_cos, np.clip(rel, 0.0, max_eucl)], axis=-1)


def test_alibi_features_equal_alibi_values_and_have_finite_gradients_at_its_division_by_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5))
    xr = x + 0.3 * rng.normal(size=(64, 5))
    # put min(||x||, ||x'||) exactly at 1 (alibi's denominator 0), just above it (ratio clipped at
    # 100), just below it (negative ratio clipped at 0), and a perfect reconstruction
    x[0] *= 1.0 / np.linalg.norm(x[0])
    xr[0] = 1.5 * x[0] + 0.1
    x[1] *= (1.0 + 1e-4) / np.linalg.norm(x[1])
    xr[1] = 2.0 * x[1]
    x[2] *= (1.0 - 1e-3) / np.linalg.norm(x[2])
    xr[3] = x[3]
    x32, xr32 = jnp.asarray(x, jnp.float32), jnp.asarray(xr, jnp.float32)
    assert float(jnp.minimum(jnp.linalg.norm(x32[0]), jnp.linalg.norm(xr32[0]))) == 1.0
    f = np.asarray(alibi_eucl_cosim_features(x32, xr32))
    ref = _alibi_features_plain_numpy(np.asarray(x32, np.float64), np.asarray(xr32, np.float64))
    np.testing.assert_allclose(f, ref, rtol=2e-5, atol=2e-5)
    assert f[0, 1] == 100.0 and f[1, 1] == 100.0 and f[2, 1] == 0.0 and f[3, 1] == 0.0
    # alibi's expression has a NaN derivative at row 0; ours is finite everywhere
    grads = jax.grad(lambda a, b: jnp.sum(alibi_eucl_cosim_features(a, b)), argnums=(0, 1))(x32, xr32)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    # the sums form used by the fused scoring path gives the same values
    from vaegmm_jax.core.features import alibi_features_from_sums, reconstruction_sums

    np.testing.assert_allclose(alibi_features_from_sums(x32, reconstruction_sums(x32, xr32)), f, rtol=1e-5, atol=1e-5)
    # away from the clip boundaries the derivative is the plain one (finite differences)
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        rows = slice(8, 12)
        assert ((ref[rows, 1] > 0.0) & (ref[rows, 1] < 100.0)).all()  # inside the clip range
        check_grads(alibi_eucl_cosim_features, (jnp.asarray(x[rows]), jnp.asarray(xr[rows])), order=1, modes=("rev",))


def test_resolve_recon_features():
    assert resolve_recon_features(None)[0] == "dagmm"
    assert resolve_recon_features("alibi")[1] is alibi_eucl_cosim_features
    name, fn = resolve_recon_features(lambda a, b: a[:, :1])
    assert name.startswith("custom:") and callable(fn)
    with pytest.raises(ValueError, match="unknown recon_features"):
        resolve_recon_features("nope")
    with pytest.raises(TypeError):
        resolve_recon_features(3)
