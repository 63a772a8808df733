"""Writes tests/data/layout_checkpoints.tar and layout_checkpoints_scores.npz.

Run once, with the code of commit 9fe3d08 (before the package was re-laid out and checkpoints
became nested pytrees), to pin what an older checkpoint must still load to: every detector kind,
an ensemble, and the optimizer state. Only the public API is used, so the script still runs.

    XLA_FLAGS=--xla_backend_optimization_level=0 python tests/data/make_layout_fixture.py

(the XLA level the test suite compiles at, tests/conftest.py: scores are compared to the bit)
"""

import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from vaegmm_jax import OutlierAEGMM, OutlierVAE, OutlierVAEGMM, save_detector

HERE = Path(__file__).parent


def main():
    rng = np.random.default_rng(7)
    x_train = rng.normal(size=(96, 6)).astype(np.float32)
    x_score = np.concatenate([rng.normal(size=(20, 6)), 4 + rng.normal(size=(4, 6))]).astype(np.float32)
    detectors = {
        "vaegmm": OutlierVAEGMM(threshold=1.0, samples=3),
        "aegmm": OutlierAEGMM(score_type="energy"),
        "vae": OutlierVAE(score_type="recon_prob", samples=2),
        "vaegmm_members": OutlierVAEGMM(n_members=2, samples=2),
    }
    scores = {"x_train": x_train, "x_score": x_score}
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(HERE / "layout_checkpoints.tar", "w") as tar:
        for name, det in detectors.items():
            det.fit(x_train, epochs=2, batch_size=32, verbose=False)
            save_detector(det, Path(tmp) / name)
            scores[name] = det.score(x_score)
            tar.add(Path(tmp) / name, arcname=name)
    np.savez(HERE / "layout_checkpoints_scores.npz", **scores)


if __name__ == "__main__":
    main()
