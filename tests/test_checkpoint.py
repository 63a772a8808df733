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
from vaegmm_jax.io import array_store, checkpoint

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

    monkeypatch.setattr(array_store, "write_arrays", boom)
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


# --------------------------------------------------------------------------- #
# The optimizer state: restored by structure (format 2)
# --------------------------------------------------------------------------- #


def test_the_optimizer_state_round_trips_as_the_optax_tree(fitted, tmp_path):
    path = tmp_path / "det"
    vj.save_detector(fitted, path)
    assert not (live(path) / "array_names.json").exists()  # format 2: one nested tree, no flat names
    loaded = vj.load_detector(path)
    assert loaded.opt_state is None and not hasattr(loaded, "opt_state_leaves")  # a plain load reads no optimizer state
    resumed = vj.OutlierVAEGMM(**KW)
    checkpoint.restore_training_state(resumed, path, optax.adam(1e-3))
    assert jax.tree.structure(resumed.opt_state) == jax.tree.structure(fitted.opt_state)
    assert isinstance(resumed.opt_state[0], optax.ScaleByAdamState)
    for a, b in zip(jax.tree.leaves(resumed.opt_state), jax.tree.leaves(fitted.opt_state)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


@pytest.mark.parametrize("optimizer, fragment", [
    # as many arrays as adam's state, in another tree: the first node that differs is named
    (optax.chain(optax.clip(1.0), optax.adam(1e-3)), "'opt_state/0'"),
    (optax.adamw(1e-3), "'opt_state/2'"),  # adam's arrays under the same names, in a longer chain
    (optax.sgd(1e-3, momentum=0.9), "needs 18"),  # fewer arrays
], ids=["clip_adam", "adamw", "sgd_momentum"])
def test_resuming_with_another_optimizer_raises_naming_the_mismatch(fitted, tmp_path, optimizer, fragment):
    path = tmp_path / "det"
    vj.save_detector(fitted, path)
    det = vj.OutlierVAEGMM(**KW)
    with pytest.raises(vj.CheckpointError, match="optimizer") as info:
        checkpoint.restore_training_state(det, path, optimizer)
    assert fragment in str(info.value), str(info.value)
    with pytest.raises(vj.CheckpointError, match="optimizer"):
        det.fit(X_TRAIN, epochs=5, checkpoint_dir=path, resume=True,
                **dict(FIT, optimizer=optax.chain(optax.clip(1.0), optax.adam(1e-3))))


def test_an_ensemble_resumes_with_its_per_member_optimizer_state(tmp_path):
    kw = dict(KW, n_members=2)
    fit = dict(FIT, batch_size=256)
    first = vj.OutlierVAEGMM(**kw)
    first.fit(X_TRAIN, epochs=1, checkpoint_dir=tmp_path / "m", **fit)
    resumed = vj.OutlierVAEGMM(**kw)
    resumed.fit(X_TRAIN, epochs=2, checkpoint_dir=tmp_path / "m", resume=True, **fit)
    # 512 rows in batches of 256: 2 Adam steps an epoch, per member; a fresh optimizer would count 2
    np.testing.assert_array_equal(np.asarray(resumed.opt_state[0].count), [4, 4])


def test_a_format_1_checkpoint_resaved_is_format_2_and_scores_the_same(tmp_path):
    import tarfile
    from pathlib import Path

    data = Path(__file__).parent / "data"
    with tarfile.open(data / "layout_checkpoints.tar") as tar:
        tar.extractall(tmp_path, filter="data")
    ref = np.load(data / "layout_checkpoints_scores.npz")
    old = tmp_path / "aegmm"
    assert json.loads((live(old) / "detector.json").read_text())["format_version"] == 1
    det = vj.load_detector(old)
    det.fit(ref["x_train"], epochs=3, batch_size=32, verbose=False, checkpoint_dir=old, resume=True)
    meta = json.loads((live(old) / "detector.json").read_text())
    assert meta["format_version"] == 2 and not (live(old) / "array_names.json").exists()
    again = vj.load_detector(old)
    np.testing.assert_array_equal(again.score(ref["x_score"]), det.score(ref["x_score"]))
    resumed = vj.load_detector(old)
    resumed.fit(ref["x_train"], epochs=4, batch_size=32, verbose=False, checkpoint_dir=old, resume=True)
    # 96 rows in batches of 32: 3 Adam steps an epoch, 4 epochs, through a format 1 and a format 2 resume
    np.testing.assert_array_equal(np.asarray(resumed.opt_state[0].count), 12)
