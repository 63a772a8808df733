"""The ``vaegmm`` command line, run as a subprocess (``python -m vaegmm_jax``).

JAX compilation dominates the cost here, so ONE small model is fitted per module
(a module-scoped fixture) and reused by the score / evaluate / info tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_FEATURES = 5
FEATURES = [f"feat_{i}" for i in range(N_FEATURES)]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("VAEGMM_DEBUG", None)
    # the command's compilation cache (on by default) next to the test suite's, not the user's
    env.setdefault("VAEGMM_CACHE_DIR", str(Path.home() / ".cache" / "vaegmm_jax_tests_xla" / "cli"))
    env.update(extra)
    return env


def start_cli(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaegmm_jax", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(**(env or {})))


def finish(proc: subprocess.Popen, timeout: float = 400) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args, timeout: float = 400) -> subprocess.CompletedProcess:
    return finish(start_cli(*args), timeout)


def run_cli_many(*arg_lists) -> list[subprocess.CompletedProcess]:
    """Runs several commands at once (each spends most of its time importing JAX)."""
    procs = [start_cli(*a) for a in arg_lists]
    return [finish(p) for p in procs]


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_bad_input(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2 and exactly one line on stderr, without a traceback."""
    assert proc.returncode == 2, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), lines[0]
    return lines[0]


def live(model) -> Path:
    """The folder of a model's live version (where fit wrote detector, preprocessing, card and plots)."""
    model = Path(model)
    pointer = model / "CURRENT"
    return model / json.loads(pointer.read_text())["version"] if pointer.is_file() else model


def assert_png(path: Path) -> None:
    from matplotlib.image import imread

    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert float(np.var(img[..., :3])) > 1e-3, f"{path} looks blank"


def make_rows(n: int, rng: np.random.Generator, outlier_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Correlated features around a 2-D structure; outliers break the correlation."""
    t = rng.normal(size=(n, 2))
    mix = np.array([[1.0, 0.5, -0.3, 0.8, 0.2], [0.2, -0.7, 0.9, 0.1, 0.6]])
    X = t @ mix + 0.05 * rng.normal(size=(n, N_FEATURES)) + 3.0
    y = (rng.random(n) < outlier_frac).astype(int)
    X[y == 1] += rng.normal(scale=2.5, size=(int(y.sum()), N_FEATURES))
    return X.astype(np.float32), y


def write_frame(path: Path, X: np.ndarray, ids, y=None, extra: dict | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "row_id", ids)
    if y is not None:
        frame["label"] = y
    for k, v in (extra or {}).items():
        frame[k] = v
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    return frame


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo, started in the background so that its JAX compilation overlaps the fit below."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    proc = start_cli("demo", "--out", out, "--epochs", 5, "--quiet")
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def work(tmp_path_factory, demo_run):
    """Data files and ONE fitted model (VAEGMM, few epochs), shared by the module."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X_train, y_train = make_rows(240, rng, 0.05)
    X_test, y_test = make_rows(150, rng, 0.2)
    y_test[:2] = [0, 1]  # both classes for sure
    train_ids = [f"tr{i:04d}" for i in range(len(X_train))]
    test_ids = [f"id{j:05d}" for j in rng.permutation(100000)[: len(X_test)]]  # unsorted, string ids
    write_frame(root / "train.csv", X_train, train_ids, y_train, extra={"note": "text"})
    test_frame = write_frame(root / "test.csv", X_test, test_ids, y_test)
    config = {
        "detector": {"n_gmm": 2, "latent_dim": 1, "samples": 2, "hidden": [8, 4]},
        "fit": {"learning_rate": 3e-3, "w_recon": 1e-3},
        "threshold_perc": 90,
    }
    (root / "cfg.json").write_text(json.dumps(config))
    model = root / "model"
    proc = run_cli(
        "fit", root / "train.csv", "--detector", "vaegmm", "--config", root / "cfg.json", "--out", model,
        "--exclude-columns", "note", "--id-column", "row_id", "--label-column", "label",
        "--epochs", 3, "--batch-size", 64, "--seed", 1, "--scaling", "standard",
    )
    assert_ok(proc)
    return {"root": root, "model": model, "fit_proc": proc, "test_frame": test_frame,
            "X_test": X_test, "y_test": y_test, "test_ids": test_ids}


# --------------------------------------------------------------------------- #
# fit / info
# --------------------------------------------------------------------------- #


def test_fit_writes_model_preprocessing_and_card(work):
    model = live(work["model"])
    assert sorted(p.name for p in work["model"].iterdir()) == ["CURRENT", model.name]
    for name in ("detector.json", "preprocessing.json", "model_card.json", "plots/training_curves.png",
                 "plots/score_histogram.png"):
        assert (model / name).is_file(), name
    assert_png(model / "plots" / "training_curves.png")
    prep = json.loads((model / "preprocessing.json").read_text())
    assert prep["feature_names"] == FEATURES  # id, label and the excluded text column are not features
    assert prep["id_column"] == "row_id" and prep["label_column"] == "label"
    assert prep["scaler"]["kind"] == "standard" and len(prep["scaler"]["mean"]) == N_FEATURES
    card = json.loads((model / "model_card.json").read_text())
    assert card["detector"]["class"] == "OutlierVAEGMM"
    assert card["detector"]["config"]["n_gmm"] == 2 and card["detector"]["config"]["samples"] == 2
    assert card["threshold"]["method"] == "percentile" and card["threshold"]["percentile"] == 90
    assert np.isfinite(card["threshold"]["value"])
    assert card["data"]["feature_names"] == FEATURES and card["data"]["row_shape"] == [N_FEATURES]
    assert card["data"]["n_rows_train"] < card["data"]["n_rows_file"]  # labelled outliers left out
    assert set(card["history"]) >= {"recon", "energy", "total"} and len(card["history"]["total"]) == 3
    assert card["training"]["learning_rate"] == 3e-3 and card["training"]["fit_config"]["epochs"] == 3
    assert {"jax", "flax", "numpy", "vaegmm_jax"} <= set(card["versions"])
    assert card["device"]["backend"] and card["created_at"]
    assert 0.0 <= card["metrics"]["training_file"]["auroc"] <= 1.0
    assert "threshold" in work["fit_proc"].stdout


def test_info_human_and_json(work):
    proc, proc_json = run_cli_many(["info", work["model"]], ["info", work["model"], "--json"])
    assert_ok(proc)
    for frag in ("OutlierVAEGMM", "threshold", "90th percentile", "feat_0", "standard", "row_id", "energy"):
        assert frag in proc.stdout, frag
    proc = proc_json
    assert_ok(proc)
    info = json.loads(proc.stdout)
    assert info["detector"] == "OutlierVAEGMM"
    assert info["input_shape"] == [N_FEATURES]
    assert info["preprocessing"]["feature_names"] == FEATURES
    assert info["threshold_method"]["method"] == "percentile"
    assert info["history_summary"]["total"]["epochs"] == 3
    assert info["versions"]["jax"]


# --------------------------------------------------------------------------- #
# score
# --------------------------------------------------------------------------- #


def test_score_csv_keeps_rows_ids_and_order_in_chunks(work):
    root = work["root"]
    out = root / "scores.csv"
    proc = run_cli("score", root / "test.csv", "--model", work["model"], "--out", out, "--chunk-rows", 16)
    assert_ok(proc)
    res = pd.read_csv(out, dtype={"row_id": str})
    assert list(res.columns) == ["row_id", "score", "is_outlier"]
    assert len(res) == len(work["test_frame"])
    assert res["row_id"].tolist() == work["test_ids"]
    assert np.isfinite(res["score"]).all()
    threshold = json.loads((live(work["model"]) / "detector.json").read_text())["threshold"]
    np.testing.assert_array_equal(res["is_outlier"].to_numpy(), (res["score"].to_numpy() > threshold).astype(int))
    work["csv_scores"] = res["score"].to_numpy()


def test_score_parquet_and_npy_match_csv(work):
    """Other formats, one chunk vs many: identical scores for identical rows."""
    root = work["root"]
    if "csv_scores" not in work:  # that test ran in another worker: score the CSV here
        out = root / "scores_here.csv"
        assert_ok(run_cli("score", root / "test.csv", "--model", work["model"], "--out", out, "--chunk-rows", 16))
        work["csv_scores"] = pd.read_csv(out, dtype={"row_id": str})["score"].to_numpy()
    pytest.importorskip("pyarrow")
    write_frame(root / "test.parquet", work["X_test"], work["test_ids"])
    out_pq = root / "scores.parquet"
    # an NPY matrix has no names (its columns are f0, f1, ...): a model fitted on named columns refuses it
    np.save(root / "test.npy", work["X_test"])
    proc, npy_proc = run_cli_many(
        ["score", root / "test.parquet", "--model", work["model"], "--out", out_pq, "--chunk-rows", 100],
        ["score", root / "test.npy", "--model", work["model"], "--out", root / "s.npy"],
    )
    assert_ok(proc)
    res = pd.read_parquet(out_pq)
    assert res["row_id"].tolist() == work["test_ids"]
    np.testing.assert_allclose(res["score"].to_numpy(), work["csv_scores"], rtol=1e-5, atol=1e-5)
    assert_bad_input(npy_proc, "not found")


# --------------------------------------------------------------------------- #
# evaluate
# --------------------------------------------------------------------------- #


def test_evaluate_prints_metrics_and_writes_plots(work):
    out = work["root"] / "eval"
    proc = run_cli("evaluate", work["root"] / "test.csv", "--labels", "label", "--model", work["model"], "--out", out)
    assert_ok(proc)
    for frag in ("precision @ threshold", "recall @ threshold", "F1 @ threshold", "AUROC", "average precision"):
        assert frag in proc.stdout, frag
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_rows"] == len(work["y_test"]) and m["n_outliers"] == int(work["y_test"].sum())
    assert 0.0 <= m["auroc"] <= 1.0 and 0.0 <= m["average_precision"] <= 1.0
    for name in ("score_histogram.png", "roc_pr.png", "mixture.png", "training_curves.png"):
        assert_png(out / name)
    card = json.loads((live(work["model"]) / "model_card.json").read_text())
    assert card["metrics"]["test.csv"]["auroc"] == pytest.approx(m["auroc"])


# --------------------------------------------------------------------------- #
# bad input: exit code 2 and one line
# --------------------------------------------------------------------------- #


def test_malformed_csv(work, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n")
    assert_bad_input(run_cli("fit", bad, "--detector", "aegmm", "--out", tmp_path / "m"), "malformed")
    assert not (tmp_path / "m").exists()


def test_missing_columns(work, tmp_path):
    root = work["root"]
    # scoring a file that lacks one of the model's feature columns
    frame = work["test_frame"].drop(columns=["feat_3"])
    frame.to_csv(tmp_path / "short.csv", index=False)
    fit_proc, score_proc = run_cli_many(
        ["fit", root / "train.csv", "--detector", "aegmm", "--columns", "feat_0,nope", "--out", tmp_path / "m"],
        ["score", tmp_path / "short.csv", "--model", work["model"], "--out", tmp_path / "s.csv"],
    )
    assert_bad_input(fit_proc, "'nope'", "not found")
    assert_bad_input(score_proc, "feat_3")
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "m").exists()


def test_nan_cells(work, tmp_path):
    frame = work["test_frame"].copy()
    frame.loc[7, "feat_2"] = np.nan
    frame.to_csv(tmp_path / "nan.csv", index=False)
    line = assert_bad_input(
        run_cli("score", tmp_path / "nan.csv", "--model", work["model"], "--out", tmp_path / "s.csv"), "nan", "feat_2"
    )
    assert "row 8" in line


def test_wrong_model_folder(work, tmp_path):
    data = work["root"] / "test.csv"
    (tmp_path / "not_a_model").mkdir()
    missing, evaluate, info = run_cli_many(
        ["score", data, "--model", tmp_path / "missing", "--out", tmp_path / "s.csv"],
        ["evaluate", data, "--labels", "label", "--model", tmp_path / "not_a_model"],
        ["info", tmp_path / "not_a_model"],
    )
    assert_bad_input(missing, "model")
    assert_bad_input(evaluate, "not a model folder")
    assert_bad_input(info, "not a model folder")


def test_unknown_preset(work, tmp_path):
    proc = run_cli("fit", work["root"] / "train.csv", "--preset", "no_such_preset_xyz", "--out", tmp_path / "m",
                   "--exclude-columns", "note,row_id,label")
    assert_bad_input(proc, "preset")


def test_bad_usage_is_one_line(tmp_path):
    no_out, bad_ext = run_cli_many(
        ["fit", "x.csv"], ["score", tmp_path / "x.csv", "--model", tmp_path, "--out", tmp_path / "s.xlsx"]
    )
    assert_bad_input(no_out, "--out")
    assert_bad_input(bad_ext, "unsupported output")


def test_refuses_to_replace_a_non_model_folder(work, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run_cli("fit", work["root"] / "train.csv", "--detector", "aegmm", "--out", tmp_path,
                   "--exclude-columns", "note,row_id,label")
    assert_bad_input(proc, "not a model folder")
    assert (tmp_path / "precious.txt").read_text() == "keep me"


# --------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------- #


def test_demo_end_to_end(demo_run):
    proc, out = demo_run
    proc = finish(proc)
    assert_ok(proc)
    for frag in ("precision @ threshold", "recall @ threshold", "F1 @ threshold", "AUROC"):
        assert frag in proc.stdout, frag
    assert (live(out / "model") / "detector.json").is_file() and (live(out / "model") / "model_card.json").is_file()
    scores = pd.read_csv(out / "scores.csv")
    assert {"id", "label", "score", "is_outlier"} <= set(scores.columns) and np.isfinite(scores["score"]).all()
    for name in ("training_curves.png", "score_histogram.png", "roc_pr.png", "mixture.png"):
        assert_png(out / "plots" / name)
    m = json.loads((out / "metrics.json").read_text())
    assert 0.5 < m["auroc"] <= 1.0  # even a briefly trained detector ranks malignant rows higher


# --------------------------------------------------------------------------- #
# io.tables and io.preprocessing in process (no JAX work)
# --------------------------------------------------------------------------- #


def test_chunked_reading_equals_whole_file(tmp_path):
    from vaegmm_jax.io import tables as tio
    from vaegmm_jax.io.preprocessing import Scaler

    rng = np.random.default_rng(3)
    X = rng.normal(size=(53, N_FEATURES)).astype(np.float32)
    ids = [f"r{i}" for i in rng.permutation(53)]
    write_frame(tmp_path / "d.tsv", X, ids)
    np.save(tmp_path / "d.npy", X)
    whole = tio.read_table(tmp_path / "d.tsv", id_column="row_id")
    blocks = list(tio.iter_tables(tmp_path / "d.tsv", chunk_rows=10, id_column="row_id"))
    assert [b.n_rows for b in blocks] == [10] * 5 + [3]
    np.testing.assert_array_equal(np.concatenate([b.X for b in blocks]), whole.X)
    assert np.concatenate([b.ids for b in blocks]).tolist() == ids == whole.ids.tolist()
    npy_blocks = list(tio.iter_tables(tmp_path / "d.npy", chunk_rows=20, columns=["f1", "f3"]))
    np.testing.assert_array_equal(np.concatenate([b.X for b in npy_blocks]), X[:, [1, 3]])
    for kind in ("minmax", "standard"):
        sc = Scaler.fit(X, kind)
        back = Scaler.from_dict(json.loads(json.dumps(sc.to_dict())))
        np.testing.assert_array_equal(back.transform(X), sc.transform(X))
    assert np.allclose(Scaler.fit(X, "minmax").transform(X).min(0), 0)


def test_fit_and_score_an_ensemble(work, tmp_path):
    """--members M: one model folder holding every member; its scores are the ensemble's."""
    root = work["root"]
    model = tmp_path / "ens"
    proc = run_cli("fit", root / "train.csv", "--detector", "aegmm", "--members", 3, "--out", model,
                   "--exclude-columns", "note", "--id-column", "row_id", "--label-column", "label",
                   "--epochs", 2, "--batch-size", 64, "--seed", 4, "--no-plots", "--quiet")
    assert_ok(proc)
    card = json.loads((live(model) / "model_card.json").read_text())
    assert card["detector"]["ensemble"]["n_members"] == 3 and card["detector"]["ensemble"]["member_seeds"] == [4, 5, 6]
    out = tmp_path / "s.csv"
    proc, bad = run_cli_many(["score", root / "test.csv", "--model", model, "--out", out],
                             ["fit", root / "train.csv", "--detector", "aegmm", "--members", 0, "--out", tmp_path / "x"])
    assert_ok(proc)
    assert_bad_input(bad, "--members")
    res = pd.read_csv(out, dtype={"row_id": str})
    from vaegmm_jax import load_detector

    det = load_detector(model)
    assert det.n_members == 3
    from vaegmm_jax.io.preprocessing import Scaler

    scaler = Scaler.from_dict(json.loads((live(model) / "preprocessing.json").read_text())["scaler"])
    expected = det.score(scaler.transform(work["X_test"]))
    np.testing.assert_allclose(res["score"].to_numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(det.score_members(scaler.transform(work["X_test"])).shape, (3, len(expected)))
    assert res["row_id"].tolist() == work["test_ids"] and np.isfinite(res["score"]).all()


# --------------------------------------------------------------------------- #
# bad input caught before any work, and damaged models named
# --------------------------------------------------------------------------- #


def test_bad_input_is_refused_in_one_line_before_any_work(work, tmp_path):
    """End to end (subprocesses): an unusable threshold at parsing, a model whose detector.json names
    no detector class, and a garbled detector.json. The other cases: tests/test_cli_atomic.py."""
    import shutil

    data = work["root"] / "test.csv"
    path_class, garbled = tmp_path / "path_class", tmp_path / "garbled"
    for model in (path_class, garbled):
        shutil.copytree(work["model"], model)
    meta_file = live(path_class) / "detector.json"
    meta_file.write_text(json.dumps(dict(json.loads(meta_file.read_text()), detector="Path")))
    (live(garbled) / "detector.json").write_bytes(b"\xff\xfe{")
    threshold, path_proc, garbled_proc = run_cli_many(
        ["fit", work["root"] / "train.csv", "--detector", "aegmm", "--out", tmp_path / "m", "--threshold-perc", 150],
        ["score", data, "--model", path_class, "--out", tmp_path / "s.csv"],
        ["info", garbled],
    )
    assert_bad_input(threshold, "--threshold-perc", "150")
    assert not (tmp_path / "m").exists()
    assert_bad_input(path_proc, "detector.json", "'Path'")
    assert_bad_input(garbled_proc, "detector.json", "UTF-8")
    assert not (tmp_path / "s.csv").exists()


def test_the_compile_cache_is_on_by_default_and_the_flag_or_variable_turn_it_off(tmp_path):
    rng = np.random.default_rng(3)
    X, _ = make_rows(120, rng, 0.0)
    write_frame(tmp_path / "t.csv", X, np.arange(120))
    caches = {name: tmp_path / name for name in ("default", "flag", "variable")}
    procs = [
        start_cli("fit", tmp_path / "t.csv", "--detector", "aegmm", "--id-column", "row_id", "--epochs", "1", "--out", tmp_path / "m1",
                  env={"VAEGMM_CACHE_DIR": str(caches["default"])}),
        start_cli("--no-compile-cache", "fit", tmp_path / "t.csv", "--detector", "aegmm", "--id-column", "row_id", "--epochs", "1",
                  "--out", tmp_path / "m2", env={"VAEGMM_CACHE_DIR": str(caches["flag"])}),
        start_cli("fit", tmp_path / "t.csv", "--detector", "aegmm", "--id-column", "row_id", "--epochs", "1", "--out", tmp_path / "m3",
                  env={"VAEGMM_CACHE_DIR": str(caches["variable"]), "VAEGMM_COMPILE_CACHE": "0"}),
    ]
    for proc in procs:
        assert_ok(finish(proc))
    assert any(caches["default"].iterdir())  # the fit's programs were kept
    for name in ("flag", "variable"):
        assert not caches[name].exists() or not any(caches[name].iterdir()), name



def test_plotting_is_imported_on_a_thread_while_the_fit_runs():
    """``vaegmm fit`` imports matplotlib beside the fit (prefetch_plotting), not after it."""
    code = (
        "import sys\n"
        "from vaegmm_jax.cli.reporting import prefetch_plotting\n"
        "assert 'matplotlib' not in sys.modules, 'the CLI imported matplotlib eagerly'\n"
        "thread = prefetch_plotting()\n"
        "assert thread.daemon\n"
        "thread.join(120)\n"
        "assert 'vaegmm_jax.evaluation.plots' in sys.modules and 'matplotlib' in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
