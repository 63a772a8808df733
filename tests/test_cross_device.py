"""A checkpoint written on an NVIDIA H100 (jax 0.11.2, orbax 0.12.4, Python 3.12) loads on this CPU.

The fixture was made by benchmarks/gpu_speed.sh on the lent GPU machine; its scores
there were saved beside it. They differ here only by TF32 matmuls on the GPU.
"""

import json
import tarfile
from pathlib import Path

import numpy as np

import vaegmm_jax as vj

DATA = Path(__file__).parent / "data"


def test_gpu_checkpoint_loads_and_scores_on_cpu(tmp_path):
    with tarfile.open(DATA / "h100_checkpoint.tar") as tar:
        tar.extractall(tmp_path, filter="data")
    meta = json.loads((tmp_path / "ckpt" / "detector.json").read_text())
    assert "H100" in meta["versions"]["device"]
    det = vj.load_detector(tmp_path / "ckpt")
    ref = np.load(DATA / "h100_checkpoint_scores.npz")
    scores = det.score(ref["x"])
    np.testing.assert_allclose(scores, ref["scores"], atol=1e-2, rtol=1e-2)
    assert np.corrcoef(scores, ref["scores"])[0, 1] > 0.9999
