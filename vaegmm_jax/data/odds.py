"""ODDS data sets (Outlier Detection DataSets): ``X`` features and ``y`` with 1 = anomaly, from .mat or .npz files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from vaegmm_jax.data.containers import TabularDataset
from vaegmm_jax.data.files import ENV_VAR, SHA256, check_sha256, resolve_data_file

__all__ = ["load_odds"]

_ODDS_KNOWN = {
    # name: (file name in odds/, (rows, cols), number of anomalies)
    "arrhythmia": ("arrhythmia.mat", (452, 274), 66),
    "thyroid": ("thyroid.npz", (3772, 6), 93),
}


def _read_odds_arrays(file: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``X`` and ``y`` as stored in the bytes of an ODDS ``.npz`` or MATLAB v5 ``.mat`` file."""
    suffix = file.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except Exception as err:  # BadZipFile, truncated members, pickled objects...
            raise ValueError(f"malformed .npz file {file}: {err}") from err
        missing = {"X", "y"} - set(arrays)
        if missing:
            raise ValueError(f"{file} lacks arrays {sorted(missing)} (has {sorted(arrays)})")
        return arrays["X"], arrays["y"]
    if suffix == ".mat":
        import scipy.io  # imported here, not at start-up: only .mat files need it

        if data[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in data[:128]:
            raise ValueError(
                f"{file} is a MATLAB v7.3 (HDF5) file, which scipy.io cannot read; "
                "convert it to .npz with keys X and y (e.g. via h5py)"
            )
        try:
            m = scipy.io.loadmat(io.BytesIO(data))
        except Exception as err:
            raise ValueError(f"malformed MATLAB file {file}: {err}") from err
        missing = {"X", "y"} - set(m)
        if missing:
            raise ValueError(f"{file} lacks variables {sorted(missing)}")
        return np.asarray(m["X"]), np.asarray(m["y"])
    raise ValueError(f"unsupported ODDS file type {file.suffix!r} for {file}; expected .mat or .npz")


def load_odds(
    name_or_path: str | os.PathLike,
    path: str | os.PathLike | None = None,
    verify: bool = True,
) -> TabularDataset:
    """Load an ODDS data set (``X`` features, ``y`` with 1 = anomaly).

    Args:
        name_or_path: a known name (``"arrhythmia"`` -> 452 x 274 with 66
            anomalies, ``"thyroid"`` -> 3772 x 6 with 93 anomalies), or the
            path of any ODDS file in MATLAB v5 ``.mat`` or ``.npz`` form
            holding ``X`` and ``y``.
        path: for a known name: the data root, the ``odds/`` folder, or the
            file; defaults to ``$VAEGMM_DATA``. Ignored when ``name_or_path``
            is a path.
        verify: check the SHA-256 of known files and, for the known names,
            the expected shape and anomaly count. Unknown files are only
            checked structurally (2-D finite X, binary y of matching length).

    Returns:
        :class:`TabularDataset`: X (N, F) float32, y (N,) int64, no feature
        names, all columns flagged continuous.
    """
    name = str(name_or_path)
    key = name.lower()
    if key in _ODDS_KNOWN:
        fname, shape, n_anom = _ODDS_KNOWN[key]
        try:
            file = resolve_data_file(path, f"odds/{fname}")
        except FileNotFoundError as first:
            # Accept the other ODDS format under the same name (e.g. the
            # original thyroid.mat); it has no known digest.
            other = fname.rsplit(".", 1)[0] + (".mat" if fname.endswith(".npz") else ".npz")
            try:
                file = resolve_data_file(path, f"odds/{other}")
            except FileNotFoundError:
                raise first from None
        ds_name = key
    else:
        file = Path(name_or_path)
        if not file.is_file():
            raise FileNotFoundError(
                f"{name!r} is neither a known ODDS name ({sorted(_ODDS_KNOWN)}) nor an "
                f"existing file; set {ENV_VAR} or pass the file's path"
            )
        shape = n_anom = None
        ds_name = file.stem
    data = file.read_bytes()
    rel = f"odds/{file.name}"
    # A digest is known only for the exact files of the shared data folder.
    if verify and rel in SHA256:
        check_sha256(data, file, SHA256[rel])
    X, y = _read_odds_arrays(file, data)
    if X.ndim != 2:
        raise ValueError(f"{file}: X must be 2-D, got shape {X.shape}")
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()  # MATLAB stores y as (N, 1)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"{file}: y has shape {y.shape}, expected ({X.shape[0]},)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{file}: y must be binary 0/1, found values {np.unique(y)[:10]}")
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError(f"{file}: X contains non-finite values")
    y = y.astype(np.int64)
    if verify and shape is not None:
        if X.shape != shape or int(y.sum()) != n_anom:
            raise ValueError(
                f"unexpected content in {file}: X {X.shape} with {int(y.sum())} anomalies, "
                f"expected {shape} with {n_anom}"
            )
    return TabularDataset(
        X=X,
        y=y,
        feature_names=None,
        continuous=np.ones(X.shape[1], dtype=bool),
        name=ds_name,
        anomaly="ODDS label y = 1",
    )
