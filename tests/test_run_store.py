"""The accuracy benchmark's run store (benchmarks/run_store.py) and its resume path in accuracy.py."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from vaegmm_jax.detectors import presets

from vaegmm_jax import evaluation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import accuracy  # noqa: E402
import run_store  # noqa: E402


def _data(seeds=(0, 1, 2), **kw):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0.5, 0.05, (600, 6)), rng.normal(3.0, 0.05, (60, 6))].astype(np.float32)
    y = np.r_[np.zeros(600), np.ones(60)].astype(np.int64)
    return evaluation.dagmm_runs((X, y, None, "separable"), list(seeds), **kw)


def _tiny(epochs=2):
    return presets.DAGMMPreset(name="tiny", n_features=6, hidden=(8, 4), latent_dim=1, n_gmm=2, epochs=epochs,
                               batch_size=128, anomaly_ratio=0.1, paper_f1=float("nan"))


def test_store_round_trip_and_keys(tmp_path):
    data = _data()
    spec = evaluation.isolation_forest_spec(n_estimators=20)
    rows = evaluation.run_protocol(data, spec)
    store = run_store.RunStore(tmp_path, settings={"what": 1})
    assert store.load(data, 1, spec) is None
    path = store.save(data, 1, spec, rows[1] | {"_store": {"x": 1}}, device="test device")
    assert path.parent == tmp_path / "separable" / "IsolationForest" and path.name.startswith("seed1-")
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed into place
    back = store.load(data, 1, spec)
    assert back["_store"]["device"] == "test device" and back["_store"]["path"] == str(path)
    assert {k: v for k, v in back.items() if k != "_store"} == json.loads(json.dumps(rows[1]))
    assert "_store" not in json.loads(path.read_text())["row"]
    # the same seed on other rows, another detector, other fit arguments or other settings: no match
    assert store.load(data, 0, spec) is None
    assert store.load(_data(scaling="standard"), 1, spec) is None
    assert store.load(data, 1, evaluation.isolation_forest_spec(n_estimators=21)) is None
    assert run_store.RunStore(tmp_path, settings={"what": 2}).load(data, 1, spec) is None
    a, b = evaluation.dagmm_spec(_tiny(2)), evaluation.dagmm_spec(_tiny(3))
    assert run_store.run_key(data, 0, a, {}) != run_store.run_key(data, 0, b, {})
    assert run_store.run_key(data, 0, a, {}) == run_store.run_key(data, 0, evaluation.dagmm_spec(_tiny(2)), {})
    # the key follows the rows of the run, not its position among the seeds
    assert run_store.run_key(data.subset([1]), 0, spec, {}) == run_store.run_key(data, 1, spec, {})
    dirty = _data(contamination=0.5)
    assert store.save(dirty, 0, spec, rows[0], device="d").parent.parent.name == "separable-contaminated-50pct"


def test_store_rejects_unreadable_files_and_ignores_foreign_keys(tmp_path):
    data = _data()
    spec = evaluation.isolation_forest_spec(n_estimators=20)
    store = run_store.RunStore(tmp_path, settings={})
    path = store.save(data, 0, spec, evaluation.run_protocol(data.subset([0]), spec)[0], device="d")
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"key": "0" * 64}))
    assert store.load(data, 0, spec) is None  # a prefix collision is not a match
    path.write_text('{"format": 1, "key": ')
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*unreadable.*delete it"):
        store.load(data, 0, spec)
    with pytest.raises(TypeError, match="cannot store object"):
        store.save(data, 0, spec, {"bad": object()}, device="d")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def test_format1_runs_are_adopted_only_where_they_agree_with_the_run(tmp_path):
    data = _data()
    spec = evaluation.isolation_forest_spec(n_estimators=20)
    store = run_store.RunStore(tmp_path, settings={})
    row = evaluation.run_protocol(data.subset([0]), spec)[0]
    current = store.save(data, 0, spec, row, device="gpu")
    record = json.loads(current.read_text())
    old_path = current.with_name("seed0-0123456789abcdef.json")  # a format-1 key (other transform floats)
    old_path.write_text(json.dumps(record | {"format": 1, "key": "0123456789abcdef" + "0" * 48}))
    current.unlink()
    assert store.load(data, 0, spec) is None
    wrong = dict(record["row"], n_train=record["row"]["n_train"] + 1)  # another split: never adopted
    old_path.write_text(json.dumps(record | {"format": 1, "key": "0" * 64, "row": wrong}))
    assert store.adopt_format1(data, 0, spec) is None and old_path.exists()
    old_path.write_text(json.dumps(record | {"format": 1, "key": "0123456789abcdef" + "0" * 48}))
    adopted = store.adopt_format1(data, 0, spec)
    assert adopted["f1"] == row["f1"] and adopted["_store"]["device"] == "gpu"
    assert not old_path.exists()
    again = store.load(data, 0, spec)  # now an ordinary current-format run
    assert again["f1"] == row["f1"]
    new = json.loads(Path(again["_store"]["path"]).read_text())
    assert new["format"] == run_store.STORE_FORMAT and new["adopted_from"]["file"] == old_path.name
    assert new["rows_fingerprint"] == data.fingerprint(0)


def test_accuracy_resumes_from_the_store(tmp_path, data_dir):
    common = ["--datasets", "thyroid", "--detectors", "iforest", "--extras", "none", "--data", str(data_dir),
              "--xla-cache", "none", "--xla-autotune"]  # no process-wide XLA settings from a test
    store = tmp_path / "store"
    assert accuracy.main(common + ["--seeds", "3", "--store", str(store), "--out", str(tmp_path / "a.md")]) == 0
    assert len(list(store.rglob("seed*.json"))) == 3
    assert accuracy.main(common + ["--seeds", "4", "--store", str(store), "--seed-chunk", "1",
                                   "--out", str(tmp_path / "b.md"), "--json", str(tmp_path / "b.json")]) == 0
    assert accuracy.main(common + ["--seeds", "4", "--out", str(tmp_path / "fresh.md"),
                                   "--json", str(tmp_path / "fresh.json")]) == 0
    resumed = json.loads((tmp_path / "b.json").read_text())
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    assert [r["seed"] for r in resumed] == [0, 1, 2, 3] and len(list(store.rglob("seed*.json"))) == 4
    assert [r["f1"] for r in resumed] == pytest.approx([r["f1"] for r in fresh], rel=1e-12)
    assert sum(1 for r in resumed if r["_store"].get("date")) == 3  # seeds 0-2 came from the store
    text = (tmp_path / "b.md").read_text()
    assert "3 of 4 runs reused" in text and re.search(r"\| thyroid \| IsolationForest \|.*\| [\d.]+\* \|", text)
    fresh_row = next(line for line in (tmp_path / "fresh.md").read_text().splitlines()
                     if line.startswith("| thyroid | IsolationForest"))
    f1_cell = fresh_row.split("|")[5]
    assert f1_cell in text  # same mean ± std of F1
    with pytest.raises(SystemExit, match="--seed-chunk needs --store"):
        accuracy.main(common + ["--seed-chunk", "2"])
    # --stored-only renders the 4 stored runs of a 6-seed request, trains nothing and says so
    assert accuracy.main(common + ["--seeds", "6", "--store", str(store), "--stored-only",
                                   "--out", str(tmp_path / "c.md"), "--json", str(tmp_path / "c.json")]) == 0
    assert [r["seed"] for r in json.loads((tmp_path / "c.json").read_text())] == [0, 1, 2, 3]
    assert len(list(store.rglob("seed*.json"))) == 4
    text = (tmp_path / "c.md").read_text()
    assert "thyroid / IsolationForest 4 of 6" in text and f1_cell in text
    with pytest.raises(SystemExit, match="--stored-only needs --store"):
        accuracy.main(common + ["--stored-only"])
