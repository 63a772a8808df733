"""Shared helpers for the side-by-side speed benchmarks.

Every runner (vaegmm_jax, PyTorch, alibi-detect/TensorFlow) imports this file so that
all of them train and score on exactly the same synthetic rows and write the same
JSON fields. It depends on NumPy and the standard library only, so it works in each
runner's own environment (the TensorFlow venv has numpy<2, the main one numpy 2.x).

Data: a KDD-like, non-negative float32 table in [0, 1): a mixture of a few Gaussian
clusters (min-max-scaled-looking continuous columns plus sparse 0/1 "one-hot" columns)
with a small fraction of uniform outliers. Only the shape and the value range matter
for speed; the clusters make the training loss meaningful (it goes down).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import sys
from typing import Any

import numpy as np

N_FEATURES = 120

# The architecture both competitor runners build (KDD shape, see REFERENCE 1.3 / 2 / 4).
ARCH = {
    "n_features": N_FEATURES,
    "encoder_hidden": [60, 30, 10],  # tanh
    "latent_dim": 2,  # mean / log-variance heads
    "decoder_hidden": [10, 30, 60],  # tanh, linear output of n_features
    "gmm_hidden": 10,  # tanh, then softmax over n_gmm
    "n_gmm": 4,
    "samples": 10,  # L latent samples at scoring time
    "batch_size": 1024,
    "lr": 1e-4,
    "w_recon": 1e-7,
    "w_energy": 0.1,
    "w_cov_diag": 0.005,
    "beta": 1.0,
    "sim": 0.05,
}

_N_CLUSTERS = 4
_N_CONTINUOUS = 40  # the remaining columns are sparse 0/1 indicators
_OUTLIER_FRACTION = 0.02
_CHUNK = 8192  # small chunks keep generation temporaries out of the peak RSS


def make_data(n_rows: int, n_features: int = N_FEATURES, seed: int = 0) -> np.ndarray:
    """Deterministic synthetic rows, float32, shape (n_rows, n_features), values in [0, 1).

    Same seed -> same array in every environment (NumPy PCG64 Generator; generated in
    fixed-size chunks with per-chunk child seeds, so memory stays bounded and row i
    does not depend on n_rows). Use `fingerprint()` to check two sides agree.
    """
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    n_cont = min(_N_CONTINUOUS, n_features)
    n_bin = n_features - n_cont
    # cluster structure depends on the seed only
    crng = np.random.Generator(np.random.PCG64([seed, 0]))
    centres = crng.uniform(0.15, 0.85, size=(_N_CLUSTERS, n_cont))
    scales = crng.uniform(0.02, 0.08, size=(_N_CLUSTERS, n_cont))
    bin_p = crng.uniform(0.0, 0.3, size=(_N_CLUSTERS, n_bin))
    weights = np.array([0.4, 0.3, 0.2, 0.1])[:_N_CLUSTERS]

    out = np.empty((n_rows, n_features), dtype=np.float32)
    for c, start in enumerate(range(0, n_rows, _CHUNK)):
        m = min(_CHUNK, n_rows - start)
        full = _CHUNK  # always draw a full chunk, then truncate: row i is independent of n_rows
        rng = np.random.Generator(np.random.PCG64([seed, 1, c]))
        comp = rng.choice(_N_CLUSTERS, size=full, p=weights)
        cont = centres[comp] + scales[comp] * rng.standard_normal((full, n_cont))
        binary = (rng.random((full, n_bin)) < bin_p[comp]).astype(np.float64)
        block = np.concatenate([cont, binary], axis=1)
        outl = rng.random(full) < _OUTLIER_FRACTION
        block[outl] = rng.random((full, n_features))[outl]
        np.clip(block, 0.0, np.nextafter(np.float32(1.0), np.float32(0.0)), out=block)
        out[start : start + m] = block[:m]
    return out


def fingerprint(x: np.ndarray) -> str:
    """Short content hash of an array, to check both sides used the same data."""
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:16]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        return r / (1024.0 * 1024.0)
    return r / 1024.0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other processes on the machine distort the timings."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def host_info() -> dict[str, Any]:
    return {
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }


def write_result(path: str | None, result: dict[str, Any]) -> dict[str, Any]:
    """Add host info and a timestamp, print the result as JSON, and write it to `path`."""
    full = dict(result)
    full.setdefault("host", host_info())
    full.setdefault("timestamp", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    text = json.dumps(full, indent=2, sort_keys=False, default=_json_default)
    print(text)
    if path:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")
    return full


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def timed_cli(args, env) -> float:
    """Wall seconds of one ``python -m vaegmm_jax ARGS`` process (RuntimeError with its stderr
    if it fails)."""
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vaegmm_jax", *map(str, args)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args}: rc {proc.returncode}\n{proc.stderr}")
    return time.perf_counter() - started
