"""Evaluation protocols (vaegmm_jax.evaluation: splits, run data, protocols, specs, running): seeded disjoint splits, contamination, metrics, real-data smoke."""

import dataclasses

import numpy as np
import pytest

from vaegmm_jax.data import load_odds

from vaegmm_jax.detectors import presets

from vaegmm_jax import evaluation
from vaegmm_jax.evaluation import running


def _labels(n_normal=900, n_anom=100, seed=0):
    y = np.r_[np.zeros(n_normal, np.int64), np.ones(n_anom, np.int64)]
    return np.random.default_rng(seed).permutation(y)


# -- splits -------------------------------------------------------------------------------


def test_dagmm_split_disjoint_seeded_and_stratified():
    y = _labels()
    a, b, c = evaluation.dagmm_split(y, 0), evaluation.dagmm_split(y, 0), evaluation.dagmm_split(y, 1)
    for part in ("train", "test", "dropped"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))  # same seed, same split
    assert not np.array_equal(a.test, c.test)  # another seed, another split
    for s in (a, c):
        assert len(np.intersect1d(s.train, s.test)) == 0
        assert len(np.intersect1d(s.train, s.dropped)) == 0 and len(np.intersect1d(s.test, s.dropped)) == 0
        # the halves cover every row exactly once
        np.testing.assert_array_equal(np.sort(np.concatenate([s.train, s.test, s.dropped])), np.arange(len(y)))
        assert (y[s.train] == 0).all() and len(s.train) == 450  # train: the normal rows of the train half
        assert len(s.test) == 500 and y[s.test].sum() == 50  # stratified: same sizes and ratio every seed
        assert (y[s.dropped] == 1).all() and len(s.dropped) == 50


@pytest.mark.parametrize("c", [0.01, 0.02, 0.03, 0.04, 0.05])
def test_contaminated_split_keeps_the_requested_fraction(c):
    y = _labels(n_normal=8000, n_anom=2000)
    s = evaluation.dagmm_split(y, 5, contamination=c)
    n_half_anom = 1000
    kept = int(y[s.train].sum())
    assert kept == round(c * n_half_anom)
    assert len(s.dropped) == n_half_anom - kept
    assert len(np.intersect1d(s.train, s.test)) == 0
    clean = evaluation.dagmm_split(y, 5)
    np.testing.assert_array_equal(s.test, clean.test)  # contamination leaves the test half alone
    np.testing.assert_array_equal(s.train[y[s.train] == 0], clean.train)


def test_validation_split_uses_only_the_train_half():
    y = _labels(n_normal=1800, n_anom=200)
    for seed in (0, 7):
        prot = evaluation.dagmm_split(y, seed)
        v = evaluation.dagmm_validation_split(y, seed)
        np.testing.assert_array_equal(v.test, prot.test)  # the protocol's test half, untouched
        used = np.concatenate([v.train, v.val])
        assert len(np.intersect1d(used, prot.test)) == 0  # no test row is fitted on or validated on
        assert len(np.intersect1d(v.train, v.val)) == 0
        # fit rows: normal rows of the train half; validation anomalies: the train half's anomalies
        assert (y[v.train] == 0).all() and np.isin(v.train, prot.train).all()
        val_anom = v.val[y[v.val] == 1]
        np.testing.assert_array_equal(val_anom, prot.dropped)  # default: all of them
        # the train half's normals are split 75 / 25 and nothing is lost
        np.testing.assert_array_equal(np.sort(np.r_[v.train, v.val[y[v.val] == 0]]), prot.train)
        assert len(v.val[y[v.val] == 0]) == 900 // 4 and len(v.train) == 900 - 900 // 4
    a, b, c = (evaluation.dagmm_validation_split(y, s) for s in (3, 3, 4))
    for part in ("train", "val", "test", "dropped"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))  # seeded
    assert not np.array_equal(a.val, c.val)
    # anomaly_ratio subsamples the validation anomalies to that ratio; the rest are unused
    r = evaluation.dagmm_validation_split(y, 3, val_frac=0.5, anomaly_ratio=0.1)
    n_norm = int((y[r.val] == 0).sum())
    assert n_norm == 450 and int(y[r.val].sum()) == 50 and len(r.dropped) == 50
    assert len(np.intersect1d(np.r_[r.train, r.val, r.dropped], r.test)) == 0
    with pytest.raises(ValueError, match="val_frac"):
        evaluation.dagmm_validation_split(y, 0, val_frac=1.0)
    with pytest.raises(ValueError, match="anomaly_ratio"):
        evaluation.dagmm_validation_split(y, 0, anomaly_ratio=0.0)


def test_validation_runs_never_touch_test_rows():
    X, y = _separable(n_normal=800, n_anom=80)
    seeds = [0, 1]
    val = evaluation.dagmm_validation_runs((X, y), seeds)
    prot = evaluation.dagmm_runs((X, y), seeds)
    assert val.protocol == "dagmm_val" and val.threshold_rule == "ratio"
    assert val.train_idx.shape == (2, 300) and val.labels("test").shape == (2, 100 + 40)
    for i in range(2):
        test_rows = prot.indices("test")[i]
        assert len(np.intersect1d(val.train_idx[i], test_rows)) == 0
        assert len(np.intersect1d(val.indices("test")[i], test_rows)) == 0
        assert len(np.intersect1d(val.train_idx[i], val.indices("test")[i])) == 0
        np.testing.assert_array_equal(val.labels("test")[i], y[val.indices("test")[i]])
        tr = val.host("train", i)  # scaling fitted on the fit rows only
        np.testing.assert_allclose(tr.min(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(tr.max(axis=0), 1, atol=1e-6)
    # KDDCUP-Rev: the validation rows come from the same per-seed subset and train half
    Xk = np.random.default_rng(0).random((40_000, 3)).astype(np.float32)
    yk = np.r_[np.ones(10_000), np.zeros(30_000)].astype(np.int64)  # 1 = 'normal.' in the KDD protocol
    vr = evaluation.dagmm_validation_runs((Xk, yk), [5], rev=True, scaling="none")
    pr = evaluation.dagmm_runs((Xk, yk), [5], rev=True, scaling="none")
    assert len(np.intersect1d(vr.indices("test")[0], pr.indices("test")[0])) == 0
    assert np.isin(vr.train_idx[0], pr.train_idx[0]).all()
    # 25% of the train half's 5,000 normals plus all of its 12,159 attacks (of 24,319)
    assert vr.labels("test").shape == (1, 1250 + 12159) and int(vr.labels("test").sum()) == 12159


def test_split_argument_checks():
    y = _labels()
    with pytest.raises(ValueError, match="contamination"):
        evaluation.dagmm_split(y, 0, contamination=1.5)
    with pytest.raises(ValueError, match="binary"):
        evaluation.dagmm_split(np.r_[y, 2], 0)
    parts = evaluation.stratified_split(y, np.random.default_rng(0), [0.6, 0.2, 0.2])
    assert [len(p) for p in parts] == [600, 180 + 20, 180 + 20]
    assert [int(y[p].sum()) for p in parts] == [60, 20, 20]


def test_create_outlier_batch_counts():
    y = _labels()
    idx = evaluation.create_outlier_batch(y, 1000, 5, np.random.default_rng(0))
    assert len(idx) == 1000 and int(y[idx].sum()) == 50  # with replacement, like alibi-detect
    assert int(y[evaluation.create_outlier_batch(y, 1000, 0, np.random.default_rng(0))].sum()) == 0


# -- per-run data -----------------------------------------------------------------------------


def _separable(n_normal=600, n_anom=60, f=6, seed=0):
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(0.5, 0.05, (n_normal, f)), rng.normal(3.0, 0.05, (n_anom, f))].astype(np.float32)
    y = np.r_[np.zeros(n_normal), np.ones(n_anom)].astype(np.int64)
    p = rng.permutation(len(y))
    return X[p], y[p]


def test_dagmm_runs_scaling_fitted_on_training_rows():
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y), [0, 1, 2])
    assert data.train_idx.shape == (3, 300) and data.labels("test").shape == (3, 330)
    for i in range(3):
        assert len(np.intersect1d(data.train_idx[i], data.indices("test")[i])) == 0
        tr = data.host("train", i)
        np.testing.assert_allclose(tr.min(axis=0), 0, atol=1e-6)
        np.testing.assert_allclose(tr.max(axis=0), 1, atol=1e-6)
        np.testing.assert_array_equal(data.labels("test")[i], y[data.indices("test")[i]])
    dev = np.asarray(data.device("test"))
    np.testing.assert_allclose(dev[1], data.host("test", 1), rtol=1e-6, atol=1e-6)


def test_dagmm_runs_standardize_scales_every_column_on_training_rows():
    X, y = _separable()
    X[:, 0] = (X[:, 0] > 0.5).astype(np.float32)  # a one-hot-like column is standardised too
    cont = np.r_[False, np.ones(X.shape[1] - 1, bool)]
    data = evaluation.dagmm_runs((X, y, cont), [0, 1], scaling="standard")
    assert "z-score" in data.info["scaling"]
    for i in range(2):
        tr = data.host("train", i)
        np.testing.assert_allclose(tr.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(tr.std(axis=0), 1, atol=1e-4)
        raw = X[data.train_idx[i]]
        expect = (X[data.indices("test")[i]] - raw.mean(axis=0)) / raw.std(axis=0)
        np.testing.assert_allclose(data.host("test", i), expect, rtol=1e-4, atol=1e-4)
    minmax = evaluation.dagmm_runs((X, y, cont), [0], scaling="minmax").host("train", 0)
    np.testing.assert_array_equal(minmax[:, 0], X[evaluation.dagmm_runs((X, y, cont), [0]).train_idx[0], 0])
    with pytest.raises(ValueError, match="scaling must be one of"):
        evaluation.dagmm_validation_runs((X, y), [0], scaling="robust")


def test_alibi_and_mnist_run_data():
    X, y = _separable(n_normal=3000, n_anom=300)
    d = evaluation.alibi_kdd_runs((X, y), [0, 1], n_train=2000)
    tr = d.host("train", 0)
    assert tr.shape == (2000, 6)
    np.testing.assert_allclose(tr.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(tr.std(axis=0), 1, atol=1e-3)
    assert d.labels("threshold").shape == (2, 1000) and d.labels("threshold").sum(axis=1).tolist() == [50, 50]
    assert d.labels("test").sum(axis=1).tolist() == [100, 100]

    rng = np.random.default_rng(0)
    images = rng.random((200, 28, 28, 1)).astype(np.float32)
    m = evaluation.contaminated_mnist_runs(images, rng.integers(0, 10, 200), [0, 1])
    assert m.train_idx.shape[0] == 2 and m.source.shape == (2 * 206, 28, 28, 1)
    for i in range(2):
        idx = [m.train_idx[i], m.indices("val")[i], m.indices("test")[i]]
        assert sum(len(a) for a in idx) == 206 and len(np.unique(np.concatenate(idx))) == 206
        assert all((a >= 206 * i).all() and (a < 206 * (i + 1)).all() for a in idx)  # each run: its own set


def test_subset_runs_equal_the_full_runs_and_keep_their_fingerprints():
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y, None, "separable"), [0, 1, 2])
    tiny = presets.DAGMMPreset(name="tiny", n_features=6, hidden=(8, 4), latent_dim=1, n_gmm=2, epochs=2,
                               batch_size=128, anomaly_ratio=0.1, paper_f1=float("nan"))
    spec = evaluation.dagmm_spec(tiny)
    full = evaluation.run_protocol(data, spec)
    part = data.subset([2, 0])
    assert part.seeds == (2, 0) and part.train_idx.shape == (2, 300)
    np.testing.assert_array_equal(part.host("train", 0), data.host("train", 2))
    rows = evaluation.run_protocol(part, spec)
    for row, i in zip(rows, (2, 0)):  # the runs of one program are independent of the others
        assert row["seed"] == full[i]["seed"]
        for k in ("f1", "auroc", "ap", "threshold"):
            assert row[k] == pytest.approx(full[i][k], rel=1e-5), (k, i)
        assert row["final_loss"]["total"] == pytest.approx(full[i]["final_loss"]["total"], rel=1e-5)
    assert [part.fingerprint(0), part.fingerprint(1)] == [data.fingerprint(2), data.fingerprint(0)]
    assert len({data.fingerprint(i) for i in range(3)}) == 3
    # a different transform of the same rows is a different run
    assert evaluation.dagmm_runs((X, y), [0], scaling="standard").fingerprint(0) != data.fingerprint(0)
    for bad in ([], [0, 0], [5]):
        with pytest.raises(ValueError, match="non-empty selection"):
            data.subset(bad)


def test_fingerprints_hash_the_transform_definition_not_its_rounding():
    """A GPU and a CPU fit the same min-max transform up to the last bit: the runs must match."""
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y, None, "separable"), [0, 1])
    before = data.fingerprint(1)
    moved = dataclasses.replace(data, scale=np.nextafter(data.scale, np.float32(2)), _fingerprints={})
    assert moved.fingerprint(1) == before
    cont = np.zeros(X.shape[1], bool)
    cont[:3] = True  # min-max on other columns: another run
    assert evaluation.dagmm_runs((X, y, cont, "separable"), [1]).fingerprint(0) != before
    with pytest.raises(ValueError, match="definition"):
        dataclasses.replace(data, transform="", _fingerprints={}).fingerprint(0)


def test_transform_definitions_keep_the_words_the_stored_runs_were_keyed_with():
    """A run store keys runs by this text: z-scoring is 'standard' now but was hashed as 'standardize'."""
    cols = np.array([True, False, True])
    digest = "c571327cb01ac1de6972713cbf6cc1fc3c2cab8b581ee0bc3fe6d8b56963fd5b"
    assert evaluation.transform_definition("minmax", cols) == f"minmax fitted on the training rows, columns {digest}"
    assert (evaluation.transform_definition("standard", cols)
            == f"standardize fitted on the training rows, columns {digest}")


def test_fingerprints_follow_the_rows_not_their_place_in_the_source():
    rng = np.random.default_rng(0)
    images = rng.random((200, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 200)
    both = evaluation.contaminated_mnist_runs(images, labels, [0, 1])
    alone = evaluation.contaminated_mnist_runs(images, labels, [1])
    assert both.train_idx[1].min() >= 206 and alone.train_idx[0].max() < 206  # different offsets
    assert alone.fingerprint(0) == both.fingerprint(1) != both.fingerprint(0)


def test_metric_rules():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(90), np.ones(10)].astype(np.int64)
    s = y * 10.0 + rng.normal(size=100)
    m = running.threshold_metrics("ratio", None, {"test": s}, {"test": y})
    assert m["f1"] == pytest.approx(1.0) and m["auroc"] == pytest.approx(1.0)
    m = running.threshold_metrics("percentile", 90.0, {"test": s, "threshold": s}, {"test": y, "threshold": y})
    assert m["recall"] == pytest.approx(1.0)
    m = running.threshold_metrics("f1_val", None, {"test": s, "val": s}, {"test": y, "val": y})
    assert m["f1"] == pytest.approx(1.0)


# -- end to end ---------------------------------------------------------------------------------


def test_protocol_on_trivially_separable_data():
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y, None, "separable"), [0, 1])
    tiny = presets.DAGMMPreset(name="tiny", n_features=6, hidden=(8, 4), latent_dim=1, n_gmm=2, epochs=1,
                               batch_size=128, anomaly_ratio=0.1, paper_f1=float("nan"))
    for spec in (evaluation.random_init_spec(tiny), evaluation.isolation_forest_spec(n_estimators=50)):
        runs = evaluation.run_protocol(data, spec)
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            assert r["ok"] and r["n_train"] == 300 and r["n_test"] == 330
            assert r["f1"] == pytest.approx(1.0) and r["auroc"] == pytest.approx(1.0), (spec.name, r)
        summ = evaluation.summarize(runs)
        assert summ["f1"][0] == pytest.approx(1.0) and summ["n_failed"] == 0


def test_run_protocol_reports_the_final_training_loss_of_each_run():
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y, None, "separable"), [0, 1])
    tiny = presets.DAGMMPreset(name="tiny", n_features=6, hidden=(8, 4), latent_dim=1, n_gmm=2, epochs=3,
                               batch_size=128, anomaly_ratio=0.1, paper_f1=float("nan"))
    spec = evaluation.dagmm_spec(tiny)
    runs = evaluation.run_protocol(data, spec)
    for r in runs:
        loss = r["final_loss"]
        assert set(loss) == {"recon", "energy", "cov_diag", "kl", "total"}
        # the objective's weighting (lambda1 0.1, lambda2 0.005) holds for the reported epoch means
        assert loss["total"] == pytest.approx(loss["recon"] + 0.1 * loss["energy"] + 0.005 * loss["cov_diag"],
                                              rel=1e-4, abs=1e-5)
    # seed 1's figure is the last epoch of a single detector trained on the same rows with seed 1
    hist = spec.factory(1).fit(data.host("train", 1), **spec.fit_args)
    assert runs[1]["final_loss"]["total"] == pytest.approx(hist["total"][-1], rel=1e-4)
    assert runs[0]["final_loss"]["total"] != pytest.approx(runs[1]["final_loss"]["total"], rel=1e-6)
    assert np.isnan(running.last_finite(np.array([np.nan, np.nan])))
    assert running.last_finite(np.array([1.0, 2.0, np.nan])) == 2.0


def test_restarts_keep_the_lowest_training_energy_and_restart_0_is_the_single_run():
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y, None, "separable"), [0, 1])
    tiny = presets.DAGMMPreset(name="tiny", n_features=6, hidden=(8, 4), latent_dim=1, n_gmm=2, epochs=3,
                               batch_size=128, anomaly_ratio=0.1, paper_f1=float("nan"))
    single = evaluation.run_protocol(data, evaluation.dagmm_spec(tiny))
    spec = evaluation.dagmm_spec(tiny, restarts=3)
    assert "best of 3 restarts by final training energy" in spec.description
    runs = evaluation.run_protocol(data, spec)
    for one, best in zip(single, runs):
        losses = best["restart_losses"]
        assert len(losses) == 3 and len(set(losses)) == 3  # distinct models
        assert losses[0] == pytest.approx(one["final_loss"]["energy"], rel=1e-5)
        assert best["restart"] == int(np.argmin(losses))
        assert best["final_loss"]["energy"] == pytest.approx(min(losses), rel=1e-6)
    # restart r of run 0 is a single run with model seed 0 + r * stride on run 0's rows
    r = 2
    det = spec.factory(evaluation.RESTART_SEED_STRIDE * r)
    hist = det.fit(data.host("train", 0), **spec.fit_args)
    assert runs[0]["restart_losses"][r] == pytest.approx(hist["energy"][-1], rel=1e-4)


def test_run_protocol_trains_a_vae_which_has_no_energy_term():
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y, None, "separable"), [0, 1])
    spec = evaluation.vae_spec(None, epochs=3, batch_size=128, latent_dim=1, hidden=(8,), score_type="mse", samples=2)
    runs = evaluation.run_protocol(data, spec)
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert r["ok"] and "energy" not in r["final_loss"] and "restart" not in r
        assert np.isfinite(r["final_loss"]["total"]) and r["auroc"] > 0.9, r


def test_restart_choice_skips_failed_restarts_and_bad_specs():
    from types import SimpleNamespace

    nan = float("nan")
    # 2 runs x 3 restarts, model r * 2 + i; run 0's lowest energy (model 2) failed
    fit = SimpleNamespace(ok=np.array([True, True, False, True, True, False]),
                          history={"energy": np.array([[5.0, 3.0], [4.0, 2.0], [1.0, 0.0], [9.0, 1.0],
                                                       [6.0, 2.5], [nan, nan]])})
    np.testing.assert_array_equal(running.pick_restarts(fit, 2, 3, "energy"), [4, 3])
    all_failed = SimpleNamespace(ok=np.zeros(2, bool), history={"energy": np.zeros((2, 1))})
    np.testing.assert_array_equal(running.pick_restarts(all_failed, 1, 2, "energy"), [0])
    with pytest.raises(ValueError, match="restarts must be a positive integer"):
        evaluation.dagmm_spec("thyroid", restarts=0)
    with pytest.raises(ValueError, match="not to sklearn"):
        evaluation.DetectorSpec(name="x", sklearn_factory=lambda s: None, restarts=2)
    X, y = _separable()
    data = evaluation.dagmm_runs((X, y), [0])
    with pytest.raises(ValueError, match="restart_select must be a loss term.*'recon'"):
        evaluation.run_protocol(data, evaluation.dagmm_spec("thyroid", restarts=2, restart_select="likelihood"))


def test_thyroid_smoke(data_dir):
    ds = load_odds("thyroid", data_dir)
    data = evaluation.dagmm_runs(ds, [0, 1])
    assert data.info["n_train"] == 1839 and data.info["n_test"] == 1887
    runs = evaluation.run_protocol(data, evaluation.dagmm_spec("thyroid", epochs=3))
    for r in runs:
        assert r["ok"] and r["epochs"] == 3
        assert 0.0 <= r["f1"] <= 1.0 and r["precision"] == pytest.approx(r["recall"], abs=0.05)
        assert r["auroc"] > 0.6  # far better than chance even barely trained (paper setting: 20,000 epochs)
