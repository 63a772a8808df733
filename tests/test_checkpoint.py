"""Orbax checkpoints: exact round trips, atomic saves, resume, corrupt or hostile files."""

import json
import pickle
import shutil

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import vaegmm_jax as vj
from tests.conftest import manifold_data
from vaegmm_jax.io import checkpoint

X_TRAIN, X_TEST, _ = manifold_data(n_in=512, n_out=20, seed=3)
KW = dict(n_gmm=2, latent_dim=2, seed=5, hidden=(8, 4))
FIT = dict(batch_size=128, verbose=False, optimizer=optax.adam(1e-3), w_recon=1.0)


def live(path):
    """The folder of the model's live version (detector.json, arrays/, files saved with it)."""
    return checkpoint.resolve_checkpoint(path)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    det = vj.OutlierVAEGMM(**KW)
    det.fit(X_TRAIN, epochs=4, **FIT)
    det.infer_threshold(X_TRAIN, 90)
    return det


def test_save_load_scores_are_bit_identical(fitted, tmp_path):
    path = tmp_path / "det"
    vj.save_detector(fitted, path)
    loaded = vj.load_detector(path)
    np.testing.assert_array_equal(loaded.score(X_TEST), fitted.score(X_TEST))
    assert loaded.threshold == fitted.threshold
    assert loaded.history == fitted.history and loaded.epochs_done == 4
    assert loaded.config_dict() == fitted.config_dict()
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(fitted.params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(X_TEST)["data"]["is_outlier"], fitted.predict(X_TEST)["data"]["is_outlier"])
    meta = json.loads((live(path) / "detector.json").read_text())
    assert meta["format_version"] == checkpoint.FORMAT_VERSION and meta["detector"] == "OutlierVAEGMM"
    assert meta["n_opt_state_leaves"] > 0  # optimizer state is saved too


def test_method_save_and_overwrite_is_atomic(fitted, tmp_path, monkeypatch):
    path = tmp_path / "det"
    fitted.save(path)
    before = (live(path) / "detector.json").read_text()
    entries = sorted(p.name for p in path.iterdir())

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_arrays", boom)
    with pytest.raises(OSError, match="disk full"):
        vj.save_detector(fitted, path)
    # the old checkpoint is untouched and no temporary folder is left behind
    assert (live(path) / "detector.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["det"]
    assert sorted(p.name for p in path.iterdir()) == entries
    monkeypatch.undo()
    np.testing.assert_array_equal(vj.load_detector(path).score(X_TEST), fitted.score(X_TEST))


def test_loading_never_unpickles(fitted, tmp_path, monkeypatch):
    path = tmp_path / "det"
    vj.save_detector(fitted, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a checkpoint load must never unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    vj.load_detector(path)
    suffixes = {p.suffix for p in path.rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".pickle", ".dill", ".h5"}


def test_missing_and_corrupt_checkpoints_raise_clear_errors(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved detector"):
        vj.load_detector(tmp_path / "nowhere")
    path = tmp_path / "det"
    vj.save_detector(fitted, path)

    half = tmp_path / "half"
    shutil.copytree(path, half)
    (live(half) / "detector.json").unlink()
    with pytest.raises(vj.CheckpointError, match="detector.json is missing"):
        vj.load_detector(half)

    bad_json = tmp_path / "bad_json"
    shutil.copytree(path, bad_json)
    (live(bad_json) / "detector.json").write_text("{not json")
    with pytest.raises(vj.CheckpointError, match="corrupt"):
        vj.load_detector(bad_json)

    future = tmp_path / "future"
    shutil.copytree(path, future)
    meta = json.loads((live(future) / "detector.json").read_text())
    meta["format_version"] = 99
    (live(future) / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(vj.CheckpointError, match="format 99"):
        vj.load_detector(future)

    no_arrays = tmp_path / "no_arrays"
    shutil.copytree(path, no_arrays)
    shutil.rmtree(live(no_arrays) / "arrays")
    with pytest.raises(vj.CheckpointError, match="missing arrays"):
        vj.load_detector(no_arrays)

    other_shape = tmp_path / "other_shape"
    shutil.copytree(path, other_shape)
    meta = json.loads((live(other_shape) / "detector.json").read_text())
    meta["config"]["arch"]["hidden"] = [16, 4]
    (live(other_shape) / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(vj.CheckpointError, match="shape"):
        vj.load_detector(other_shape)


def test_saving_an_unfitted_detector_raises(tmp_path):
    with pytest.raises(vj.NotFittedError):
        vj.save_detector(vj.OutlierVAEGMM(), tmp_path / "x")


def test_resume_equals_uninterrupted_run(tmp_path):
    full = vj.OutlierVAEGMM(**KW)
    full.fit(X_TRAIN, epochs=4, **FIT)

    ckpt = tmp_path / "run"
    first = vj.OutlierVAEGMM(**KW)
    first.fit(X_TRAIN, epochs=4, checkpoint_dir=ckpt, checkpoint_every=2, **FIT)
    # pretend the run died after epoch 2: the periodic checkpoint holds epoch 2
    # (rewind it by training a fresh detector for 2 epochs into the same folder)
    half = vj.OutlierVAEGMM(**KW)
    half.fit(X_TRAIN, epochs=2, checkpoint_dir=ckpt, **FIT)
    assert json.loads((live(ckpt) / "detector.json").read_text())["epochs_done"] == 2

    resumed = vj.OutlierVAEGMM(**KW)
    resumed.fit(X_TRAIN, epochs=4, checkpoint_dir=ckpt, resume=True, **FIT)
    assert resumed.epochs_done == 4
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params)):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == full.history
    np.testing.assert_array_equal(resumed.score(X_TEST), full.score(X_TEST))
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(full.params)):
        np.testing.assert_array_equal(a, b)


class Enc(nnx.Module):
    def __init__(self, rngs):
        self.l = nnx.Linear(X_TRAIN.shape[1], 6, rngs=rngs)

    def __call__(self, x):
        return jax.numpy.tanh(self.l(x))


def test_custom_networks_must_be_passed_again_on_load(tmp_path):
    det = vj.OutlierVAEGMM(encoder_net=Enc(nnx.Rngs(0)), **{k: v for k, v in KW.items() if k != "hidden"})
    det.fit(X_TRAIN, epochs=1, **FIT)
    vj.save_detector(det, tmp_path / "c")
    with pytest.raises(ValueError, match="encoder_net"):
        vj.load_detector(tmp_path / "c")
    loaded = vj.load_detector(tmp_path / "c", encoder_net=Enc(nnx.Rngs(42)))  # other init, same structure
    np.testing.assert_array_equal(loaded.score(X_TEST), det.score(X_TEST))


def test_relative_paths_and_sidecar_files_survive_a_resave(fitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vj.save_detector(fitted, "rel")
    (tmp_path / "rel" / "model_card.json").write_text('{"note": "mine"}')
    (tmp_path / "rel" / "plots").mkdir()
    (tmp_path / "rel" / "plots" / "a.txt").write_text("x")
    vj.save_detector(fitted, "rel")  # overwrite
    assert json.loads((tmp_path / "rel" / "model_card.json").read_text()) == {"note": "mine"}
    assert (tmp_path / "rel" / "plots" / "a.txt").read_text() == "x"
    np.testing.assert_array_equal(vj.load_detector("rel").score(X_TEST), fitted.score(X_TEST))
