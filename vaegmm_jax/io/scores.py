"""Writing score files: one row per scored row, in order, with the row's identifier (or its
index, ``row``), ``score`` and ``is_outlier``; CSV, TSV, Parquet, NPY or NPZ by the output
file's extension. A file appears under its name only when it is complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from vaegmm_jax.io.messages import QUOTE_LIMIT, one_line
from vaegmm_jax.io.tables import require_pyarrow, separator

__all__ = ["OUTPUT_COLUMNS", "check_id_name", "check_output_path", "output_format", "ScoreWriter", "write_scores"]

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
            raise ValueError(f"cannot create the folder of {self.path}: {one_line(err, QUOTE_LIMIT)}") from err
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
            pd.DataFrame(cols).to_csv(
                self.tmp, sep=separator(self.fmt), index=False, header=self._first, mode="w" if self._first else "a",
                float_format="%.7g",
            )
        elif self.fmt == "parquet":
            pa, pq = require_pyarrow()
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
