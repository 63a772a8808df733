"""Reading tables and arrays: formats, column selection, chunked reading and labels.

Formats (chosen by file extension):

* ``.csv`` / ``.tsv`` (also ``.csv.gz`` etc.): a header row, read with pandas
  (``read_csv(chunksize=...)`` when streaming).
* ``.parquet`` / ``.pq``: read with pyarrow (row batches when streaming); pyarrow is the
  optional extra ``vaegmm_jax[parquet]``.
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

The scaling fitted on the training rows and saved with a model is
:mod:`vaegmm_jax.io.preprocessing`; writing score files is :mod:`vaegmm_jax.io.scores`.
Nothing here prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TypedDict, Unpack

import numpy as np
import pandas as pd

from vaegmm_jax.io.formats import (
    SUPPORTED_SUFFIXES,
    array_columns,
    check_exists,
    count_rows,
    file_format,
    npz_arrays,
    npz_feature_key,
    open_npy,
    parquet_file,
    require_pyarrow,
    separator,
)
from vaegmm_jax.io.messages import QUOTE_LIMIT, one_line

__all__ = [
    "SUPPORTED_SUFFIXES",
    "DEFAULT_CHUNK_ROWS",
    "Table",
    "Selection",
    "file_format",
    "separator",
    "require_pyarrow",
    "list_columns",
    "select_columns",
    "read_table",
    "iter_tables",
    "count_rows",
    "parse_column_list",
    "binary_labels",
]

DEFAULT_CHUNK_ROWS = 65536


# --------------------------------------------------------------------------- #
# Formats and columns
# --------------------------------------------------------------------------- #


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


def list_columns(path: str | os.PathLike) -> list[str]:
    """All column names of a file (for arrays: f0.., plus 1-D npz keys)."""
    path = check_exists(path)
    fmt = file_format(path)
    if fmt in ("csv", "tsv"):
        try:
            head = pd.read_csv(path, sep=separator(fmt), nrows=0)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: malformed {fmt.upper()} ({one_line(err, QUOTE_LIMIT)})") from err
        return [str(c) for c in head.columns]
    if fmt == "parquet":
        _, pq = require_pyarrow()
        return list(parquet_file(path, pq).schema_arrow.names)
    if fmt == "npy":
        arr = open_npy(path)
        return array_columns(arr.shape[1]) if arr.ndim == 2 else []
    arrays = npz_arrays(path)
    key = npz_feature_key(arrays, path)
    x = arrays[key]
    cols = array_columns(x.shape[1]) if x.ndim == 2 else []
    return cols + [k for k, a in arrays.items() if k != key and a.ndim == 1 and a.shape[0] == x.shape[0]]


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


class ColumnRequest(TypedDict, total=False):
    """Which columns to read (the keywords of :func:`select_columns`, :func:`read_table` and
    :func:`iter_tables`): ``columns`` (the features; default all but the id and label
    columns), ``exclude``, ``id_column``, ``label_column`` and ``id_optional``."""

    columns: Sequence[str] | None
    exclude: Sequence[str] | None
    id_column: str | None
    label_column: str | None
    id_optional: bool


def read_table(path: str | os.PathLike, **request: Unpack[ColumnRequest]) -> Table:
    """Reads a whole file (training data) into memory. See :func:`iter_tables` to stream."""
    blocks = list(iter_tables(path, chunk_rows=None, **request))
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


def iter_tables(path: str | os.PathLike, *, chunk_rows: int | None = DEFAULT_CHUNK_ROWS,
                **request: Unpack[ColumnRequest]) -> Iterator[Table]:
    """Yields the file's rows in order, in blocks of at most ``chunk_rows`` (None: one block).

    Only the selected columns are read. The whole file is never held in memory for
    CSV/TSV (pandas chunks), Parquet (pyarrow row batches) and NPY (memory map);
    an NPZ member is read whole (NumPy cannot map zip members).
    """
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or int(chunk_rows) < 1):
        raise ValueError(f"chunk rows must be a positive integer, got {chunk_rows!r}")
    path = check_exists(path)
    fmt = file_format(path)
    kw = {name: request.get(name) for name in ("columns", "exclude", "id_column", "label_column")}
    kw["id_optional"] = bool(request.get("id_optional", False))
    unknown = set(request) - set(ColumnRequest.__annotations__)
    if unknown:
        raise TypeError(f"unexpected column keywords {sorted(unknown)}")
    if fmt in ("csv", "tsv"):
        yield from _iter_csv(path, fmt, chunk_rows, **kw)
    elif fmt == "parquet":
        yield from _iter_parquet(path, chunk_rows, **kw)
    elif fmt == "npy":
        yield from _iter_array(path, open_npy(path), {}, chunk_rows, **kw)
    else:
        arrays = npz_arrays(path)
        key = npz_feature_key(arrays, path)
        side = {k: a for k, a in arrays.items() if k != key}
        yield from _iter_array(path, arrays[key], side, chunk_rows, **kw)


def _iter_csv(path: Path, fmt: str, chunk_rows, **kw) -> Iterator[Table]:
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
        reader = pd.read_csv(path, sep=separator(fmt), chunksize=chunk_rows or None, dtype=dtypes)
        frames = reader if chunk_rows else [reader]
        for frame in frames:
            if len(frame) == 0:
                continue
            yield _table_from_frame(frame, sel, path, start)
            start += len(frame)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: malformed {fmt.upper()} file ({one_line(err, QUOTE_LIMIT)})") from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{path}: empty file ({one_line(err, QUOTE_LIMIT)})") from err
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
    pa, pq = require_pyarrow()
    pf = parquet_file(path, pq)
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
        raise ValueError(f"{path}: cannot read Parquet data near row {start + 1} ({one_line(err, QUOTE_LIMIT)})") from err
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
        available = array_columns(arr.shape[1]) + list(side)
        sel = select_columns(available, path, **kw)
        col_idx = {name: i for i, name in enumerate(array_columns(arr.shape[1]))}
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
