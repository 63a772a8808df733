"""What the package's re-layout must not change: checkpoints written before it load to
bit-identical scores, and importing the package starts no JAX backend."""

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from vaegmm_jax import load_detector

DATA = Path(__file__).parent / "data"
KINDS = ("vaegmm", "aegmm", "vae", "vaegmm_members")


@pytest.fixture(scope="module")
def old_checkpoints(tmp_path_factory):
    """The checkpoints tests/data/make_layout_fixture.py wrote with the code of commit 9fe3d08."""
    root = tmp_path_factory.mktemp("layout")
    with tarfile.open(DATA / "layout_checkpoints.tar") as tar:
        tar.extractall(root, filter="data")
    return root, np.load(DATA / "layout_checkpoints_scores.npz")


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_from_before_the_relayout_scores_bit_identically(old_checkpoints, kind):
    root, ref = old_checkpoints
    det = load_detector(root / kind)
    scores = det.score(ref["x_score"])
    np.testing.assert_array_equal(scores, ref[kind])


@pytest.mark.parametrize("kind", ["aegmm", "vaegmm_members"])
def test_old_checkpoint_resumes_with_its_optimizer_state(old_checkpoints, tmp_path, kind):
    import shutil

    import optax

    root, ref = old_checkpoints
    shutil.copytree(root / kind, tmp_path / kind)
    det = load_detector(tmp_path / kind)
    assert det.epochs_done == 2
    det.fit(ref["x_train"], epochs=3, batch_size=32, verbose=False, checkpoint_dir=tmp_path / kind, resume=True)
    assert det.epochs_done == 3
    # 96 rows in batches of 32: 3 Adam steps an epoch; a fresh optimizer would count 3, not 9
    adam = det.opt_state[0]
    assert isinstance(adam, optax.ScaleByAdamState)
    np.testing.assert_array_equal(np.asarray(adam.count), np.full(det.n_members, 9) if det.n_members > 1 else 9)


def test_old_ensemble_checkpoint_keeps_its_members(old_checkpoints):
    root, ref = old_checkpoints
    det = load_detector(root / "vaegmm_members")
    assert det.n_members == 2
    member_scores = det.score_members(ref["x_score"])
    assert member_scores.shape == (2, len(ref["x_score"]))
    assert not np.array_equal(member_scores[0], member_scores[1])


def test_importing_the_package_starts_no_jax_backend():
    # a user must be able to call jax.distributed.initialize() after importing us
    code = (
        "import importlib, pkgutil, vaegmm_jax\n"
        "for m in pkgutil.walk_packages(vaegmm_jax.__path__, 'vaegmm_jax.'):\n"
        "    if not m.name.startswith('vaegmm_jax.kernels'):\n"
        "        importlib.import_module(m.name)\n"
        "from jax._src import xla_bridge\n"
        "print('initialised' if xla_bridge.backends_are_initialized() else 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "clean"


def test_importing_the_package_leaves_flax_nnx_unloaded_until_an_nnx_module_comes():
    """flax.nnx costs 0.3 s of every start (library and CLI); only NNX users need it."""
    code = (
        "import sys\n"
        "import vaegmm_jax, vaegmm_jax.cli.entry\n"
        "assert 'flax.nnx' not in sys.modules, 'flax.nnx imported eagerly'\n"
        "from flax import nnx\n"
        "from vaegmm_jax.nets import as_network\n"
        "class Net(nnx.Module):\n"
        "    def __init__(self, rngs):\n"
        "        self.lin = nnx.Linear(3, 2, rngs=rngs)\n"
        "    def __call__(self, x):\n"
        "        return self.lin(x)\n"
        "assert as_network(Net(nnx.Rngs(0))).kind == 'nnx'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
