"""KDD Cup 1999 (the 10% file): the DAGMM and alibi-detect encodings, and KDDCUP-Rev.

The loader reads local files only and never scales features (see
:mod:`vaegmm_jax.data.scaling`: scaling is fitted on training rows only).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from vaegmm_jax.data.containers import TabularDataset
from vaegmm_jax.data.files import SHA256, check_sha256, gunzip_if_compressed, resolve_data_file

__all__ = [
    "KDD_COLUMNS",
    "KDD_SYMBOLIC_COLUMNS",
    "ALIBI_KDD_COLUMNS",
    "KDDCUP_REV_N_ATTACKS",
    "parse_kdd_csv",
    "load_kddcup99",
    "kddcup_rev",
]

#: The 41 feature columns of the KDD Cup 1999 CSV, in file order (the 42nd
#: field is the label, e.g. ``"normal."`` or ``"smurf."``).
KDD_COLUMNS: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes",
    "land", "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in",
    "num_compromised", "root_shell", "su_attempted", "num_root",
    "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate",
    "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
    "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate",
    "dst_host_serror_rate", "dst_host_srv_serror_rate", "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate",
)  # fmt: skip

#: The symbolic columns one-hot encoded by the DAGMM protocol.
KDD_SYMBOLIC_COLUMNS: tuple[str, ...] = ("protocol_type", "service", "flag")

#: The 18 continuous columns of alibi-detect's ``fetch_kdd`` (its default
#: ``keep_cols``, checked against alibi_detect/datasets.py), in file order.
ALIBI_KDD_COLUMNS: tuple[str, ...] = (
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate",
    "srv_rerror_rate", "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate",
    "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate",
    "dst_host_diff_srv_rate", "dst_host_same_src_port_rate",
    "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate",
    "dst_host_srv_rerror_rate",
)  # fmt: skip

#: Number of attack rows in the KDDCUP-Rev construction (20% of the result).
KDDCUP_REV_N_ATTACKS = 24_319

_KDD_REL = "kddcup99/kddcup.data_10_percent.gz"
_KDD_NORMAL = "normal."
# Expected facts about the known 10% file, checked after parsing.
_KDD_N_ROWS = 494_021
_KDD_N_NORMAL = 97_278
_KDD_N_CATEGORIES = {"protocol_type": 3, "service": 66, "flag": 11}
_KDD_SYM_IDX = tuple(KDD_COLUMNS.index(c) for c in KDD_SYMBOLIC_COLUMNS)
_KDD_NUM_IDX = tuple(i for i in range(len(KDD_COLUMNS)) if i not in _KDD_SYM_IDX)


def _sorted_codes(cats, codes) -> tuple[tuple[str, ...], np.ndarray]:
    """Re-index categorical codes so that the category names are sorted."""
    cats = np.asarray([str(c) for c in cats])
    order = np.argsort(cats, kind="stable")
    remap = np.empty(len(cats), dtype=np.int64)
    remap[order] = np.arange(len(cats))
    return tuple(cats[order].tolist()), remap[np.asarray(codes, dtype=np.int64)]


def parse_kdd_csv(text: bytes, file: Path, *, use_pandas: bool = True):
    """Parses the bytes of a KDD Cup 1999 CSV file (42 fields a row, no header).

    Args:
        text: the (decompressed) file contents.
        file: the file's path, for error messages.
        use_pandas: pandas' C parser (about 3x faster) or ``numpy.loadtxt``; both give
            the same arrays.

    Returns:
        numeric: (N, 38) float64, the non-symbolic columns in file order.
        categorical: 4 pairs ``(names, codes)`` for protocol_type, service,
            flag and the label: sorted distinct values and (N,) int64 codes.

    Raises:
        ValueError: a malformed file (wrong field count, missing or non-finite values).
    """
    names = list(KDD_COLUMNS) + ["label"]
    str_cols = [KDD_COLUMNS[i] for i in _KDD_SYM_IDX] + ["label"]
    try:
        if use_pandas:
            import pandas as pd  # imported here, not at start-up: it takes about half a second

            # "category" keeps the 4 string columns as integer codes: sorting
            # 494k Python strings with np.unique would triple the load time.
            dtypes = {n: ("category" if n in str_cols else np.float64) for n in names}
            # header=None + names: a row with too many fields raises; a row with
            # too few is NaN-filled, caught by the checks below.
            df = pd.read_csv(
                io.BytesIO(text), header=None, names=names, dtype=dtypes, engine="c",
            )  # fmt: skip
            numeric = df[[KDD_COLUMNS[i] for i in _KDD_NUM_IDX]].to_numpy(np.float64)
            categorical = []
            for c in str_cols:
                cat = df[c].cat
                if (cat.codes < 0).any():
                    raise ValueError(f"missing value in column {c!r}")
                categorical.append(_sorted_codes(cat.categories, cat.codes.to_numpy()))
        else:
            with warnings.catch_warnings():
                # loadtxt warns on empty input; the shape check below reports it.
                warnings.simplefilter("ignore", UserWarning)
                numeric = np.loadtxt(
                    io.BytesIO(text), delimiter=",", usecols=_KDD_NUM_IDX,
                    dtype=np.float64, ndmin=2,
                )  # fmt: skip
                strs = np.loadtxt(
                    io.BytesIO(text), delimiter=",", usecols=_KDD_SYM_IDX + (41,),
                    dtype=str, ndmin=2,
                )  # fmt: skip
            categorical = []
            for j in range(4):
                cats, codes = np.unique(strs[:, j], return_inverse=True)
                categorical.append((tuple(cats.tolist()), codes.astype(np.int64)))
    except ValueError as err:  # includes pandas.errors.ParserError / EmptyDataError
        raise ValueError(f"malformed KDD Cup 1999 CSV {file}: {err}") from err
    if numeric.ndim != 2 or numeric.shape[1] != len(_KDD_NUM_IDX) or numeric.shape[0] == 0:
        raise ValueError(
            f"malformed KDD Cup 1999 CSV {file}: expected rows of 42 fields, "
            f"parsed numeric block of shape {numeric.shape}"
        )
    # Every row has exactly 41 commas; this also catches extra fields, which
    # the loadtxt path (usecols) would otherwise ignore. Fields hold no commas.
    n_commas = text.count(b",")
    if n_commas != 41 * numeric.shape[0]:
        raise ValueError(
            f"malformed KDD Cup 1999 CSV {file}: {n_commas} field separators for "
            f"{numeric.shape[0]} rows, expected 41 per row (42 fields)"
        )
    if not np.isfinite(numeric).all():
        bad = int(np.flatnonzero(~np.isfinite(numeric).all(axis=1))[0])
        raise ValueError(
            f"malformed KDD Cup 1999 CSV {file}: missing or non-finite numeric field in row {bad}"
        )
    return numeric, categorical


def load_kddcup99(
    path: str | os.PathLike | None = None,
    *,
    protocol: str = "dagmm",
    verify: bool = True,
) -> TabularDataset:
    """Load KDD Cup 1999 (the 10% file, ``kddcup.data_10_percent.gz``).

    Args:
        path: the ``.gz`` (or uncompressed) CSV file, its folder, or the data
            root; defaults to ``$VAEGMM_DATA``.
        protocol:
            ``"dagmm"`` (Zong et al., 2018): the 38 numeric columns in file
            order, followed by a one-hot encoding of the 3 symbolic columns
            ``protocol_type``, ``service`` and ``flag`` (categories sorted; on
            the 10% file 3 + 66 + 11 = 80 indicator columns), so X is
            (494021, 118). The paper's 120 columns came from the full file.
            ``y = 1`` for the ``normal.`` rows (97,278 rows, ~20%): in this
            protocol the normal traffic is the minority *anomaly* class.
            ``continuous`` is True for the 38 numeric columns (min-max scale
            those, fitted on training rows only), False for the indicators.

            ``"alibi"`` (alibi-detect's ``fetch_kdd`` example): only the 18
            continuous columns of :data:`ALIBI_KDD_COLUMNS`, X is (494021, 18);
            ``y = 1`` for attacks (the outliers), 0 for ``normal.``.
        verify: check the file's SHA-256 against :data:`SHA256` (when the file
            name is the known one) and the expected row/label/column counts.

    Returns:
        A :class:`TabularDataset` with raw (unscaled) float32 features. Large
        byte counts (``src_bytes`` up to ~6.9e8) lose integer precision in
        float32; min-max scaling is unaffected in practice.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: checksum mismatch, malformed CSV, unexpected shape, or an
            unknown ``protocol``.
    """
    if protocol not in ("dagmm", "alibi"):
        raise ValueError(f"protocol must be 'dagmm' or 'alibi', got {protocol!r}")
    file = resolve_data_file(path, _KDD_REL)
    data = file.read_bytes()
    known = file.name == Path(_KDD_REL).name or file.name == Path(_KDD_REL).stem
    # Only the gzip file's digest is known; an uncompressed copy is not checksummed.
    if verify and file.name == Path(_KDD_REL).name:
        check_sha256(data, file, SHA256[_KDD_REL])
    numeric, categorical = parse_kdd_csv(gunzip_if_compressed(data, file), file)
    n = numeric.shape[0]
    label_names, label_codes = categorical[3]
    label_codes = label_codes.astype(np.int16)
    is_normal = (
        label_codes == label_names.index(_KDD_NORMAL)
        if _KDD_NORMAL in label_names
        else np.zeros(n, dtype=bool)
    )
    if verify and known:
        if n != _KDD_N_ROWS or int(is_normal.sum()) != _KDD_N_NORMAL:
            raise ValueError(
                f"unexpected content in {file}: {n} rows with {int(is_normal.sum())} "
                f"'normal.' rows, expected {_KDD_N_ROWS} and {_KDD_N_NORMAL}"
            )

    if protocol == "alibi":
        cols = [_KDD_NUM_IDX.index(KDD_COLUMNS.index(c)) for c in ALIBI_KDD_COLUMNS]
        X = numeric[:, cols].astype(np.float32)
        return TabularDataset(
            X=X,
            y=(~is_normal).astype(np.int64),
            feature_names=ALIBI_KDD_COLUMNS,
            continuous=np.ones(X.shape[1], dtype=bool),
            name="kddcup99-alibi",
            anomaly="attacks (every label except 'normal.')",
            label_names=label_names,
            label_codes=label_codes,
        )

    # Fill one float32 matrix in place: materialising float64 one-hot blocks
    # and concatenating them costs ~1 GB and seconds for no benefit.
    n_onehot = sum(len(cats) for cats, _ in categorical[:3])
    X = np.zeros((n, numeric.shape[1] + n_onehot), dtype=np.float32)
    X[:, : numeric.shape[1]] = numeric
    names = [KDD_COLUMNS[i] for i in _KDD_NUM_IDX]
    offset = numeric.shape[1]
    rows = np.arange(n)
    for col, (cats, codes) in zip(KDD_SYMBOLIC_COLUMNS, categorical[:3]):
        if verify and known and len(cats) != _KDD_N_CATEGORIES[col]:
            raise ValueError(
                f"unexpected content in {file}: column {col!r} has {len(cats)} "
                f"categories, expected {_KDD_N_CATEGORIES[col]}"
            )
        X[rows, offset + codes] = 1.0
        offset += len(cats)
        names.extend(f"{col}={c}" for c in cats)
    continuous = np.zeros(X.shape[1], dtype=bool)
    continuous[: numeric.shape[1]] = True
    if verify and known and X.shape != (_KDD_N_ROWS, 118):
        raise ValueError(f"unexpected feature matrix shape {X.shape} from {file}, expected (494021, 118)")
    return TabularDataset(
        X=X,
        y=is_normal.astype(np.int64),
        feature_names=tuple(names),
        continuous=continuous,
        name="kddcup99-dagmm",
        anomaly="'normal.' rows (DAGMM protocol: the minority class is the anomaly)",
        label_names=label_names,
        label_codes=label_codes,
    )


def kddcup_rev(
    X: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator | int | None,
    *,
    n_attacks: int = KDDCUP_REV_N_ATTACKS,
    return_index: bool = False,
):
    """Build KDDCUP-Rev: all ``normal.`` rows plus ``n_attacks`` random attack rows.

    In KDDCUP-Rev the roles are reversed with respect to the DAGMM KDDCUP
    protocol: the attacks are the anomalies (24,319 of 121,597 rows, 20%).
    Redraw per seed/run, as the paper does.

    Args:
        X: (N, F) features from ``load_kddcup99(protocol="dagmm")``.
        y: (N,) labels of that protocol: 1 = ``normal.``, 0 = attack.
        rng: a ``numpy.random.Generator`` or a seed for ``default_rng``.
        n_attacks: number of attack rows drawn without replacement.
        return_index: also return the selected row indices into X.

    Returns:
        ``(X_rev, y_rev)`` or ``(X_rev, y_rev, index)``: X_rev (M, F) with
        M = #normal + n_attacks rows in their original order, y_rev (M,) int64
        with 1 = attack (anomaly), 0 = normal; index (M,) int64.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"expected X (N, F) and y (N,), got {X.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must be binary (1 = 'normal.', 0 = attack, the DAGMM protocol labels)")
    rng = np.random.default_rng(rng)
    normal_idx = np.flatnonzero(y == 1)
    attack_idx = np.flatnonzero(y == 0)
    if n_attacks > attack_idx.size:
        raise ValueError(f"asked for {n_attacks} attack rows, only {attack_idx.size} available")
    chosen = rng.choice(attack_idx, size=n_attacks, replace=False)
    index = np.sort(np.concatenate([normal_idx, chosen])).astype(np.int64)
    y_rev = (y[index] == 0).astype(np.int64)
    if return_index:
        return X[index], y_rev, index
    return X[index], y_rev
