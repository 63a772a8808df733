"""File formats of tables and arrays: which format a path is, opening NPY/NPZ/Parquet files,
and what their metadata says (row counts) without reading the rows (:mod:`vaegmm_jax.io.tables`
reads them)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vaegmm_jax.io.messages import QUOTE_LIMIT, one_line

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".npy": "npy",
    ".npz": "npz",
}
_COMPRESSION = (".gz", ".bz2", ".zip", ".xz", ".zst")
SUPPORTED_SUFFIXES = tuple(sorted(FORMATS))


def file_format(path: str | os.PathLike) -> str:
    """'csv', 'tsv', 'parquet', 'npy' or 'npz' from the file name (``.csv.gz`` is csv)."""
    name = Path(path).name.lower()
    for comp in _COMPRESSION:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    suffix = Path(name).suffix
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    fmt = FORMATS[suffix]
    if fmt in ("npy", "npz", "parquet") and name != Path(path).name.lower():
        raise ValueError(f"{path}: compressed {fmt} files are not supported; decompress it first")
    return fmt


def check_exists(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a folder, expected a data file")
    return p


def require_pyarrow():
    """(pyarrow, pyarrow.parquet); ValueError saying how to install them when they are missing
    (pyarrow is the optional extra ``vaegmm_jax[parquet]``)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError("Parquet files need pyarrow: pip install 'vaegmm_jax[parquet]'") from err
    return pa, pq


def separator(fmt: str) -> str:
    """The field separator of a text format ('csv' or 'tsv')."""
    return "\t" if fmt == "tsv" else ","


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as err:
        raise ValueError(f"{path}: cannot read this .npz without unpickling objects ({err})") from err
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError
        raise ValueError(f"{path}: not a valid .npz file ({type(err).__name__}: {err})") from err


def npz_feature_key(arrays: dict[str, np.ndarray], path: Path) -> str:
    for k in ("X", "x", "data", "features"):
        if k in arrays:
            return k
    multi = [k for k, a in arrays.items() if a.ndim >= 2]
    if len(multi) == 1:
        return multi[0]
    raise ValueError(
        f"{path}: cannot tell which array holds the features (keys {sorted(arrays)}); name it 'X'"
    )


def open_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a numeric .npy file ({err})") from err
    except Exception as err:
        raise ValueError(f"{path}: not a valid .npy file ({type(err).__name__}: {err})") from err
    if arr.dtype.names is not None:
        raise ValueError(f"{path}: structured .npy arrays are not supported; save a plain (N, F) array")
    return arr


def array_columns(n_features: int) -> list[str]:
    return [f"f{i}" for i in range(n_features)]


def parquet_file(path: Path, pq):
    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow.lib.ArrowInvalid and friends
        raise ValueError(f"{path}: not a valid Parquet file ({one_line(err, QUOTE_LIMIT)})") from err


def count_rows(path: str | os.PathLike) -> int | None:
    """Row count when it is cheap to know (NPY/NPZ/Parquet metadata); None for text files."""
    path = check_exists(path)
    fmt = file_format(path)
    if fmt == "npy":
        return int(open_npy(path).shape[0])
    if fmt == "parquet":
        _, pq = require_pyarrow()
        return int(parquet_file(path, pq).metadata.num_rows)
    if fmt == "npz":
        arrays = npz_arrays(path)
        return int(arrays[npz_feature_key(arrays, path)].shape[0])
    return None


__all__ = ["FORMATS", "SUPPORTED_SUFFIXES", "file_format", "check_exists", "require_pyarrow", "separator", "npz_arrays",
           "npz_feature_key", "open_npy", "array_columns", "parquet_file", "count_rows"]
