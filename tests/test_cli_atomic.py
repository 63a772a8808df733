"""``vaegmm fit --overwrite`` replaces a model folder as one unit (detector, preprocessing, card,
plots), and ``score`` reads the detector and the scaling of one version.

Run in process (``vaegmm_jax.cli.main``) so that a crash can be injected at any step of the save.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from vaegmm_jax.cli import fit as cli_fit, main, model_folder  # noqa: E402
from vaegmm_jax.io import checkpoint, scores as score_io  # noqa: E402
from tests.conftest import SaveCrash, crash_save_at_step  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_atomic")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype(np.float32) * np.arange(1, 6, dtype=np.float32)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    frame.insert(0, "rid", [f"r{i}" for i in range(64)])
    frame.to_csv(root / "d.csv", index=False)
    return root


def fit_args(data: Path, out: Path, scaling: str, *extra) -> list[str]:
    return ["fit", str(data / "d.csv"), "--detector", "aegmm", "--id-column", "rid", "--out", str(out),
            "--epochs", "1", "--batch-size", "32", "--scaling", scaling, "--quiet", *extra]


def read_model(out: Path):
    """What score sees: detector, preprocessing and card of one version."""
    det, prep, folder = model_folder.load_model(str(out))
    card = json.loads((folder / "model_card.json").read_text())
    return det, prep, card, folder


@pytest.fixture(scope="module")
def old_model(data, tmp_path_factory):
    """A model fitted with min-max scaling (with plots); each test copies it."""
    out = tmp_path_factory.mktemp("old") / "model"
    assert main(fit_args(data, out, "minmax", "--threshold-perc", "80")) == 0
    return out


def _copy(old_model: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "model"
    shutil.copytree(old_model, out)
    return out


def assert_old_model_whole(out: Path, threshold: float) -> None:
    det, prep, card, folder = read_model(out)
    assert det.threshold == threshold
    assert prep.scaler.kind == "minmax" and card["preprocessing"]["scaler"]["kind"] == "minmax"
    assert card["threshold"]["value"] == pytest.approx(threshold)
    assert (folder / "plots" / "training_curves.png").is_file()


def assert_new_model_whole(out: Path) -> None:
    det, prep, card, folder = read_model(out)
    assert prep.scaler.kind == "standard" and card["preprocessing"]["scaler"]["kind"] == "standard"
    assert card["threshold"]["value"] == pytest.approx(det.threshold)
    assert not (folder / "plots").exists()  # --no-plots: the old model's plots are not inherited




def test_a_fit_overwrite_that_fails_writing_any_part_leaves_the_old_model_whole(data, old_model, tmp_path,
                                                                                monkeypatch):
    out = _copy(old_model, tmp_path)
    old_threshold = read_model(out)[0].threshold
    entries = sorted(p.name for p in out.iterdir())
    # each part of the new version as the model folder's writer calls it
    for target, name in ((model_folder, "save_preprocessing"), (model_folder, "write_model_card"),
                         (cli_fit, "make_plots")):
        def boom(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(target, name, boom)
        assert main(fit_args(data, out, "standard", "--overwrite")) != 0
        monkeypatch.undo()
        assert sorted(p.name for p in out.iterdir()) == entries, name
        assert_old_model_whole(out, old_threshold)


def test_a_fit_overwrite_killed_at_any_step_leaves_the_old_or_the_new_model_whole(data, old_model, tmp_path,
                                                                                  monkeypatch, capsys):
    out = _copy(old_model, tmp_path)
    old_threshold = read_model(out)[0].threshold
    steps: list[str] = []
    monkeypatch.setattr(checkpoint, "_step", steps.append)
    probe = _copy(old_model, tmp_path / "probe")
    assert main(fit_args(data, probe, "standard", "--overwrite", "--no-plots")) == 0
    monkeypatch.undo()
    moved_at = steps.index("pointer moved")
    # just before and just after the pointer moves (failures while the files are written: the test above;
    # every step of a save: tests/test_checkpoint_atomic.py)
    for k in (moved_at - 1, moved_at):
        calls = crash_save_at_step(monkeypatch, k)
        # main reports any exception (exit 1); the debris a kill would leave stays behind
        assert main(fit_args(data, out, "standard", "--overwrite", "--no-plots")) == 1
        assert calls["n"] == k  # it stopped at step k
        monkeypatch.undo()
        if k < moved_at:
            assert_old_model_whole(out, old_threshold)
        else:
            assert_new_model_whole(out)
        # the next fit replaces whatever a kill left, and leaves no debris
        assert main(fit_args(data, out, "minmax", "--overwrite", "--threshold-perc", "80")) == 0
        assert_old_model_whole(out, old_threshold)
        pointer = json.loads((out / "CURRENT").read_text())
        assert sorted(p.name for p in out.iterdir()) == sorted(["CURRENT", pointer["version"], pointer["previous"]])
    capsys.readouterr()


def test_a_killed_first_fit_leaves_a_folder_that_the_next_fit_reuses(data, tmp_path, monkeypatch):
    out = tmp_path / "model"

    def step(name):
        if name == "files added":
            raise SaveCrash(name)

    monkeypatch.setattr(checkpoint, "_step", step)
    monkeypatch.setattr(checkpoint, "_discard", lambda p: None)
    assert main(fit_args(data, out, "standard", "--no-plots")) == 1
    monkeypatch.undo()
    assert [p.name for p in out.iterdir()][0].startswith("v-")  # a half-made version, no pointer
    assert main(fit_args(data, out, "standard", "--no-plots")) == 0  # no --overwrite needed: nothing to lose
    assert_new_model_whole(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["CURRENT", checkpoint.resolve_checkpoint(out).name])


def test_fit_overwrite_over_an_unversioned_model_folder_converts_it(data, old_model, tmp_path):
    import shutil

    out = tmp_path / "legacy"
    shutil.copytree(checkpoint.resolve_checkpoint(old_model), out)  # the earlier layout: files at the top
    det, prep, _ = model_folder.load_model(str(out))
    assert prep.scaler.kind == "minmax"
    assert main(fit_args(data, out, "standard", "--overwrite", "--no-plots")) == 0
    assert_new_model_whole(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["CURRENT", checkpoint.resolve_checkpoint(out).name])


def test_score_and_info_read_one_version(data, old_model, tmp_path, capsys):
    out = _copy(old_model, tmp_path)
    assert main(["score", str(data / "d.csv"), "--model", str(out), "--out", str(tmp_path / "s.csv")]) == 0
    res = pd.read_csv(tmp_path / "s.csv")
    assert list(res.columns) == ["rid", "score", "is_outlier"] and res["rid"].tolist()[:2] == ["r0", "r1"]
    det, prep, _, _ = read_model(out)
    X = pd.read_csv(data / "d.csv")[[f"f{i}" for i in range(5)]].to_numpy(np.float32)
    np.testing.assert_allclose(res["score"], det.score(prep.scaler.transform(X)), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == checkpoint.resolve_checkpoint(out).name
    assert info["preprocessing"]["scaler"]["kind"] == "minmax"


def test_score_refuses_a_model_whose_identifier_column_is_an_output_column(data, old_model, tmp_path, capsys):
    out = _copy(old_model, tmp_path)
    frame = pd.read_csv(data / "d.csv").rename(columns={"rid": "score"})
    frame.to_csv(tmp_path / "d.csv", index=False)
    prep_file = checkpoint.resolve_checkpoint(out) / "preprocessing.json"  # a model fitted before the check
    prep_file.write_text(json.dumps(dict(json.loads(prep_file.read_text()), id_column="score")))
    rc = main(["score", str(tmp_path / "d.csv"), "--model", str(out), "--out", str(tmp_path / "s.csv")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "'score'" in err[0], err
    assert not (tmp_path / "s.csv").exists()


def test_score_writer_refuses_ids_named_like_output_columns_and_files_as_folders(tmp_path):
    for name in score_io.OUTPUT_COLUMNS:
        with pytest.raises(ValueError, match="identifier"):
            score_io.ScoreWriter(tmp_path / "s.csv", name)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        score_io.ScoreWriter(tmp_path / "afile" / "s.csv", None)



# --------------------------------------------------------------------------- #
# Bad input: exit code 2, one line on stderr, no work done
# --------------------------------------------------------------------------- #


def run_main(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def assert_bad(result: tuple[int, list[str]], *fragments: str) -> None:
    rc, err = result
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], (rc, err)
    for frag in fragments:
        assert frag.lower() in err[0].lower(), err[0]


def test_unusable_thresholds_are_refused_before_training(data, tmp_path, capsys, no_training):
    train = fit_args(data, tmp_path / "m", "minmax")
    for flag, value in (("--threshold-perc", 150), ("--threshold-perc", -1), ("--threshold-perc", "nan"),
                        ("--contamination", 1.5), ("--contamination", 0)):
        assert_bad(run_main(capsys, *train, flag, value), f"argument {flag}")
    (tmp_path / "cfg.json").write_text(json.dumps({"threshold_perc": 150}))
    assert_bad(run_main(capsys, *train, "--config", tmp_path / "cfg.json"), "threshold_perc", "150")
    (tmp_path / "cfg.json").write_text(json.dumps({"contamination": "lots"}))
    assert_bad(run_main(capsys, *train, "--config", tmp_path / "cfg.json"), "contamination")
    assert not (tmp_path / "m").exists()


def test_output_paths_under_a_file_are_refused_before_any_work(data, old_model, tmp_path, capsys, no_training):
    (tmp_path / "afile").write_text("not a folder")
    under = tmp_path / "afile"
    assert_bad(run_main(capsys, "score", data / "d.csv", "--model", old_model, "--out", under / "s.csv"),
               "afile", "not a folder")
    assert_bad(run_main(capsys, *fit_args(data, under / "m", "minmax")), "afile", "not a folder")
    assert_bad(run_main(capsys, "evaluate", data / "d.csv", "--labels", "f0", "--model", old_model,
                        "--out", under / "e"), "afile", "not a folder")
    assert_bad(run_main(capsys, "demo", "--out", under / "demo"), "afile", "not a folder")
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_identifier_columns_named_like_output_columns_are_refused(data, old_model, tmp_path, capsys, no_training):
    frame = pd.read_csv(data / "d.csv").rename(columns={"rid": "score"})
    frame["is_outlier"] = 0
    frame.to_csv(tmp_path / "d.csv", index=False)
    for name in ("score", "is_outlier"):
        assert_bad(run_main(capsys, "fit", tmp_path / "d.csv", "--detector", "aegmm", "--id-column", name,
                            "--out", tmp_path / "m"), f"'{name}'", "identifier")
        assert_bad(run_main(capsys, "score", tmp_path / "d.csv", "--model", old_model, "--id-column", name,
                            "--out", tmp_path / "s.csv"), f"'{name}'", "identifier")
    assert not (tmp_path / "m").exists() and not (tmp_path / "s.csv").exists()


def _edited_model(old_model: Path, tmp_path: Path, name: str, edit) -> Path:
    import shutil

    out = tmp_path / name
    shutil.copytree(old_model, out)
    edit(checkpoint.resolve_checkpoint(out) / "detector.json")
    return out


def _set_field(field, value):
    def edit(meta_file: Path) -> None:
        meta_file.write_text(json.dumps(dict(json.loads(meta_file.read_text()), **{field: value})))
    return edit


def test_damaged_detector_json_is_named_by_score_info_and_evaluate(data, old_model, tmp_path, capsys):
    cases = {
        "path": (_set_field("detector", "Path"), "'Path'"),
        "base": (_set_field("detector", "BaseDetector"), "'BaseDetector'"),
        "not_utf8": (lambda f: f.write_bytes(b"\xff\xfe{"), "UTF-8"),
        "not_json": (lambda f: f.write_text('{"detector": '), "JSON"),
        "threshold": (_set_field("threshold", "high"), "'threshold'"),
        "shape": (_set_field("input_shape", "5"), "'input_shape'"),
    }
    for name, (edit, fragment) in cases.items():
        model = _edited_model(old_model, tmp_path, name, edit)
        for args in (["score", data / "d.csv", "--model", model, "--out", tmp_path / "s.csv"], ["info", model],
                     ["evaluate", data / "d.csv", "--labels", "f0", "--model", model, "--out", tmp_path / "e"]):
            assert_bad(run_main(capsys, *args), "detector.json", fragment)
    assert not (tmp_path / "s.csv").exists()
