"""GMM maths against float64 NumPy/SciPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from vaegmm_jax.core import gmm


def _random_problem(n=200, d=4, k=3, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + offset
    logits = rng.normal(size=(n, k)) * 2
    gamma = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    return z, gamma


def _numpy_params(z, gamma):
    nk = gamma.sum(0)
    phi = nk / len(z)
    mu = (gamma.T @ z) / nk[:, None]
    cov = np.stack([((gamma[:, k, None] * (z - mu[k])).T @ (z - mu[k])) / nk[k] for k in range(gamma.shape[1])])
    return phi, mu, cov


def _scipy_energy(z, phi, mu, cov, eps):
    d = z.shape[1]
    logp = np.stack(
        [np.log(phi[k]) + multivariate_normal(mu[k], cov[k] + eps * np.eye(d)).logpdf(z) for k in range(len(phi))],
        axis=1,
    )
    return -logsumexp(logp, axis=1)


def test_params_match_float64_reference():
    z, gamma = _random_problem()
    p = gmm.gmm_params(jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32))
    phi, mu, cov = _numpy_params(z, gamma)
    np.testing.assert_allclose(p.phi, phi, rtol=1e-5)
    np.testing.assert_allclose(p.mu, mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p.cov, cov, rtol=1e-4, atol=1e-5)
    assert abs(float(p.phi.sum()) - 1.0) < 1e-6


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_energy_matches_scipy_mixture_log_density(eps):
    z, gamma = _random_problem(seed=1)
    phi, mu, cov = _numpy_params(z, gamma)
    params = gmm.GMMParams(*(jnp.asarray(a, jnp.float32) for a in (phi, mu, cov)))
    e = gmm.energy(jnp.asarray(z, jnp.float32), params, eps)
    np.testing.assert_allclose(e, _scipy_energy(z, phi, mu, cov, eps), rtol=2e-5, atol=2e-5)


def test_energy_far_outliers_do_not_saturate_or_tie():
    # Ports with jitter 1e-12 and no log-sum-exp saturate near 27.6 so far outliers tie.
    z, gamma = _random_problem(seed=2)
    params = gmm.gmm_params(jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32))
    far = jnp.asarray([[10.0] * 4, [20.0] * 4, [40.0] * 4])
    e = np.asarray(gmm.energy(far, params))
    assert np.all(np.isfinite(e)) and e[0] < e[1] < e[2] and e[0] > 30


def test_penalty_is_sum_of_inverse_diagonals():
    _, _, cov = _numpy_params(*_random_problem(seed=3))
    expected = sum(1.0 / cov[k][j, j] for k in range(cov.shape[0]) for j in range(cov.shape[1]))
    np.testing.assert_allclose(gmm.cov_diag_penalty(jnp.asarray(cov, jnp.float32)), expected, rtol=1e-5)


def test_chunked_statistics_equal_one_pass():
    z, gamma = _random_problem(n=1000, seed=4)
    z32, g32 = jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32)
    one = gmm.gmm_params(z32, g32)
    shift = jnp.zeros((3, 4))
    for _ in range(2):  # the two-pass chunked estimate
        total = None
        for start in range(0, 1000, 137):
            s = gmm.gmm_stats(z32[start : start + 137], g32[start : start + 137], shift=shift)
            total = s if total is None else gmm.merge_stats(total, s)
        chunked = gmm.params_from_stats(total)
        shift = chunked.mu
    for a, b in zip(one, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_padding_rows_with_zero_weight_change_nothing():
    z, gamma = _random_problem(n=100, seed=5)
    z32, g32 = jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32)
    padded_z = jnp.concatenate([z32, 1e3 * jnp.ones((28, 4))])
    padded_g = jnp.concatenate([g32, jnp.full((28, 3), 1 / 3)])
    w = jnp.r_[jnp.ones(100), jnp.zeros(28)]
    for a, b in zip(gmm.gmm_params(z32, g32), gmm.gmm_params(padded_z, padded_g, w)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_two_pass_beats_raw_moments_in_float32():
    # Data far from the origin: E[zz^T] - mu mu^T cancels catastrophically in float32.
    z, gamma = _random_problem(n=2000, seed=6, offset=3000.0)
    _, _, cov64 = _numpy_params(z, gamma)
    ours = gmm.gmm_params(jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32)).cov
    raw = gmm.params_from_stats(gmm.gmm_stats(jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32))).cov
    err_ours = np.max(np.abs(np.asarray(ours) - cov64))
    err_raw = np.max(np.abs(np.asarray(raw) - cov64))
    assert err_ours < 1e-2 and err_raw > 10 * err_ours


def test_sharded_style_sum_of_stats_equals_whole():
    # Summing per-device statistics (what psum does) equals the whole-batch statistics.
    z, gamma = _random_problem(n=256, seed=7)
    z32, g32 = jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32)
    per_device = jax.vmap(lambda a, b: gmm.gmm_stats(a, b))(z32.reshape(4, 64, 4), g32.reshape(4, 64, 3))
    summed = jax.tree.map(lambda x: x.sum(0), per_device._replace(shift=per_device.shift[0][None]))
    whole = gmm.gmm_stats(z32, g32)
    for a, b in zip(summed[:4], whole[:4]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_empty_and_collapsed_components_are_finite_with_finite_gradients():
    rng = np.random.default_rng(8)
    z = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    gamma = jnp.zeros((32, 3)).at[:, 0].set(1.0)  # components 1, 2 empty
    p = gmm.gmm_params(z, gamma)
    assert np.all(np.isfinite(np.asarray(p.cov))) and float(p.phi[1]) == 0.0

    def loss(z, gamma):
        p = gmm.gmm_params(z, gamma)
        return gmm.energy(z, p).mean() + 0.005 * gmm.cov_diag_penalty(p.cov)

    assert np.isfinite(float(jax.jit(loss)(z, gamma)))
    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    gz, gg = grad_fn(z, gamma)
    assert np.all(np.isfinite(np.asarray(gz))) and np.all(np.isfinite(np.asarray(gg)))
    # A collapsed batch: every row identical.
    same = jnp.ones((16, 3))
    g2, _ = grad_fn(same, jax.nn.softmax(jnp.asarray(rng.normal(size=(16, 3)), jnp.float32)))
    assert np.all(np.isfinite(np.asarray(g2)))


def test_energy_gradients_pass_check_grads():
    z, gamma = _random_problem(n=24, d=3, k=2, seed=9)
    z64 = jnp.asarray(z, jnp.float32)
    logits = jnp.asarray(np.log(gamma), jnp.float32)

    def f(z, logits):
        g = jax.nn.softmax(logits, axis=-1)
        p = gmm.gmm_params(z, g)
        return gmm.energy(z, p, eps=1e-3).mean() + 1e-3 * gmm.cov_diag_penalty(p.cov)

    check_grads(jax.jit(f), (z64, logits), order=1, modes=["rev"], atol=5e-2, rtol=5e-2, eps=1e-2)


def test_energy_composes_with_vmap_and_jit():
    z, gamma = _random_problem(n=64, seed=10)
    p = gmm.gmm_params(jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32))
    batched = jax.jit(jax.vmap(lambda zi: gmm.energy(zi[None], p)[0]))(jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(batched, gmm.energy(jnp.asarray(z, jnp.float32), p), rtol=1e-5, atol=1e-5)


def test_params_are_finite_flags_nan():
    good = gmm.GMMParams(jnp.ones(2) / 2, jnp.zeros((2, 2)), jnp.broadcast_to(jnp.eye(2), (2, 2, 2)))
    assert bool(gmm.params_are_finite(good))
    bad = good._replace(cov=good.cov.at[0, 0, 0].set(-5.0))  # not positive definite
    assert not bool(gmm.params_are_finite(bad))


@pytest.mark.parametrize("d", [1, 4])
def test_unrolled_small_d_path_equals_linalg_path(d, monkeypatch):
    """The elementwise Cholesky / inverse / contractions used up to SMALL_D give the same
    energies, statistics and gradients as jnp.linalg + HIGHEST einsum (the path for large D)."""
    z, gamma = _random_problem(n=300, d=d, k=3, seed=d)
    z, gamma = jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32)

    def run():
        params = gmm.gmm_params(z, gamma)
        e = gmm.energy(z, params)
        grad = jax.grad(lambda zz: jnp.sum(gmm.energy(zz, gmm.gmm_params(zz, gamma))))(z)
        return params, e, grad, gmm.cholesky_factor(params.cov), gmm.energy_cache(params).chol_inv

    small = run()
    monkeypatch.setattr(gmm, "SMALL_D", 0)
    general = run()
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(general)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
    # and the unrolled factor really is a Cholesky factor, NaN when not positive definite
    chol = small[3]
    np.testing.assert_allclose(np.asarray(chol @ jnp.swapaxes(chol, -1, -2)), np.asarray(small[0].cov) + 1e-6 * np.eye(d),
                               rtol=1e-5, atol=1e-5)
    assert np.allclose(np.triu(np.asarray(chol), 1), 0.0)
    if d > 1:
        indefinite = jnp.asarray(np.diag(np.r_[1.0, -1.0, np.ones(d - 2)]), jnp.float32)[None]
        assert np.isnan(np.asarray(gmm.small_cholesky(indefinite))).any()


def test_unrolled_factor_and_inverse_at_the_largest_small_d():
    """D = SMALL_D (8): factor and inverse against jnp.linalg / solve_triangular (no gradients:
    compiling those through an 8 x 8 unrolled factor is the slow part of the test above)."""
    d = gmm.SMALL_D
    a = np.random.default_rng(8).normal(size=(3, d, d + 2))
    cov = jnp.asarray(a @ np.swapaxes(a, 1, 2) / d, jnp.float32)
    chol = gmm.small_cholesky(cov)
    np.testing.assert_allclose(np.asarray(chol), np.asarray(jnp.linalg.cholesky(cov)), rtol=1e-5, atol=1e-5)
    eye = jnp.broadcast_to(jnp.eye(d), (3, d, d))
    expected = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    np.testing.assert_allclose(np.asarray(gmm.small_lower_inverse(chol)), np.asarray(expected), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1001])
def test_pairwise_sum_equals_the_sum(n):
    x = np.random.default_rng(n).normal(size=(n, 3, 2))
    np.testing.assert_allclose(gmm.pairwise_sum(jnp.asarray(x, jnp.float32)), x.sum(0), rtol=1e-5, atol=1e-5)
    assert gmm.pairwise_sum(jnp.zeros((0, 3))).shape == (3,)


def test_pairwise_sum_adds_in_halving_order_one_materialised_level_at_a_time():
    """Bit-equal to float32 halving in NumPy (the same additions in the same order), and every
    level is its own array: fused into one kernel, the chain of halvings made XLA:GPU take
    250 s over a 20-seed KDDCUP mixture fit."""
    x = np.random.default_rng(3).normal(size=(1001, 4)).astype(np.float32)
    want = x
    while len(want) > 1:
        if len(want) % 2:
            want = np.concatenate([want, np.zeros((1, 4), np.float32)])
        want = want[: len(want) // 2] + want[len(want) // 2:]
    np.testing.assert_array_equal(np.asarray(jax.jit(gmm.pairwise_sum)(x)), want[0])
    hlo = jax.jit(gmm.pairwise_sum).lower(x).as_text()
    assert hlo.count("optimization_barrier") == 10  # ceil(log2(1001)) levels


def _duplicated_curve(d_out=3, seed=0):
    """KDD-like mixture inputs: most rows are three points repeated tens of thousands of
    times (the duplicated attack rows), the rest spread along a curve, so the covariance
    is nearly singular (smallest eigenvalue ~4e-7) and float32 rounding errors of a row
    sum do not cancel (identical terms round the same way)."""
    rng = np.random.default_rng(seed)

    def curve(t):
        return np.stack([t, 0.5 - 0.2 * t + 0.05 * t**2 + 1e-3 * rng.normal(size=t.shape),
                         0.75 - 0.1 * t + 1e-3 * rng.normal(size=t.shape)], 1)

    blocks = [np.repeat(curve(np.array([v])), m, 0) for v, m in ((-1.1, 97_000), (-0.9, 16_000), (-1.3, 13_000))]
    z = np.concatenate(blocks + [curve(rng.uniform(-1.6, 0.1, 74_000))])
    if d_out > 3:  # the same curve inside a rotated higher-dimensional space
        q, _ = np.linalg.qr(rng.normal(size=(d_out, d_out)))
        z = np.concatenate([z, np.zeros((len(z), d_out - 3))], 1) @ q.T
    z = z[rng.permutation(len(z))]
    logits = np.stack([3.0 * z[:, 0], np.zeros(len(z))], 1)
    gamma = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    return z, gamma


@pytest.mark.parametrize("d", [3, gmm.SMALL_D + 2])
def test_pairwise_statistics_of_200k_duplicated_rows_match_float64(d):
    # the whole-training-set mixture fit (model.gmm_stats) sums pairwise: a plain float32 sum
    # over rows is sequential on XLA:CPU, and on DAGMM's contaminated-KDDCUP z it lost 3.6e-5,
    # turning a covariance with smallest eigenvalue 1e-6 indefinite
    z, gamma = _duplicated_curve(d)
    _, mu_ref, cov_ref = _numpy_params(z, gamma)
    zj, gj = jnp.asarray(z, jnp.float32), jnp.asarray(gamma, jnp.float32)

    @jax.jit
    def two_pass(z, g):
        first = gmm.params_from_stats(gmm.gmm_stats(z, g, pairwise=True))
        return gmm.params_from_stats(gmm.gmm_stats(z, g, shift=first.mu, pairwise=True))

    p = two_pass(zj, gj)
    np.testing.assert_allclose(p.mu, mu_ref, atol=1e-6)
    assert np.abs(np.asarray(p.cov, np.float64) - cov_ref).max() < 3e-8
    # the nearly singular directions survive (d = 3: smallest eigenvalue ~4e-7, resolved to 2%)
    eig = np.linalg.eigvalsh(np.asarray(p.cov, np.float64))
    np.testing.assert_allclose(eig, np.linalg.eigvalsh(cov_ref), rtol=0.02, atol=3e-8)
    assert bool(gmm.params_are_finite(p, gmm.DEFAULT_EPS))
