"""Replacing a saved model atomically (CURRENT + version folders), surviving crashes and kills
at any step of a save, cleaning up after them, and refusing damaged checkpoints clearly.

Tiny detectors (a (64, 5) table, one epoch): the cost here is saves and loads, not training.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import vaegmm_jax as vj
from tests.conftest import SaveCrash, crash_save_at_step
from vaegmm_jax.io import checkpoint

X = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
# the two models every test swaps: told apart by their thresholds
THR_A, THR_B = 1.25, 2.5
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    a = vj.OutlierAEGMM(hidden=(4,), gmm_hidden=4, seed=0)
    a.fit(X, epochs=1, batch_size=32, verbose=False)
    a.threshold = THR_A
    src = tmp_path_factory.mktemp("src") / "a"
    vj.save_detector(a, src)
    b = vj.load_detector(src)
    b.threshold = THR_B
    return a, b


def live(path) -> Path:
    return checkpoint.resolve_checkpoint(path)


def versions(path) -> list[str]:
    return sorted(p.name for p in Path(path).iterdir() if p.name.startswith("v-"))


def assert_tidy(path: Path) -> None:
    """Only the pointer, the live version and the one it replaced; no debris beside the folder."""
    names = sorted(p.name for p in path.iterdir())
    pointer = json.loads((path / "CURRENT").read_text())
    keep = {pointer["version"], pointer["previous"]} - {None}
    assert names == sorted({"CURRENT"} | keep), names
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")] == []


def make_legacy(models, path: Path) -> None:
    """A model folder of the earlier, unversioned layout (a version folder's files at the top)."""
    a, _ = models
    tmp = path.parent / (path.name + "_versioned")
    vj.save_detector(a, tmp)
    shutil.copytree(live(tmp), path)
    shutil.rmtree(tmp)
    (path / "model_card.json").write_text('{"card": "a"}')
    (path / "plots").mkdir()
    (path / "plots" / "p.txt").write_text("plot a")


# --------------------------------------------------------------------------- #
# Layout
# --------------------------------------------------------------------------- #


def test_resave_moves_the_pointer_keeps_one_previous_version_and_carries_files(models, tmp_path):
    a, b = models
    path = tmp_path / "m"
    vj.save_detector(a, path)
    first = versions(path)
    assert len(first) == 1 and json.loads((path / "CURRENT").read_text())["version"] == first[0]
    (live(path) / "notes.txt").write_text("mine")
    (live(path) / "old.txt").write_text("stale")
    vj.save_detector(b, path, add_files=lambda folder: (folder / "card.txt").write_text("b"), replace=["old.txt"])
    assert vj.load_detector(path).threshold == THR_B
    assert len(versions(path)) == 2 and first[0] in versions(path)  # the previous version: a reader's grace
    assert (live(path) / "notes.txt").read_text() == "mine"  # carried over
    assert (live(path) / "card.txt").read_text() == "b" and not (live(path) / "old.txt").exists()
    vj.save_detector(a, path)
    assert first[0] not in versions(path) and len(versions(path)) == 2
    assert_tidy(path)
    assert vj.load_detector(path).threshold == THR_A
    # a version folder loads on its own too
    assert vj.load_detector(live(path)).threshold == THR_A


def test_saving_over_the_unversioned_layout_converts_it(models, tmp_path):
    _, b = models
    path = tmp_path / "m"
    make_legacy(models, path)
    (path / "CURRENT.txt").write_text("a user's file")
    assert vj.load_detector(path).threshold == THR_A
    vj.save_detector(b, path)
    assert vj.load_detector(path).threshold == THR_B
    assert sorted(p.name for p in path.iterdir()) == sorted(["CURRENT"] + versions(path))
    assert len(versions(path)) == 1
    folder = live(path)
    assert (folder / "model_card.json").read_text() == '{"card": "a"}'
    assert (folder / "plots" / "p.txt").read_text() == "plot a" and (folder / "CURRENT.txt").is_file()


def test_debris_of_killed_saves_never_confuses_a_load_and_is_removed_by_the_next_save(models, tmp_path):
    a, b = models
    path = tmp_path / "m"
    vj.save_detector(a, path)
    # what killed saves leave: earlier releases' hidden siblings, a half-written version, a pointer draft
    for name in (".m.tmp-0123abcd", ".m.old-89abcdef"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "detector.json").write_text("{}")
    stale = path / "v-20200101T000000Z-0123456789ab"
    stale.mkdir()
    (stale / "detector.json").write_text("{half")
    (path / ".CURRENT.tmp-0123456789ab").write_text('{"format": 1, "version": "v-20200101T000000Z-0123456789ab"}')
    user = tmp_path / "other"  # not debris: never touched
    user.mkdir()
    assert vj.load_detector(path).threshold == THR_A
    vj.save_detector(b, path)
    assert_tidy(path)
    assert user.is_dir() and vj.load_detector(path).threshold == THR_B


def test_a_missing_folder_names_an_earlier_release_leftover(tmp_path):
    (tmp_path / ".m.old-0123abcd").mkdir()
    (tmp_path / ".m.old-0123abcd" / "detector.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"\.m\.old-0123abcd"):
        vj.load_detector(tmp_path / "m")


def test_saving_over_a_damaged_pointer_repairs_it_and_loses_no_version(models, tmp_path):
    a, b = models
    path = tmp_path / "m"
    vj.save_detector(a, path)
    vj.save_detector(b, path)
    before = versions(path)
    (path / "CURRENT").write_text("{garbled")
    with pytest.raises(vj.CheckpointError, match="CURRENT"):
        vj.load_detector(path)
    vj.save_detector(a, path)
    assert set(before) < set(versions(path))  # which one was live is unknown: none is deleted yet
    assert vj.load_detector(path).threshold == THR_A
    vj.save_detector(a, path)
    assert_tidy(path)


# --------------------------------------------------------------------------- #
# Readers during re-saves
# --------------------------------------------------------------------------- #


def test_readers_polling_during_resaves_never_fail(models, tmp_path):
    a, b = models
    path = tmp_path / "m"
    vj.save_detector(a, path)
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = {"load": 0, "meta": 0}

    def poll_load():
        while not stop.is_set():
            try:
                det = vj.load_detector(path)
                assert det.threshold in (THR_A, THR_B), det.threshold
                reads["load"] += 1
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)
                return

    def poll_meta():
        # the cheapest reader: the pointer, then detector.json of the version it names
        while not stop.is_set():
            try:
                meta = checkpoint.read_live(path, lambda lv: json.loads((lv.folder / "detector.json").read_text()))
                assert meta["threshold"] in (THR_A, THR_B)
                reads["meta"] += 1
            except BaseException as err:  # noqa: BLE001
                errors.append(err)
                return

    threads = [threading.Thread(target=poll_load), threading.Thread(target=poll_meta)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            vj.save_detector(b if i % 2 == 0 else a, path)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, repr(errors[0])
    assert reads["load"] >= 3 and reads["meta"] >= 30, reads
    assert_tidy(path)


# --------------------------------------------------------------------------- #
# A crash at every step of a save
# --------------------------------------------------------------------------- #




def _steps(monkeypatch, models, tmp_path, layout: str) -> list[str]:
    """The named steps of one save over a folder of ``layout``."""
    a, b = models
    path = tmp_path / "probe"
    if layout == "versioned":
        vj.save_detector(a, path)
    else:
        make_legacy(models, path)
    seen: list[str] = []
    monkeypatch.setattr(checkpoint, "_step", seen.append)
    vj.save_detector(b, path, add_files=lambda f: (f / "extra.txt").write_text("b"))
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("layout", ["versioned", "unversioned"])
def test_a_crash_at_any_step_leaves_the_old_or_the_new_model_and_the_next_save_cleans_up(
        models, tmp_path, monkeypatch, layout):
    a, b = models
    steps = _steps(monkeypatch, models, tmp_path, layout)
    assert "pointer moved" in steps and len(steps) >= 8, steps
    moved_at = steps.index("pointer moved")
    for k in range(len(steps)):
        path = tmp_path / f"m{k}"
        if layout == "versioned":
            vj.save_detector(a, path)
            (live(path) / "model_card.json").write_text('{"card": "a"}')
        else:
            make_legacy(models, path)
        crash_save_at_step(monkeypatch, k)
        with pytest.raises(SaveCrash):
            vj.save_detector(b, path, add_files=lambda f: (f / "extra.txt").write_text("b"))
        monkeypatch.undo()
        det = vj.load_detector(path)
        expected = THR_B if k >= moved_at else THR_A
        assert det.threshold == expected, (k, steps[k])
        folder = live(path)
        # the files of one version, whole: the old card with the old model, the new extras with the new
        assert json.loads((folder / "model_card.json").read_text()) == {"card": "a"}
        assert (folder / "extra.txt").exists() == (expected == THR_B)
        vj.save_detector(a, path)  # the next save removes every leftover
        assert_tidy(path)
        assert vj.load_detector(path).threshold == THR_A
        assert json.loads((live(path) / "model_card.json").read_text()) == {"card": "a"}


def test_a_failed_save_changes_nothing(models, tmp_path):
    a, b = models
    path = tmp_path / "m"
    vj.save_detector(a, path)
    entries = sorted(p.name for p in path.iterdir())

    def fail(folder):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        vj.save_detector(b, path, add_files=fail)
    assert sorted(p.name for p in path.iterdir()) == entries
    assert vj.load_detector(path).threshold == THR_A


# --------------------------------------------------------------------------- #
# Real kills
# --------------------------------------------------------------------------- #

_CHILD = """
import sys
import vaegmm_jax as vj
a = vj.load_detector(sys.argv[1]); a.threshold = {thr_a}
b = vj.load_detector(sys.argv[1]); b.threshold = {thr_b}
print("ready", flush=True)
i = 0
while True:
    vj.save_detector(b if i % 2 == 0 else a, sys.argv[2])
    i += 1
"""


@pytest.mark.slow  # ~90 s of process starts and 20 SIGKILLs on 2 cores (the CI budget); run with --runslow
def test_sigkill_at_random_moments_of_resaves_never_breaks_the_model(models, tmp_path):
    a, _ = models
    src = tmp_path / "src"
    vj.save_detector(a, src)
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD.format(thr_a=THR_A, thr_b=THR_B)))
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for trial in range(20):
        path = tmp_path / f"m{trial}"
        if trial % 4 == 3:
            make_legacy(models, path)  # some kills land in a conversion
        else:
            vj.save_detector(a, path)
        proc = subprocess.Popen([sys.executable, str(script), str(src), str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert vj.load_detector(path).threshold in (THR_A, THR_B), trial
        vj.save_detector(a, path)
        assert_tidy(path)
        assert vj.load_detector(path).threshold == THR_A


# --------------------------------------------------------------------------- #
# Damaged or hand-edited checkpoints
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "m"
    vj.save_detector(models[0], path)
    return path


def _damaged(saved, tmp_path, edit) -> Path:
    path = tmp_path / "m"
    shutil.copytree(saved, path)
    edit(live(path))
    return path


def _edit_meta(fn):
    def edit(folder):
        meta = json.loads((folder / "detector.json").read_text())
        fn(meta)
        (folder / "detector.json").write_text(json.dumps(meta))
    return edit


def _set(keys, value):
    def fn(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return fn


def _drop(keys):
    def fn(meta):
        d = meta
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return fn


META_DAMAGE = {
    "no config": (_drop(["config"]), "'config' is missing"),
    "no input_shape": (_drop(["input_shape"]), "'input_shape' is missing"),
    "no threshold": (_drop(["threshold"]), "'threshold' is missing"),
    "no history": (_drop(["history"]), "'history' is missing"),
    "no detector": (_drop(["detector"]), "'detector' is missing"),
    "no epochs_done": (_drop(["epochs_done"]), "'epochs_done' is missing"),
    "threshold a string": (_set(["threshold"], "high"), "'threshold'"),
    "threshold NaN": (_set(["threshold"], float("nan")), "'threshold'"),
    "input_shape a string": (_set(["input_shape"], "5"), "'input_shape'"),
    "input_shape floats": (_set(["input_shape"], [5.0]), "'input_shape'"),
    "input_shape negative": (_set(["input_shape"], [-5]), "'input_shape'"),
    "history a list": (_set(["history"], [1, 2]), "'history'"),
    "history of text": (_set(["history"], {"total": ["x"]}), "'history'"),
    "config a list": (_set(["config"], [1]), "'config'"),
    "class Path": (_set(["detector"], "Path"), "'Path'"),
    "class BaseDetector": (_set(["detector"], "BaseDetector"), "'BaseDetector'"),
    "class a function": (_set(["detector"], "load_detector"), "'load_detector'"),
    "config lacks n_gmm": (_drop(["config", "n_gmm"]), "n_gmm"),
    "config arch not a dict": (_set(["config", "arch"], "big"), "'config'"),
    "config custom_nets a list": (_set(["config", "custom_nets"], [1]), "'config'"),
    "config hidden a word": (_set(["config", "arch", "hidden"], "wide"), "'config'"),
    "input_shape other width": (_set(["input_shape"], [7]), "shape"),
    "opt leaves too many": (_set(["n_opt_state_leaves"], 999), "n_opt_state_leaves"),
    "array_files escape": (_set(["array_files"], {"../../etc/passwd": {"size": 1, "sha256": "0"}}), "array_files"),
    "future format": (_set(["format_version"], 3), "format 3"),
}


@pytest.mark.parametrize("case", sorted(META_DAMAGE))
def test_hand_edited_detector_json_raises_checkpoint_error_naming_file_and_field(saved, tmp_path, case):
    fn, fragment = META_DAMAGE[case]
    path = _damaged(saved, tmp_path, _edit_meta(fn))
    with pytest.raises(Exception) as info:
        vj.load_detector(path)
    assert type(info.value) is vj.CheckpointError, repr(info.value)
    assert fragment in str(info.value), str(info.value)
    if case not in ("future format",):
        assert "detector.json" in str(info.value) or "arrays" in str(info.value), str(info.value)


def _first_data_file(folder: Path) -> Path:
    return max((p for p in (folder / "arrays").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


FILE_DAMAGE = {
    "detector.json not UTF-8": (lambda f: (f / "detector.json").write_bytes(b"\xff\xfe{{"), "detector.json"),
    "detector.json not JSON": (lambda f: (f / "detector.json").write_text('{"a": '), "detector.json"),
    "detector.json a list": (lambda f: (f / "detector.json").write_text("[1, 2]"), "detector.json"),
    "array file missing": (lambda f: _first_data_file(f).unlink(), "missing"),
    "array file truncated": (lambda f: os.truncate(_first_data_file(f), _first_data_file(f).stat().st_size // 2),
                             "truncated"),
    "array file altered": (lambda f: _flip_byte(_first_data_file(f)), "damaged"),
    "arrays folder gone": (lambda f: shutil.rmtree(f / "arrays"), "missing arrays"),
    "pointer garbled": (lambda f: (f.parent / "CURRENT").write_text("{x"), "CURRENT"),
    "pointer escapes": (lambda f: (f.parent / "CURRENT").write_text('{"format": 1, "version": "../x"}'), "'version'"),
    "pointer names a missing version": (
        lambda f: (f.parent / "CURRENT").write_text('{"format": 1, "version": "v-20200101T000000Z-000000000000"}'),
        "missing"),
}


#: damage to what only format 1 checkpoints have (the arrays' names, listed in array_names.json)
FORMAT_1_FILE_DAMAGE = {
    "array_names.json garbled": (lambda f: (f / "array_names.json").write_text("[oops"), "array_names.json"),
    "array_names.json not UTF-8": (lambda f: (f / "array_names.json").write_bytes(b"\xff\x00"), "array_names.json"),
    "array_names.json gone": (lambda f: (f / "array_names.json").unlink(), "missing"),
    "opt leaves too many": (_edit_meta(_set(["n_opt_state_leaves"], 999)), "n_opt_state_leaves"),
}


@pytest.fixture(scope="module")
def saved_format_1(tmp_path_factory):
    """A format 1 checkpoint (tests/data/layout_checkpoints.tar, written before format 2)."""
    import tarfile

    root = tmp_path_factory.mktemp("format1")
    with tarfile.open(REPO / "tests" / "data" / "layout_checkpoints.tar") as tar:
        tar.extractall(root, filter="data")
    return root / "aegmm"


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", sorted(FILE_DAMAGE))
def test_damaged_files_raise_checkpoint_error_naming_the_file(saved, tmp_path, case):
    edit, fragment = FILE_DAMAGE[case]
    path = _damaged(saved, tmp_path, edit)
    with pytest.raises(Exception) as info:
        vj.load_detector(path)
    assert type(info.value) is vj.CheckpointError, repr(info.value)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("case", sorted(FILE_DAMAGE) + sorted(FORMAT_1_FILE_DAMAGE))
def test_damaged_format_1_files_raise_checkpoint_error_naming_the_file(saved_format_1, tmp_path, case):
    edit, fragment = {**FILE_DAMAGE, **FORMAT_1_FILE_DAMAGE}[case]
    path = _damaged(saved_format_1, tmp_path, edit)
    with pytest.raises(Exception) as info:
        vj.load_detector(path)
    assert type(info.value) is vj.CheckpointError, repr(info.value)
    assert fragment in str(info.value), str(info.value)


def test_damaged_arrays_without_saved_digests_still_raise_checkpoint_error(saved, tmp_path):
    """Checkpoints written before the digests existed: Orbax's own failure becomes a CheckpointError."""

    def edit(folder):
        _edit_meta(_drop(["array_files"]))(folder)
        shutil.rmtree(folder / "arrays" / "d")

    path = _damaged(saved, tmp_path, edit)
    with pytest.raises(vj.CheckpointError, match="arrays"):
        vj.load_detector(path)
