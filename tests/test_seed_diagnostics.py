"""benchmarks/seed_diagnostics.py: final training loss against a run metric, from a JSON list or a run store."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from vaegmm_jax import evaluation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run_store  # noqa: E402
import seed_diagnostics  # noqa: E402


def _store_with_fake_rows(root, f1_by_seed, settings=None):
    """A run store whose IsolationForest rows carry the given F1 and a final energy of -F1 (a perfect ranking)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0.5, 0.05, (300, 4)), rng.normal(3.0, 0.05, (30, 4))].astype(np.float32)
    y = np.r_[np.zeros(300), np.ones(30)].astype(np.int64)
    data = evaluation.dagmm_runs((X, y, None, "toy"), list(range(len(f1_by_seed))))
    spec = evaluation.isolation_forest_spec(n_estimators=10)
    store = run_store.RunStore(root, settings=settings or {})
    row = evaluation.run_protocol(data.subset([0]), spec)[0]
    for i, f1 in enumerate(f1_by_seed):
        store.save(data, i, spec, row | {"seed": i, "f1": f1, "final_loss": {"energy": -f1, "recon": 1.0}}, device="d")
    return data, spec, store


def test_store_folder_gives_one_group_per_cell_sorted_by_seed(tmp_path, capsys):
    f1 = [0.9, 0.5, 0.7, 0.6]
    _store_with_fake_rows(tmp_path, f1)
    (tmp_path / "toy" / "IsolationForest" / ".seed9-abc.json.tmp").write_text("{")  # an interrupted write: skipped
    runs = seed_diagnostics.load_runs(tmp_path)
    assert [r["label"] for r in runs] == ["toy / IsolationForest"] * 4
    assert [r["seed"] for r in runs] == [0, 1, 2, 3] and [r["f1"] for r in runs] == f1
    rho, p = seed_diagnostics.correlations(runs, "f1")["energy"]
    assert rho == pytest.approx(-1.0) and p < 0.1
    # pairs (0, 1), (2, 3): the lower energy keeps 0.9 and 0.7; the better of each pair is the same
    assert seed_diagnostics.pick_lower(runs, "energy", "f1") == pytest.approx((0.8, 0.675, 0.8))
    assert seed_diagnostics.main([str(tmp_path), "--detector", "toy / IsolationForest"]) == 0
    out = capsys.readouterr().out
    assert "## toy / IsolationForest: 4 runs" in out and "| energy | -1.00 |" in out


def test_json_list_still_reads_and_store_problems_are_named(tmp_path):
    rows = [{"detector": "DAGMM", "seed": s, "f1": f, "final_loss": {"energy": e}} for s, f, e in
            [(0, 0.9, 1.0), (1, 0.8, 2.0), (2, 0.7, 3.0)]]
    file = tmp_path / "runs.json"
    file.write_text(json.dumps(rows))
    assert seed_diagnostics.load_runs(file) == rows
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no run store records"):
        seed_diagnostics.load_runs(empty)
    with pytest.raises(SystemExit, match="missing.json does not exist"):
        seed_diagnostics.load_runs(tmp_path / "missing.json")
    (empty / "cut.json").write_text('{"row": ')
    with pytest.raises(SystemExit, match="cut.json is unreadable"):
        seed_diagnostics.load_runs(empty)
    # one seed twice under one label (two configurations of one detector name): refused, not mixed
    data, spec, store = _store_with_fake_rows(tmp_path / "store", [0.9, 0.5])
    path = store.save(data, 0, spec, {"seed": 0, "f1": 0.1}, device="d")
    path.rename(path.with_name("seed0-ffffffffffffffff.json"))
    store.save(data, 0, spec, {"seed": 0, "f1": 0.9, "final_loss": {"energy": -0.9}}, device="d")
    with pytest.raises(SystemExit, match="holds seed 0 twice"):
        seed_diagnostics.load_runs(tmp_path / "store")
