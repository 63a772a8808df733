"""Programs that compile faster and compute the same numbers: flat random draws, the
flat-drawing Dropout and initialisers, one finiteness flag per training step, and a stopped
member's epoch applied as a no-op."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from vaegmm_jax.core import draws
from vaegmm_jax.engine import training
from vaegmm_jax.nets import conv, dense

SHAPES = [(128, 10), (7, 3, 5), (4,), (3, 3, 2, 6)]
#: Flax's initialisers that nets.dense.KERNEL_INITS reproduce, by the same names
FLAX_KERNEL_INITS = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "glorot_uniform": nn.initializers.glorot_uniform(),
    "torch_uniform": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_flat_draws_equal_jax_random(shape):
    key = jax.random.PRNGKey(3)
    pairs = [
        (draws.normal(key, shape), jax.random.normal(key, shape)),
        (draws.bernoulli(key, 0.3, shape), jax.random.bernoulli(key, 0.3, shape)),
        (draws.uniform(key, shape, jnp.float32, -1.0), jax.random.uniform(key, shape, jnp.float32, -1.0)),
        (draws.truncated_normal(key, -2, 2, shape), jax.random.truncated_normal(key, -2, 2, shape)),
    ]
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


def test_flat_draws_equal_jax_random_under_vmap_and_jit():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    ours = jax.jit(jax.vmap(lambda k: draws.normal(k, (10, 2))))(keys)
    theirs = jax.vmap(lambda k: jax.random.normal(k, (10, 2)))(keys)
    np.testing.assert_array_equal(ours, theirs)


def test_dropout_masks_are_flaxs():
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 10))
    rngs = {"dropout": jax.random.PRNGKey(7)}
    ours = dense.Dropout(0.5, deterministic=False).apply({}, x, rngs=rngs)
    theirs = nn.Dropout(0.5, deterministic=False).apply({}, x, rngs=rngs)
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < int(jnp.sum(ours == 0)) < x.size  # some, not all, dropped
    np.testing.assert_array_equal(dense.Dropout(0.5, deterministic=True).apply({}, x), x)
    np.testing.assert_array_equal(dense.Dropout(1.0, deterministic=False).apply({}, x, rngs=rngs), jnp.zeros_like(x))
    with pytest.raises(ValueError, match="broadcast_dims"):
        dense.Dropout(0.5, broadcast_dims=(0,), deterministic=False).apply({}, x, rngs=rngs)


def test_mlp_with_dropout_trains_on_flaxs_masks():
    """The MLP's dropout layer keeps Flax's name and rng stream: same outputs as nn.Dropout."""
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 6))

    class FlaxMLP(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            init = FLAX_KERNEL_INITS[dense.DEFAULT_KERNEL_INIT]
            h = nn.Dropout(0.5, deterministic=not train)(jnp.tanh(nn.Dense(5, kernel_init=init)(x)))
            return nn.Dense(3, kernel_init=init)(h)

    ours_model, theirs_model = dense.MLP(features=(5, 3), dropout=0.5), FlaxMLP()
    params = ours_model.init(jax.random.PRNGKey(0), x)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(theirs_model.init(jax.random.PRNGKey(0), x)), strict=True):
        np.testing.assert_array_equal(a, b)
    rngs = {"dropout": jax.random.PRNGKey(4)}
    np.testing.assert_array_equal(ours_model.apply(params, x, train=True, rngs=rngs),
                                  theirs_model.apply(params, x, train=True, rngs=rngs))


@pytest.mark.parametrize("name", sorted(dense.KERNEL_INITS))
@pytest.mark.parametrize("shape", [(120, 60), (60, 30), (10, 2), (3, 10), (7, 1), (3, 3, 1, 32)])
def test_flat_initialisers_equal_flaxs_bit_for_bit(name, shape):
    key = jax.random.PRNGKey(5)
    ours, theirs = dense.KERNEL_INITS[name](key, shape), FLAX_KERNEL_INITS[name](key, shape)
    assert ours.dtype == theirs.dtype == jnp.float32
    np.testing.assert_array_equal(ours, theirs)


def test_conv_kernels_use_lecun_normal():
    key = jax.random.PRNGKey(8)
    np.testing.assert_array_equal(conv.kernel_init(key, (3, 3, 32, 64)),
                                  nn.initializers.lecun_normal()(key, (3, 3, 32, 64)))


def test_variance_scaling_rejects_what_it_does_not_reproduce():
    with pytest.raises(ValueError, match="fan_out"):
        dense.variance_scaling(1.0, "fan_out", "uniform")
    with pytest.raises(ValueError, match="normal"):
        dense.variance_scaling(1.0, "fan_in", "normal")
    with pytest.raises(ValueError, match="fan_in, fan_out"):
        dense.KERNEL_INITS["lecun_normal"](jax.random.PRNGKey(0), (5,))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_one_bad_element_in_any_leaf(bad):
    tree = {"a": jnp.ones((3, 4)), "b": (jnp.zeros(5), jnp.full((2,), 3.0e38))}
    assert bool(training.all_finite(tree))
    for path in (("a",), ("b", 0), ("b", 1)):
        broken = jax.tree.map(lambda v: v, tree)
        leaf = broken[path[0]] if len(path) == 1 else broken[path[0]][path[1]]
        leaf = leaf.reshape(-1).at[-1].set(bad).reshape(leaf.shape)
        if len(path) == 1:
            broken[path[0]] = leaf
        else:
            parts = list(broken[path[0]])
            parts[path[1]] = leaf
            broken[path[0]] = tuple(parts)
        assert not bool(training.all_finite(broken)), path


def _small_problem(n_leaves=8):
    widths = [4] * (n_leaves // 2) + [1]
    keys = jax.random.split(jax.random.PRNGKey(0), len(widths))
    params = [{"w": jax.random.normal(k, (4, w)) * 0.3, "b": jnp.zeros(w)} for k, w in zip(keys, widths)][: n_leaves // 2]

    def loss_fn(params, x, row_weights, key):
        h = x
        for layer in params:
            h = jnp.tanh(h @ layer["w"] + layer["b"])
        total = jnp.sum(row_weights * jnp.sum(h ** 2, axis=1)) / jnp.maximum(jnp.sum(row_weights), 1.0)
        return total, {"total": total}

    x = jax.random.normal(jax.random.PRNGKey(1), (64, 4))
    return params, loss_fn, x


def test_inactive_member_epoch_applies_no_step():
    params, loss_fn, x = _small_problem()
    opt = optax.adam(1e-2)
    epoch = jax.jit(training.make_train_epoch(loss_fn, opt, ("total",), 16))
    state = training.init_train_state(params, opt)
    stopped, _ = epoch(state, x, jax.random.PRNGKey(2), False)
    for a, b in zip(jax.tree.leaves(stopped), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    trained, result = epoch(state, x, jax.random.PRNGKey(2), True)
    assert int(trained.step) == 4 and int(result.first_bad_step) == -1
    assert not np.array_equal(jax.tree.leaves(trained.params)[1], jax.tree.leaves(state.params)[1])


def test_step_finiteness_flag_is_computed_once():
    """The flag that keeps or drops a step is one reduction, not an ``and`` of one reduction per
    leaf that XLA copied into every state leaf's select (thousands of ops to compile)."""
    n_leaves = 16
    params, loss_fn, x = _small_problem(n_leaves)
    opt = optax.adam(1e-2)
    state = training.init_train_state(params, opt)
    hlo = jax.jit(training.make_train_epoch(loss_fn, opt, ("total",), 16)).lower(
        state, x, jax.random.PRNGKey(0)).compile().as_text()
    n_and = hlo.count(" and(")
    # per-leaf flags and-ed in every select of the 3 * n_leaves state leaves: about 6 n_leaves ** 2
    assert n_and < 2 * n_leaves ** 2, n_and


def test_score_program_compiled_during_fit_serves_the_first_score():
    """CompileOptions(score_ahead=True): the fit compiles the score program for the chunk that
    scoring the training rows cuts; the first score runs it (the jitted function is never
    called) and gives the jitted program's scores bit for bit."""
    import vaegmm_jax as vj
    from vaegmm_jax.engine.config import CompileOptions, FitOptions

    X = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (600, 6)), np.float32)
    det = vj.OutlierVAEGMM(n_gmm=2, latent_dim=2, hidden=(8,), gmm_hidden=4, samples=3, seed=0)
    det.fit(X, epochs=2, batch_size=64, verbose=False, options=FitOptions(compile=CompileOptions(score_ahead=True)))
    assert len(det._score_ahead) == 1
    ahead = det.score(X)
    assert det._jitted_score(checked=True)._cache_size() == 0  # the jitted program never ran
    small = det.score(X[:100])  # another chunk shape: the jitted program
    assert det._jitted_score(checked=True)._cache_size() == 1
    det.clear_compiled()
    assert det._score_ahead == {}
    np.testing.assert_array_equal(ahead, det.score(X))
    np.testing.assert_array_equal(small, det.score(X[:100]))


def test_score_program_is_not_compiled_ahead_on_a_cpu_by_default():
    """On a CPU the extra compilation would compete with training (CompileOptions.score_ahead=None)."""
    import vaegmm_jax as vj
    from vaegmm_jax.engine.config import CompileOptions

    assert jax.default_backend() == "cpu" and not CompileOptions().compiles_score_ahead()
    X = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (300, 5)), np.float32)
    det = vj.OutlierAEGMM(n_gmm=2, latent_dim=1, hidden=(8,), gmm_hidden=4, seed=0)
    det.fit(X, epochs=1, batch_size=64, verbose=False)
    assert det._score_ahead == {}
    with pytest.raises(TypeError, match="score_ahead"):
        CompileOptions(score_ahead="yes")


def test_a_compiled_score_program_that_refuses_its_arguments_falls_back_to_the_jit():
    from vaegmm_jax.detectors.score_driver import _or_jitted

    def refuses(*args):
        raise ValueError("compiled for other shardings")

    programs = {"k": refuses}
    call = _or_jitted(programs, "k", lambda a, b: a + b)
    assert call(2, 3) == 5 and "k" not in programs  # dropped for good
    assert call(4, 5) == 9
