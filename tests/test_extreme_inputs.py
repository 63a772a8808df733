"""Nothing silently wrong: extreme but finite rows, NaN scores and thresholds, chunking tolerance."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaegmm_jax as vj
from vaegmm_jax.engine.scoring import SCORE_INPUT_LIMIT, flag_outliers, percentile_threshold

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 6)).astype(np.float32)
FACTORS = (1.0, 10.0, 1e3, 1e6, 1e10, 1e20, 1e30, 3e38)
SMALL = {
    vj.OutlierVAEGMM: dict(hidden=(8, 4), gmm_hidden=6, samples=3),
    vj.OutlierAEGMM: dict(hidden=(8, 4), gmm_hidden=6),
    vj.OutlierVAE: dict(hidden=(8, 4), samples=3),
}
CLASSES = list(SMALL)


@pytest.fixture(scope="module", params=CLASSES + ["vae_recon_prob", "paper_energy"],
                ids=lambda c: getattr(c, "__name__", c))
def fitted(request):
    if request.param == "vae_recon_prob":
        det = vj.OutlierVAE(score_type="recon_prob", seed=0, **SMALL[vj.OutlierVAE])
    elif request.param == "paper_energy":  # no scaler, the paper's energy: the raw rows reach the nets
        det = vj.OutlierVAEGMM(seed=0, scaler=None, score_type="energy", **SMALL[vj.OutlierVAEGMM])
    else:
        det = request.param(seed=0, **SMALL[request.param])
    det.fit(X, epochs=2, batch_size=64, verbose=False)
    return det


def test_extreme_rows_score_finite_and_most_outlying(fitted):
    """Rows x 1e20, 1e30, 3e38 (and -) score finite, never below a closer row's score."""
    base = X[3].astype(np.float64) / np.abs(X[3]).max()  # the largest entry is +-1: x 3e38 stays finite
    rows = np.stack([base * f for f in FACTORS] + [-base * f for f in FACTORS]).astype(np.float32)
    assert np.isfinite(rows).all()
    scores = fitted.score(rows)
    assert np.isfinite(scores).all(), scores
    ordinary = fitted.score(X).max()
    for sign in (0, len(FACTORS)):
        s = scores[sign: sign + len(FACTORS)]
        # the distance dominates from 1e3 on: farther scores higher, up to the input limit (1e9)...
        assert s[2] < s[3] < s[4], s
        # ...and every row beyond it scores at least as high as the row at 1e6 (they are clipped per
        # value to +-1e9, and sampled scores draw other noise per row, so they need not be ordered)
        assert (s[4:] > s[3]).all() and s[3] > ordinary, (s, ordinary)
    # the farthest rows are flagged by any threshold inferred on ordinary rows
    fitted.infer_threshold(X, threshold_perc=99)
    flags = fitted.predict(rows)["data"]["is_outlier"]
    assert flags[[5, 6, 7, 13, 14, 15]].all()


def test_chunking_changes_scores_only_by_rounding(fitted):
    """The documented tolerance: |score(batch b) - score(default)| <= 1e-5 x max(1, |score|)."""
    rows = np.concatenate([X[:60], 50 * X[:3]])
    reference = fitted.score(rows)
    for batch in (1, 7, 16, 50, 2048):
        got = fitted.score(rows, batch_size=batch)
        np.testing.assert_array_less(np.abs(got - reference), 1e-5 * np.maximum(1.0, np.abs(reference)) + 1e-30)


def test_nan_scores_are_never_inliers_and_never_thresholds():
    scores = np.array([0.1, np.nan, 5.0, -np.inf, np.inf], np.float32)
    np.testing.assert_array_equal(flag_outliers(scores, 1.0), [0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="3 scores are not finite.*index \\(1,\\)"):
        percentile_threshold(scores, 95)
    assert percentile_threshold(np.array([1.0, 2.0, 3.0]), 50) == 2.0


def test_nan_thresholds_are_refused(fitted):
    with pytest.raises(ValueError, match="threshold"):
        type(fitted)(threshold=float("nan"))
    saved = fitted.threshold
    try:
        fitted.threshold = float("nan")  # set by hand
        with pytest.raises(ValueError, match="finite"):
            fitted.predict(X[:4])
    finally:
        fitted.threshold = saved


def test_extreme_rows_do_not_change_their_neighbours_scores(fitted):
    """The limit acts per value: ordinary rows score the same beside extreme rows in one chunk."""
    assert SCORE_INPUT_LIMIT ** 2 * 1e4 < np.finfo(np.float32).max  # squared errors of 1e4 features stay finite
    mixed = np.concatenate([X[:20], np.full((4, 6), 3e38, np.float32)])
    np.testing.assert_array_equal(fitted.score(mixed, batch_size=32)[:20], fitted.score(X[:20], batch_size=32))


# ---------------------------------------------------------------------------------------------
# property-based: any input either raises the documented error or scores finite
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_aegmm():
    det = vj.OutlierAEGMM(seed=2, **SMALL[vj.OutlierAEGMM])
    det.fit(X, epochs=1, batch_size=64, verbose=False)
    return det


_MAGNITUDE = st.sampled_from([0.0, 1e-30, 1.0, 1e5, 1e18, 1e30, 3.4e38])
_SPECIAL = st.sampled_from([None, np.nan, np.inf, -np.inf])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(0, 9), cols=st.sampled_from([6, 5, 7]), magnitude=_MAGNITUDE, special=_SPECIAL,
       where=st.integers(0, 1000), dtype=st.sampled_from(["float32", "float64", "float16", "int32", "bool"]),
       seed=st.integers(0, 2 ** 16))
def test_any_input_raises_clearly_or_scores_finite(small_aegmm, rows, cols, magnitude, special, where, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)) * magnitude
    if special is not None and x.size:
        x.flat[where % x.size] = special
    with np.errstate(all="ignore"):
        x = x.astype(dtype) if dtype != "bool" else x > 0
    valid = (rows > 0 and cols == 6 and dtype not in ("bool",) and np.isfinite(np.asarray(x, np.float64)).all())
    if valid:
        scores = small_aegmm.score(x)
        assert scores.shape == (rows,) and np.isfinite(scores).all()
    else:
        with pytest.raises((ValueError, TypeError)) as err:
            small_aegmm.score(x)
        message = str(err.value)
        assert any(word in message for word in ("shape", "finite", "NaN", "inf", "dtype", "rows", "bool", "empty",
                                                 "feature", "row")), message


@pytest.mark.parametrize("cls", [vj.OutlierVAEGMM, vj.OutlierAEGMM, vj.OutlierVAE], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden=(0,)), "hidden"), (dict(hidden=(-3,)), "hidden"), (dict(hidden=()), "hidden"),
    (dict(hidden=8), "hidden"), (dict(activation="bogus"), "activation"), (dict(seed="abc"), "seed"),
    (dict(seed=1.5), "seed"), (dict(seed=True), "seed"), (dict(seed=[1, "x"]), "seed"),
    (dict(n_members=0), "n_members"), (dict(n_members=2.0), "n_members"),
])
def test_bad_constructor_arguments_fail_at_construction(cls, kwargs, words):
    with pytest.raises(ValueError, match=words):
        cls(**kwargs)


def test_bad_method_arguments_fail_clearly(small_aegmm):
    with pytest.raises(TypeError, match="PRNG key"):
        small_aegmm.score(X[:4], key=5)
    for perc in ("95", True, float("nan"), 101):
        with pytest.raises(ValueError, match="threshold_perc"):
            small_aegmm.infer_threshold(X, threshold_perc=perc)
    with pytest.raises(TypeError, match="bool"):
        small_aegmm.score(X[:4] > 0)
    with pytest.raises(ValueError, match="gmm_hidden"):
        vj.OutlierAEGMM(gmm_hidden=0)
    with pytest.raises(ValueError, match="gmm_dropout"):
        vj.OutlierAEGMM(gmm_dropout=1.0)
    # a typed key works like a raw one
    import jax

    assert np.isfinite(small_aegmm.score(X[:4], key=jax.random.key(3))).all()


def test_import_does_not_start_the_jax_backend():
    """A user must be able to call jax.distributed.initialize() after importing the library."""
    import subprocess
    import sys

    code = ("import jax._src.xla_bridge as xb, vaegmm_jax, vaegmm_jax.cli, vaegmm_jax.evaluation.multiseed; "
            "assert not xb.backends_are_initialized(), 'importing vaegmm_jax started the JAX backend'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
