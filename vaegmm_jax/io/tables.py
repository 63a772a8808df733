"""Reading tables and arrays for the command line: formats, column selection,
chunked reading, and a feature scaler that is fitted on training data and
saved with the model.

Formats (chosen by file extension):

* ``.csv`` / ``.tsv`` (also ``.csv.gz`` etc.): a header row, read with pandas
  (``read_csv(chunksize=...)`` when streaming).
* ``.parquet`` / ``.pq``: read with pyarrow (row batches when streaming).
* ``.npy``: a 2-D (N, F) table or an image stack (N, H, W[, C]); opened with
  ``np.load(mmap_mode='r')`` so only the chunk being read is in memory.
  Columns are named ``f0 .. f{F-1}``.
* ``.npz``: the features are the array ``X`` (or ``x``, ``data``, or the only
  array with two or more axes); 1-D arrays with one value per row (e.g. ``y``,
  ``ids``) can be used as label or identifier columns by their key.

Every problem with the input (unknown format, malformed file, missing column,
non-numeric or missing cells) raises ``ValueError``/``KeyError``/
``FileNotFoundError`` with a one-line message naming the file, the column and
the first bad row, so that a caller can report it without a traceback.

Nothing here prints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = [
    "PREPROCESSING_FILE",
    "SUPPORTED_SUFFIXES",
    "Table",
    "Scaler",
    "Preprocessing",
    "file_format",
    "list_columns",
    "read_table",
    "iter_tables",
    "count_rows",
    "parse_column_list",
    "save_preprocessing",
    "load_preprocessing",
    "write_scores",
    "ScoreWriter",
    "OUTPUT_COLUMNS",
    "check_id_name",
    "check_output_path",
]

#: the JSON file, in the model folder, that holds scaling and column choices.
PREPROCESSING_FILE = "preprocessing.json"
PREPROCESSING_FORMAT = 1

_FORMATS = {
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
SUPPORTED_SUFFIXES = tuple(sorted(_FORMATS))
DEFAULT_CHUNK_ROWS = 65536


# --------------------------------------------------------------------------- #
# Formats and columns
# --------------------------------------------------------------------------- #


def file_format(path: str | os.PathLike) -> str:
    """'csv', 'tsv', 'parquet', 'npy' or 'npz' from the file name (``.csv.gz`` is csv)."""
    name = Path(path).name.lower()
    for comp in _COMPRESSION:
        if name.endswith(comp):
            name = name[: -len(comp)]
            break
    suffix = Path(name).suffix
    if suffix not in _FORMATS:
        raise ValueError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    fmt = _FORMATS[suffix]
    if fmt in ("npy", "npz", "parquet") and name != Path(path).name.lower():
        raise ValueError(f"{path}: compressed {fmt} files are not supported; decompress it first")
    return fmt


def _check_exists(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a folder, expected a data file")
    return p


def parse_column_list(text: str | Sequence[str] | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c'] (None stays None; empty names are an error)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [str(s).strip() for s in items]
    if not names or any(n == "" for n in names):
        raise ValueError(f"bad column list {text!r}: expected comma-separated names like a,b,c")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"column list names {dup} more than once")
    return names


def _import_pandas():
    try:
        import pandas as pd
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError("reading CSV/TSV files needs pandas: pip install pandas") from err
    return pd


def _import_pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ValueError("Parquet files need pyarrow: pip install 'vaegmm_jax[parquet]'") from err
    return pa, pq


def _sep(fmt: str) -> str:
    return "\t" if fmt == "tsv" else ","


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as err:
        raise ValueError(f"{path}: cannot read this .npz without unpickling objects ({err})") from err
    except Exception as err:  # zipfile.BadZipFile, OSError, EOFError
        raise ValueError(f"{path}: not a valid .npz file ({type(err).__name__}: {err})") from err


def _npz_feature_key(arrays: dict[str, np.ndarray], path: Path) -> str:
    for k in ("X", "x", "data", "features"):
        if k in arrays:
            return k
    multi = [k for k, a in arrays.items() if a.ndim >= 2]
    if len(multi) == 1:
        return multi[0]
    raise ValueError(
        f"{path}: cannot tell which array holds the features (keys {sorted(arrays)}); name it 'X'"
    )


def _open_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path}: not a numeric .npy file ({err})") from err
    except Exception as err:
        raise ValueError(f"{path}: not a valid .npy file ({type(err).__name__}: {err})") from err
    if arr.dtype.names is not None:
        raise ValueError(f"{path}: structured .npy arrays are not supported; save a plain (N, F) array")
    return arr


def _array_columns(n_features: int) -> list[str]:
    return [f"f{i}" for i in range(n_features)]


def list_columns(path: str | os.PathLike) -> list[str]:
    """All column names of a file (for arrays: f0.., plus 1-D npz keys)."""
    path = _check_exists(path)
    fmt = file_format(path)
    if fmt in ("csv", "tsv"):
        pd = _import_pandas()
        try:
            head = pd.read_csv(path, sep=_sep(fmt), nrows=0)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: malformed {fmt.upper()} ({_one_line(err)})") from err
        return [str(c) for c in head.columns]
    if fmt == "parquet":
        _, pq = _import_pyarrow()
        return list(_parquet_file(path, pq).schema_arrow.names)
    if fmt == "npy":
        arr = _open_npy(path)
        return _array_columns(arr.shape[1]) if arr.ndim == 2 else []
    arrays = _npz_arrays(path)
    key = _npz_feature_key(arrays, path)
    x = arrays[key]
    cols = _array_columns(x.shape[1]) if x.ndim == 2 else []
    return cols + [k for k, a in arrays.items() if k != key and a.ndim == 1 and a.shape[0] == x.shape[0]]


def _parquet_file(path: Path, pq):
    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow.lib.ArrowInvalid and friends
        raise ValueError(f"{path}: not a valid Parquet file ({_one_line(err)})") from err


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- #
# Column selection
# --------------------------------------------------------------------------- #


@dataclass
class Selection:
    """Which columns are features, which the row identifier and which the label."""

    features: list[str] | None  # None: an image array (no named columns)
    id_column: str | None = None
    label_column: str | None = None


def select_columns(
    available: Sequence[str],
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    id_optional: bool = False,
) -> Selection:
    """Resolves the feature columns; every named column must exist.

    Default features: every column except the identifier, label and excluded ones.
    ``id_optional``: a missing identifier column is dropped silently (scoring a file
    that lacks the identifier the model was fitted with).
    """
    available = list(available)
    avail_set = set(available)

    def need(name: str, what: str) -> None:
        if name not in avail_set:
            raise KeyError(_missing_msg(path, [name], available, what))

    if id_column is not None and id_column not in avail_set:
        if id_optional:
            id_column = None
        else:
            need(id_column, "identifier column")
    if label_column is not None:
        need(label_column, "label column")
    if id_column is not None and id_column == label_column:
        raise ValueError(f"the identifier and the label column are the same column {id_column!r}")
    if exclude:
        missing = [c for c in exclude if c not in avail_set]
        if missing:
            raise KeyError(_missing_msg(path, missing, available, "excluded column"))
    if columns is not None:
        missing = [c for c in columns if c not in avail_set]
        if missing:
            raise KeyError(_missing_msg(path, missing, available, "column"))
        for special, what in ((id_column, "identifier"), (label_column, "label")):
            if special is not None and special in columns:
                raise ValueError(f"column {special!r} is the {what} column; it cannot also be a feature")
        feats = list(columns)
        if exclude:
            feats = [c for c in feats if c not in set(exclude)]
    else:
        skip = set(exclude or ()) | {c for c in (id_column, label_column) if c is not None}
        feats = [c for c in available if c not in skip]
    if not feats:
        raise ValueError(f"{path}: no feature columns left after selection")
    return Selection(features=feats, id_column=id_column, label_column=label_column)


def _missing_msg(path, missing: Sequence[str], available: Sequence[str], what: str) -> str:
    shown = ", ".join(repr(c) for c in list(available)[:12]) + (" ..." if len(available) > 12 else "")
    plural = "s" if len(missing) > 1 else ""
    return f"{path}: {what}{plural} {', '.join(repr(c) for c in missing)} not found; the file has {shown or 'no columns'}"


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


@dataclass
class Table:
    """Rows read from a file.

    Attributes:
      X: (n, F) float32 features, or (n, H, W, C) images.
      feature_names: names of the F columns (None for images).
      ids: (n,) row identifiers, or None.
      id_column: the identifier column's name, or None.
      labels: (n,) labels as read (validated as 0/1 by the caller), or None.
      label_column: the label column's name, or None.
      start: index of the first row in the file.
    """

    X: np.ndarray
    feature_names: list[str] | None
    ids: np.ndarray | None = None
    id_column: str | None = None
    labels: np.ndarray | None = None
    label_column: str | None = None
    start: int = 0

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])


def _numeric_block(frame, names: Sequence[str], path, start: int) -> np.ndarray:
    """A pandas frame's feature columns as float32, refusing text and missing cells."""
    pd = _import_pandas()
    sub = frame[list(names)]
    for name in names:
        col = sub[name]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            conv = pd.to_numeric(col, errors="coerce")
            bad = conv.isna() & col.notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise ValueError(
                    f"{path}: column {name!r} is not numeric (value {str(col.iloc[i])!r} in data row {start + i + 1}); "
                    "pick numeric columns with --columns or drop it with --exclude-columns"
                )
    try:
        X = sub.to_numpy(dtype=np.float32, na_value=np.nan)
    except (TypeError, ValueError):
        X = sub.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    _check_finite(X, names, path, start)
    return X


def _check_finite(X: np.ndarray, names: Sequence[str] | None, path, start: int) -> None:
    flat = X.reshape(X.shape[0], -1)
    bad = ~np.isfinite(flat)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        what = "missing (NaN)" if np.isnan(flat[r, c]) else "infinite"
        col = repr(names[c]) if names is not None and c < len(names) else f"#{c}"
        raise ValueError(
            f"{path}: {int(bad.sum())} {what} or non-finite cell(s); first in column {col}, data row {start + int(r) + 1}; "
            "fill or drop them first"
        )


def _as_id_array(values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == object:
        arr = arr.astype(str)
    return arr


def read_table(
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    id_optional: bool = False,
) -> Table:
    """Reads a whole file (training data) into memory. See :func:`iter_tables` to stream."""
    blocks = list(
        iter_tables(
            path,
            chunk_rows=None,
            columns=columns,
            exclude=exclude,
            id_column=id_column,
            label_column=label_column,
            id_optional=id_optional,
        )
    )
    if not blocks:
        raise ValueError(f"{path}: no data rows")
    if len(blocks) == 1:
        return blocks[0]
    first = blocks[0]
    return Table(
        X=np.concatenate([b.X for b in blocks]),
        feature_names=first.feature_names,
        ids=None if first.ids is None else np.concatenate([b.ids for b in blocks]),
        id_column=first.id_column,
        labels=None if first.labels is None else np.concatenate([b.labels for b in blocks]),
        label_column=first.label_column,
    )


def iter_tables(
    path: str | os.PathLike,
    *,
    chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    id_optional: bool = False,
) -> Iterator[Table]:
    """Yields the file's rows in order, in blocks of at most ``chunk_rows`` (None: one block).

    Only the selected columns are read. The whole file is never held in memory for
    CSV/TSV (pandas chunks), Parquet (pyarrow row batches) and NPY (memory map);
    an NPZ member is read whole (NumPy cannot map zip members).
    """
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or int(chunk_rows) < 1):
        raise ValueError(f"chunk rows must be a positive integer, got {chunk_rows!r}")
    path = _check_exists(path)
    fmt = file_format(path)
    kw = dict(columns=columns, exclude=exclude, id_column=id_column, label_column=label_column, id_optional=id_optional)
    if fmt in ("csv", "tsv"):
        yield from _iter_csv(path, fmt, chunk_rows, **kw)
    elif fmt == "parquet":
        yield from _iter_parquet(path, chunk_rows, **kw)
    elif fmt == "npy":
        yield from _iter_array(path, _open_npy(path), {}, chunk_rows, **kw)
    else:
        arrays = _npz_arrays(path)
        key = _npz_feature_key(arrays, path)
        side = {k: a for k, a in arrays.items() if k != key}
        yield from _iter_array(path, arrays[key], side, chunk_rows, **kw)


def _iter_csv(path: Path, fmt: str, chunk_rows, **kw) -> Iterator[Table]:
    pd = _import_pandas()
    available = list_columns(path)
    dups = sorted({c for c in available if available.count(c) > 1})
    if dups:
        raise ValueError(f"{path}: duplicate column names {dups}")
    sel = select_columns(available, path, **kw)
    dtypes = {sel.id_column: str} if sel.id_column is not None else None
    start = 0
    try:
        # every column is parsed (no usecols): with usecols pandas silently accepts rows with
        # extra fields, which would shift values between columns unnoticed
        reader = pd.read_csv(path, sep=_sep(fmt), chunksize=chunk_rows or None, dtype=dtypes)
        frames = reader if chunk_rows else [reader]
        for frame in frames:
            if len(frame) == 0:
                continue
            yield _table_from_frame(frame, sel, path, start)
            start += len(frame)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: malformed {fmt.upper()} file ({_one_line(err)})") from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path}: empty file ({_one_line(err)})") from err
    if start == 0:
        raise ValueError(f"{path}: no data rows")


def _table_from_frame(frame, sel: Selection, path, start: int) -> Table:
    X = _numeric_block(frame, sel.features, path, start)
    ids = labels = None
    if sel.id_column is not None:
        ids = _as_id_array(frame[sel.id_column].to_numpy())
    if sel.label_column is not None:
        labels = frame[sel.label_column].to_numpy()
    return Table(X, list(sel.features), ids, sel.id_column, labels, sel.label_column, start)


def _iter_parquet(path: Path, chunk_rows, **kw) -> Iterator[Table]:
    pa, pq = _import_pyarrow()
    pf = _parquet_file(path, pq)
    available = list(pf.schema_arrow.names)
    sel = select_columns(available, path, **kw)
    wanted = list(sel.features) + [c for c in (sel.id_column, sel.label_column) if c is not None]
    start = 0
    try:
        batches = pf.iter_batches(batch_size=chunk_rows or max(1, pf.metadata.num_rows), columns=wanted)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            frame = batch.to_pandas()
            yield _table_from_frame(frame, sel, path, start)
            start += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
        raise ValueError(f"{path}: cannot read Parquet data near row {start + 1} ({_one_line(err)})") from err
    if start == 0:
        raise ValueError(f"{path}: no data rows")


def _iter_array(path: Path, arr: np.ndarray, side: dict[str, np.ndarray], chunk_rows, **kw) -> Iterator[Table]:
    if arr.ndim < 2:
        raise ValueError(f"{path}: expected a 2-D (rows, features) array or an image stack, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{path}: the array must be real numeric, got dtype {arr.dtype}")
    n = arr.shape[0]
    if n == 0:
        raise ValueError(f"{path}: no data rows")
    side = {k: a for k, a in side.items() if a.ndim == 1 and a.shape[0] == n}
    if arr.ndim == 2:
        available = _array_columns(arr.shape[1]) + list(side)
        sel = select_columns(available, path, **kw)
        col_idx = {name: i for i, name in enumerate(_array_columns(arr.shape[1]))}
        # ids/labels may be npz side arrays or columns of the matrix itself
        feat_idx = [col_idx[c] if c in col_idx else None for c in sel.features]
        if any(i is None for i in feat_idx):
            bad = [c for c, i in zip(sel.features, feat_idx) if i is None]
            raise ValueError(f"{path}: {bad} are per-row arrays, not feature columns; exclude them")
        contiguous = feat_idx == list(range(arr.shape[1]))
    else:
        if kw.get("columns") or kw.get("exclude"):
            raise ValueError(f"{path}: column selection needs a 2-D table, this array has shape {arr.shape}")
        available = list(side)
        sel = select_columns(["(image)"] + available, path, **kw)
        sel.features = None
        col_idx, feat_idx, contiguous = {}, None, True
    step = chunk_rows or n
    for start in range(0, n, step):
        block = np.asarray(arr[start : start + step])
        X = block if contiguous else block[:, feat_idx]
        X = X.astype(np.float32)
        if X.ndim == 3:  # (n, H, W) -> (n, H, W, 1)
            X = X[..., None]
        _check_finite(X, sel.features, path, start)
        ids = labels = None
        if sel.id_column is not None:
            ids = _pick(block, side, col_idx, sel.id_column, start, step)
        if sel.label_column is not None:
            labels = _pick(block, side, col_idx, sel.label_column, start, step)
        yield Table(X, None if sel.features is None else list(sel.features), ids, sel.id_column, labels, sel.label_column, start)


def _pick(block, side, col_idx, name, start, step) -> np.ndarray:
    if name in side:
        return np.asarray(side[name][start : start + step])
    return np.asarray(block[:, col_idx[name]])


def count_rows(path: str | os.PathLike) -> int | None:
    """Row count when it is cheap to know (NPY/NPZ/Parquet metadata); None for text files."""
    path = _check_exists(path)
    fmt = file_format(path)
    if fmt == "npy":
        return int(_open_npy(path).shape[0])
    if fmt == "parquet":
        _, pq = _import_pyarrow()
        return int(_parquet_file(path, pq).metadata.num_rows)
    if fmt == "npz":
        arrays = _npz_arrays(path)
        return int(arrays[_npz_feature_key(arrays, path)].shape[0])
    return None


# --------------------------------------------------------------------------- #
# Labels
# --------------------------------------------------------------------------- #


def binary_labels(labels: np.ndarray, column: str, path) -> np.ndarray:
    """Labels as int64 0/1 (1 = outlier); accepts bool, 0/1 numbers and 'true'/'false' text."""
    arr = np.asarray(labels)
    if arr.dtype == object or arr.dtype.kind in "US":
        text = np.char.lower(np.char.strip(arr.astype(str)))
        mapping = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
        bad = ~np.isin(text, list(mapping))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}: label column {column!r} must hold 0/1 (1 = outlier); found {str(arr[i])!r} in data row {i + 1}"
            )
        return np.array([mapping[t] for t in text], dtype=np.int64)
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        i = int(np.flatnonzero(np.isnan(arr))[0])
        raise ValueError(f"{path}: label column {column!r} has a missing value in data row {i + 1}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: label column {column!r} must hold 0/1 (1 = outlier); found {arr[i]!r} in data row {i + 1}"
        )
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- #
# Scaling
# --------------------------------------------------------------------------- #


@dataclass
class Scaler:
    """Per-feature affine scaling ``(x - offset) / scale`` fitted on training rows.

    kind: 'minmax' (to [0, 1] on the training rows), 'standard' (zero mean, unit
    variance) or 'none'. Constant columns get scale 1 (no division by zero).
    """

    kind: str = "none"
    offset: np.ndarray | None = None
    scale: np.ndarray | None = None

    KINDS = ("minmax", "standard", "none")

    @classmethod
    def fit(cls, X: np.ndarray, kind: str = "minmax") -> "Scaler":
        if kind not in cls.KINDS:
            raise ValueError(f"unknown scaling {kind!r}; use one of {', '.join(cls.KINDS)}")
        if kind == "none":
            return cls("none")
        flat = np.asarray(X, dtype=np.float64).reshape(X.shape[0], -1)
        if kind == "minmax":
            lo, hi = flat.min(axis=0), flat.max(axis=0)
            offset, scale = lo, hi - lo
        else:
            offset, scale = flat.mean(axis=0), flat.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        return cls(kind, offset.astype(np.float64), scale.astype(np.float64))

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return np.asarray(X, dtype=np.float32)
        shape = X.shape
        flat = np.asarray(X, dtype=np.float64).reshape(shape[0], -1)
        if flat.shape[1] != self.offset.shape[0]:
            raise ValueError(f"the scaler was fitted on {self.offset.shape[0]} features, got {flat.shape[1]}")
        return ((flat - self.offset) / self.scale).astype(np.float32).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "minmax":
            out.update(min=self.offset.tolist(), range=self.scale.tolist())
        elif self.kind == "standard":
            out.update(mean=self.offset.tolist(), std=self.scale.tolist())
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scaler":
        kind = d.get("kind")
        try:
            if kind == "none":
                return cls("none")
            if kind == "minmax":
                return cls(kind, np.asarray(d["min"], np.float64), np.asarray(d["range"], np.float64))
            if kind == "standard":
                return cls(kind, np.asarray(d["mean"], np.float64), np.asarray(d["std"], np.float64))
        except KeyError as err:
            raise ValueError(f"scaler entry lacks {err}") from err
        raise ValueError(f"unknown scaler kind {kind!r}")


@dataclass
class Preprocessing:
    """What the command line did to the data before the detector saw it (saved as JSON)."""

    feature_names: list[str] | None
    scaler: Scaler = field(default_factory=Scaler)
    id_column: str | None = None
    label_column: str | None = None
    input_format: str | None = None
    row_shape: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": PREPROCESSING_FORMAT,
            "feature_names": self.feature_names,
            "scaler": self.scaler.to_dict(),
            "id_column": self.id_column,
            "label_column": self.label_column,
            "input_format": self.input_format,
            "row_shape": self.row_shape,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        if d.get("format_version") != PREPROCESSING_FORMAT:
            raise ValueError(f"unsupported preprocessing format {d.get('format_version')!r}")
        return cls(
            feature_names=d.get("feature_names"),
            scaler=Scaler.from_dict(d.get("scaler") or {"kind": "none"}),
            id_column=d.get("id_column"),
            label_column=d.get("label_column"),
            input_format=d.get("input_format"),
            row_shape=d.get("row_shape"),
        )


def _version_folder(model_dir: str | os.PathLike) -> Path:
    """The folder of the model's live version when ``model_dir`` is a versioned model folder
    (it holds the pointer file), else ``model_dir`` itself (a version folder, an earlier
    unversioned model folder, or any folder)."""
    model_dir = Path(model_dir)
    if (model_dir / "CURRENT").is_file():
        from vaegmm_jax.io.checkpoint import resolve_checkpoint  # imports JAX: only when needed

        return resolve_checkpoint(model_dir)
    return model_dir


def save_preprocessing(model_dir: str | os.PathLike, prep: Preprocessing) -> Path:
    """Writes ``preprocessing.json`` (atomically) into a model's folder.

    Given a versioned model folder, it goes into the live version, in place. To write it
    together with a new detector (one unit), pass ``add_files`` to
    :func:`vaegmm_jax.save_detector` and call this on the folder it is given, as ``fit`` does.
    """
    path = _version_folder(model_dir) / PREPROCESSING_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(prep.to_dict(), indent=2))
    os.replace(tmp, path)
    return path


def load_preprocessing(model_dir: str | os.PathLike) -> Preprocessing | None:
    """The saved preprocessing (of the live version, for a versioned model folder), or None
    when there is none (a model saved from Python)."""
    path = _version_folder(model_dir) / PREPROCESSING_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return Preprocessing.from_dict(data)
    except (json.JSONDecodeError, ValueError, TypeError, AttributeError, KeyError) as err:
        raise ValueError(f"{path} is corrupt: {_one_line(err)}") from err


# --------------------------------------------------------------------------- #
# Writing scores
# --------------------------------------------------------------------------- #


_OUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".npz": "npz"}
#: the columns a score file has besides the identifier column
OUTPUT_COLUMNS = ("score", "is_outlier")


def check_id_name(id_name: str | None) -> None:
    """Refuses an identifier column named like an output column: its values would be
    overwritten by the scores (or the flags) in the output, silently losing the ids."""
    if id_name is not None and str(id_name) in OUTPUT_COLUMNS:
        raise ValueError(
            f"the identifier column is named {id_name!r}, like an output column ({', '.join(OUTPUT_COLUMNS)}): "
            "the ids would be lost in the score file; rename that column in the data"
        )


def check_output_path(path: str | os.PathLike) -> str:
    """The output format of ``path``; ValueError when it cannot be written: an unknown
    extension, an existing folder, or a parent folder that is a file (``afile/s.csv``)."""
    p = Path(path)
    fmt = output_format(p)
    if p.is_dir():
        raise ValueError(f"{p} is a folder, expected an output file name")
    for parent in Path(os.path.abspath(p)).parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {p}: {parent} is a file, not a folder")
            break
    return fmt


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _OUT_FORMATS:
        raise ValueError(f"{path}: unsupported output type {suffix or '(none)'!r}; use .csv, .tsv, .parquet, .npy or .npz")
    return _OUT_FORMATS[suffix]


class ScoreWriter:
    """Writes (id, score, is_outlier) rows block by block, in order.

    CSV/TSV and Parquet are appended per block; NPY/NPZ (a structured array /
    separate arrays) are assembled at :meth:`close`. The file appears under its
    name only when complete (written to a temporary name, then renamed).
    """

    def __init__(self, path: str | os.PathLike, id_name: str | None):
        self.path = Path(path)
        self.fmt = check_output_path(self.path)
        check_id_name(id_name)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # e.g. a parent that is a file, created since the check
            raise ValueError(f"cannot create the folder of {self.path}: {_one_line(err)}") from err
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.id_name = id_name
        self.rows = 0
        self._pq_writer = None
        self._parts: list[tuple[np.ndarray | None, np.ndarray, np.ndarray]] = []
        self._first = True

    def _columns(self, ids, scores, flags):
        cols = {}
        cols[self.id_name or "row"] = ids if ids is not None else np.arange(self.rows, self.rows + len(scores))
        cols["score"] = np.asarray(scores, np.float32)
        cols["is_outlier"] = np.asarray(flags, np.int8)
        return cols

    def write(self, ids: np.ndarray | None, scores: np.ndarray, flags: np.ndarray) -> None:
        cols = self._columns(ids, scores, flags)
        if self.fmt in ("csv", "tsv"):
            pd = _import_pandas()
            pd.DataFrame(cols).to_csv(
                self.tmp, sep=_sep(self.fmt), index=False, header=self._first, mode="w" if self._first else "a",
                float_format="%.7g",
            )
        elif self.fmt == "parquet":
            pa, pq = _import_pyarrow()
            table = pa.table({k: pa.array(v) for k, v in cols.items()})
            if self._pq_writer is None:
                self._pq_writer = pq.ParquetWriter(self.tmp, table.schema)
            self._pq_writer.write_table(table)
        else:
            self._parts.append(tuple(cols.values()))
        self._first = False
        self.rows += len(scores)

    def close(self) -> Path:
        if self._first:  # nothing written: still produce a valid (empty) file
            self.write(np.zeros(0, np.int64) if self.id_name is None else np.zeros(0, str), np.zeros(0), np.zeros(0))
        if self._pq_writer is not None:
            self._pq_writer.close()
        if self.fmt in ("npy", "npz"):
            ids = np.concatenate([p[0] for p in self._parts])
            scores = np.concatenate([p[1] for p in self._parts])
            flags = np.concatenate([p[2] for p in self._parts])
            name = self.id_name or "row"
            if self.fmt == "npz":
                with open(self.tmp, "wb") as fh:
                    np.savez(fh, **{name: ids, "score": scores, "is_outlier": flags})
            else:
                ids = ids.astype(str) if ids.dtype == object else ids
                rec = np.empty(len(scores), dtype=[(name, ids.dtype), ("score", np.float32), ("is_outlier", np.int8)])
                rec[name], rec["score"], rec["is_outlier"] = ids, scores, flags
                with open(self.tmp, "wb") as fh:
                    np.save(fh, rec, allow_pickle=False)
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._pq_writer is not None:
            try:
                self._pq_writer.close()
            except Exception:
                pass
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def write_scores(path, scores: np.ndarray, flags: np.ndarray, ids: np.ndarray | None = None, id_name: str | None = None) -> Path:
    """Writes one block of scores (convenience over :class:`ScoreWriter`)."""
    w = ScoreWriter(path, id_name)
    try:
        w.write(ids, scores, flags)
        return w.close()
    except BaseException:
        w.abort()
        raise
