"""Loaders for the benchmark data sets, read from local files only.

Every loader takes an explicit ``path`` or, when it is omitted, reads the
environment variable ``VAEGMM_DATA``: a folder laid out like ::

    $VAEGMM_DATA/
        kddcup99/kddcup.data_10_percent.gz
        odds/arrhythmia.mat
        odds/thyroid.npz
        mnist/t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
        fashion_mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz

``path`` may be that data root, the data set's own sub-folder (``.../odds``) or,
for single-file data sets, the file itself. Nothing here touches the network
except :func:`download`, an explicit opt-in that is never called implicitly.

Files whose SHA-256 digest is known (:data:`SHA256`) are checked when
``verify=True`` (the default), and their expected shapes and label counts are
checked after parsing. Files with unknown digests (other ODDS sets, renamed
copies) are parsed and structurally validated, but not checksummed.

The loaders never scale features: scaling must be fitted on training rows only
(see :func:`fit_minmax` / :func:`apply_minmax`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "SHA256",
    "ENV_VAR",
    "KDD_COLUMNS",
    "KDD_SYMBOLIC_COLUMNS",
    "ALIBI_KDD_COLUMNS",
    "KDDCUP_REV_N_ATTACKS",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "TabularDataset",
    "ImageDataset",
    "MinMaxParams",
    "ContaminationDetails",
    "load_kddcup99",
    "kddcup_rev",
    "fit_minmax",
    "apply_minmax",
    "load_odds",
    "load_mnist",
    "load_fashion_mnist",
    "contaminated_mnist",
    "download",
]

#: Environment variable naming the data root folder.
ENV_VAR = "VAEGMM_DATA"

#: Full SHA-256 digests of the known files, keyed by their path relative to the
#: data root. Computed from the copies in the project's shared data folder; the
#: KDD digest is also the one scikit-learn's ``fetch_kddcup99`` expects.
SHA256: dict[str, str] = {
    "kddcup99/kddcup.data_10_percent.gz": "8045aca0d84e70e622d1148d7df782496f6333bf6eb979a1b0837c42a9fd9561",
    "odds/arrhythmia.mat": "e4d47e499591ae31e5d7f0cd983367092353eac240f48e14c9b36457edb3460d",
    "odds/thyroid.npz": "8de161b3f235b7647bb0b39a836d983ff61d67bf234edac461da2d71e889cb87",
    "mnist/t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "mnist/t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    "fashion_mnist/train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "fashion_mnist/train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "fashion_mnist/t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

# Public homes used by :func:`download`. ODDS files have no stable canonical URL
# (the thyroid copy here is a NumPy conversion), so they need ``url=``.
_URLS: dict[str, str] = {
    "kddcup99/kddcup.data_10_percent.gz": "http://kdd.ics.uci.edu/databases/kddcup99/kddcup.data_10_percent.gz",
    "mnist/t10k-images-idx3-ubyte.gz": "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte.gz": "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
    **{
        f"fashion_mnist/{f}": f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{f}"
        for f in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    },
}

# --------------------------------------------------------------------------- #
# Containers
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class TabularDataset:
    """A tabular data set as NumPy arrays.

    Attributes:
        X: (N, F) float32 features, unscaled.
        y: (N,) int64 binary labels; ``1`` marks the anomaly class of the
            protocol the loader was asked for (see ``anomaly``).
        feature_names: F column names, or ``None`` when the file has none.
        continuous: (F,) bool, ``True`` for columns that should be scaled
            (numeric columns), ``False`` for one-hot indicator columns.
        name: short data set name.
        anomaly: plain-words description of what ``y == 1`` means.
        label_names: for KDD, the sorted distinct raw labels (``"normal."``,
            ``"smurf."``, ...); ``None`` otherwise.
        label_codes: for KDD, (N,) int16 index into ``label_names`` per row;
            ``None`` otherwise.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...] | None
    continuous: np.ndarray
    name: str
    anomaly: str
    label_names: tuple[str, ...] | None = None
    label_codes: np.ndarray | None = None


@dataclass(frozen=True)
class ImageDataset:
    """Images as NumPy arrays.

    Attributes:
        images: (N, 28, 28, 1) float32 in [0, 1] (raw bytes / 255).
        labels: (N,) int64 class labels 0..9.
        class_names: the 10 class names, indexed by label.
        name: short data set name and split, e.g. ``"mnist-test"``.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str


class MinMaxParams(NamedTuple):
    """Fitted min-max scaling of selected columns (see :func:`fit_minmax`).

    Attributes:
        columns: (C,) int64 indices of the scaled columns.
        data_min: (C,) float64 per-column minimum on the fitting rows.
        data_range: (C,) float64 max - min; 0 marks a constant column.
        n_features: F, the number of columns of the fitted matrix.
    """

    columns: np.ndarray
    data_min: np.ndarray
    data_range: np.ndarray
    n_features: int


class ContaminationDetails(NamedTuple):
    """Per-row provenance of :func:`contaminated_mnist` output (all (M,) arrays).

    Attributes:
        labels: class label of each row (an outlier keeps its source's label).
        kind: 0 = untouched original, 1 = transposed, 2 = half blacked out,
            3 = 10% of pixels flipped.
        source_index: index into the input images the row was made from.
        half: for kind 2, 0 = top half blacked out, 1 = bottom half; -1 otherwise.
    """

    labels: np.ndarray
    kind: np.ndarray
    source_index: np.ndarray
    half: np.ndarray


# --------------------------------------------------------------------------- #
# File helpers
# --------------------------------------------------------------------------- #


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(data: bytes, file: Path, expected: str) -> None:
    actual = _sha256_bytes(data)
    if actual != expected:
        raise ValueError(
            f"SHA-256 mismatch for {file}: expected {expected}, got {actual}. "
            "The file is corrupted, truncated or a different version; "
            "re-download it (or pass verify=False to skip the check)."
        )


def _data_root() -> Path:
    root = os.environ.get(ENV_VAR)
    if not root:
        raise FileNotFoundError(
            f"no path given and the environment variable {ENV_VAR} is not set: "
            f"set {ENV_VAR} to the data folder (containing kddcup99/, odds/, mnist/, "
            "fashion_mnist/) or pass path= explicitly"
        )
    return Path(root)


def _resolve(path: str | os.PathLike | None, relpath: str) -> Path:
    """Locate ``relpath`` (e.g. ``"odds/thyroid.npz"``) from ``path`` or the env.

    ``path`` may be the file itself, the data root, or the sub-folder.
    """
    rel = Path(relpath)
    base = _data_root() if path is None else Path(path)
    if base.is_file():
        return base
    for cand in (base / rel, base / rel.name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"data file not found: {base / rel} (nor {base / rel.name}); "
        f"set {ENV_VAR} to the data folder or pass path=, or fetch the file with "
        "vaegmm_jax.data.datasets.download()"
    )


def _maybe_gunzip(data: bytes, file: Path) -> bytes:
    """Decompress gzip data (detected by magic bytes, not by file name)."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"malformed gzip file {file}: {err}") from err


# --------------------------------------------------------------------------- #
# KDD Cup 1999
# --------------------------------------------------------------------------- #

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


def _parse_kdd_csv(text: bytes, file: Path, *, use_pandas: bool | None = None):
    """Parse KDD CSV bytes.

    Returns:
        numeric: (N, 38) float64, the non-symbolic columns in file order.
        categorical: 4 pairs ``(names, codes)`` for protocol_type, service,
            flag and the label: sorted distinct values and (N,) int64 codes.

    Uses pandas' C parser when pandas is importable (about 3x faster), and
    ``numpy.loadtxt`` otherwise (pandas is not a hard dependency).
    """
    if use_pandas is None:
        try:
            import pandas  # noqa: F401

            use_pandas = True
        except ImportError:
            use_pandas = False
    names = list(KDD_COLUMNS) + ["label"]
    str_cols = [KDD_COLUMNS[i] for i in _KDD_SYM_IDX] + ["label"]
    try:
        if use_pandas:
            import pandas as pd

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
    file = _resolve(path, _KDD_REL)
    data = file.read_bytes()
    known = file.name == Path(_KDD_REL).name or file.name == Path(_KDD_REL).stem
    # Only the gzip file's digest is known; an uncompressed copy is not checksummed.
    if verify and file.name == Path(_KDD_REL).name:
        _check_digest(data, file, SHA256[_KDD_REL])
    numeric, categorical = _parse_kdd_csv(_maybe_gunzip(data, file), file)
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


# --------------------------------------------------------------------------- #
# Min-max scaling (fit on training rows only)
# --------------------------------------------------------------------------- #


def fit_minmax(X_train: np.ndarray, columns: np.ndarray | Sequence[int] | None = None) -> MinMaxParams:
    """Fit per-column min-max scaling on training rows.

    Args:
        X_train: (N, F) training rows; must be finite.
        columns: which columns to scale: an (F,) boolean mask (e.g.
            ``TabularDataset.continuous``), a sequence of column indices, or
            ``None`` for all columns.

    Returns:
        :class:`MinMaxParams` for :func:`apply_minmax`.
    """
    X_train = np.asarray(X_train)
    if X_train.ndim != 2 or X_train.shape[0] == 0:
        raise ValueError(f"X_train must be a non-empty (N, F) array, got shape {X_train.shape}")
    n_features = X_train.shape[1]
    if columns is None:
        idx = np.arange(n_features)
    else:
        cols = np.asarray(columns)
        if cols.dtype == bool:
            if cols.shape != (n_features,):
                raise ValueError(f"boolean column mask has shape {cols.shape}, expected ({n_features},)")
            idx = np.flatnonzero(cols)
        else:
            idx = cols.astype(np.int64).ravel()
            if idx.size and (idx.min() < -n_features or idx.max() >= n_features):
                raise ValueError(f"column index out of range for {n_features} features")
            idx = idx % n_features
    sub = X_train[:, idx].astype(np.float64)
    if not np.isfinite(sub).all():
        raise ValueError("X_train has non-finite values in the columns to scale")
    lo = sub.min(axis=0) if idx.size else np.zeros(0)
    hi = sub.max(axis=0) if idx.size else np.zeros(0)
    return MinMaxParams(idx.astype(np.int64), lo, hi - lo, int(n_features))


def apply_minmax(params: MinMaxParams, X: np.ndarray) -> np.ndarray:
    """Apply fitted min-max scaling: ``(x - min) / (max - min)`` on the chosen columns.

    Training rows map into [0, 1]; other rows may fall outside (no clipping,
    like scikit-learn's ``MinMaxScaler``). Columns that were constant on the
    training rows map to 0. Other columns are copied unchanged.

    Args:
        params: from :func:`fit_minmax`.
        X: (M, F) rows with the same F as the fitted matrix.

    Returns:
        (M, F) array of X's floating dtype (float32 stays float32), a new array.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != params.n_features:
        raise ValueError(f"X must have shape (M, {params.n_features}), got {X.shape}")
    out_dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    out = X.astype(out_dtype, copy=True)
    if params.columns.size == 0:
        return out
    sub = X[:, params.columns].astype(np.float64)
    rng = params.data_range
    # Constant columns (range 0): divide by 1 and then zero them, no 0/0.
    safe = np.where(rng > 0, rng, 1.0)
    scaled = (sub - params.data_min) / safe
    scaled[:, rng == 0] = 0.0
    out[:, params.columns] = scaled.astype(out_dtype)
    return out


# --------------------------------------------------------------------------- #
# ODDS
# --------------------------------------------------------------------------- #

_ODDS_KNOWN = {
    # name: (file name in odds/, (rows, cols), number of anomalies)
    "arrhythmia": ("arrhythmia.mat", (452, 274), 66),
    "thyroid": ("thyroid.npz", (3772, 6), 93),
}


def _read_odds_arrays(file: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
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
        import scipy.io

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
            file = _resolve(path, f"odds/{fname}")
        except FileNotFoundError as first:
            # Accept the other ODDS format under the same name (e.g. the
            # original thyroid.mat); it has no known digest.
            other = fname.rsplit(".", 1)[0] + (".mat" if fname.endswith(".npz") else ".npz")
            try:
                file = _resolve(path, f"odds/{other}")
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
        _check_digest(data, file, SHA256[rel])
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


# --------------------------------------------------------------------------- #
# MNIST / Fashion-MNIST (IDX format)
# --------------------------------------------------------------------------- #

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_SPLIT = {"train": "train", "test": "t10k"}


def _parse_idx(raw: bytes, file: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (magic 0x0000 08 <ndim>), big-endian dims."""
    if len(raw) < 4:
        raise ValueError(f"malformed IDX file {file}: only {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(
            f"malformed IDX file {file}: magic number {raw[:4].hex()} != "
            f"{bytes((0, 0, 8, ndim)).hex()} (unsigned byte, {ndim}-D)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"malformed IDX file {file}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(
            f"malformed IDX file {file}: dims {dims} need {expected} bytes, file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_pair(
    dataset: str, split: str, path, class_names: tuple[str, ...], verify: bool
) -> ImageDataset:
    if split not in _IDX_SPLIT:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _IDX_SPLIT[split]
    arrays = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        rel = f"{dataset}/{prefix}-{kind}-ubyte.gz"
        file = _resolve(path, rel)
        data = file.read_bytes()
        if verify and rel in SHA256 and file.name == Path(rel).name:
            _check_digest(data, file, SHA256[rel])
        arrays.append(_parse_idx(_maybe_gunzip(data, file), file, ndim))
    images, labels = arrays
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{dataset} {split}: images have shape {images.shape}, expected (N, 28, 28)")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{dataset} {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.max(initial=0) > 9:
        raise ValueError(f"{dataset} {split}: labels outside 0..9")
    expected_n = 60_000 if split == "train" else 10_000
    if verify and images.shape[0] != expected_n:
        raise ValueError(f"{dataset} {split}: {images.shape[0]} images, expected {expected_n}")
    return ImageDataset(
        images=(images.astype(np.float32) / np.float32(255.0))[..., None],
        labels=labels.astype(np.int64),
        class_names=class_names,
        name=f"{dataset.replace('_', '-')}-{split}",
    )


def load_mnist(split: str = "test", path: str | os.PathLike | None = None, *, verify: bool = True) -> ImageDataset:
    """Load MNIST from IDX files (gzip or plain).

    Args:
        split: ``"test"`` (t10k, 10,000 images; the shared data folder ships
            only this one) or ``"train"`` (60,000; no digest known here).
        path: the data root or the ``mnist/`` folder; defaults to ``$VAEGMM_DATA``.
        verify: check SHA-256 of known files and the image count.

    Returns:
        :class:`ImageDataset` with images (N, 28, 28, 1) float32 in [0, 1]
        and labels (N,) int64.
    """
    return _load_idx_pair("mnist", split, path, MNIST_CLASSES, verify)


def load_fashion_mnist(
    split: str = "train", path: str | os.PathLike | None = None, *, verify: bool = True
) -> ImageDataset:
    """Load Fashion-MNIST from IDX files (gzip or plain).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        path: the data root or the ``fashion_mnist/`` folder; defaults to ``$VAEGMM_DATA``.
        verify: check SHA-256 of known files and the image count.

    Returns:
        :class:`ImageDataset` with images (N, 28, 28, 1) float32 in [0, 1]
        and labels (N,) int64.
    """
    return _load_idx_pair("fashion_mnist", split, path, FASHION_MNIST_CLASSES, verify)


def contaminated_mnist(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int | np.random.Generator,
    fraction: float = 0.03,
    flip_fraction: float = 0.10,
    return_details: bool = False,
):
    """Add synthetic outliers to a set of images (the teaching notebook's recipe).

    Exactly, with ``rng = numpy.random.default_rng(seed)`` and N input images:

    1. ``n_out = round(fraction * N)`` source indices are drawn uniformly
       *with replacement*: ``rng.integers(0, N, n_out)``.
    2. The copies are split by position into three groups of sizes
       ``n_out // 3`` (+1 for the first ``n_out % 3`` groups):
       kind 1 transposed (rows and columns swapped);
       kind 2 half blacked out: per image a fair coin (``rng.random() < 0.5``)
       picks the top half (rows ``[0, H//2)``) or else the bottom half (rows
       ``[H//2, H)``), set to 0;
       kind 3 pixel flips: ``round(flip_fraction * H * W)`` distinct pixels per
       image (78 of 784 at 10%) are set to ``1 - value`` in every channel.
    3. The outliers are appended after the N untouched originals and the
       N + n_out rows are shuffled with ``rng.permutation``.

    So the result holds every original once plus n_out outliers (for MNIST
    test: 10,000 + 300 rows, 2.9% outliers). Same seed -> same output.

    Args:
        images: (N, H, W, C) or (N, H, W) float images in [0, 1], H == W.
        labels: (N,) class labels (carried along to the details).
        seed: int seed or ``numpy.random.Generator``.
        fraction: outliers drawn, as a fraction of N.
        flip_fraction: fraction of pixels flipped for kind 3.
        return_details: also return a :class:`ContaminationDetails`.

    Returns:
        ``(images_out, is_outlier)`` or ``(images_out, is_outlier, details)``:
        images_out (N + n_out, H, W[, C]) float32, is_outlier (N + n_out,) int64.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim not in (3, 4) or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (N, H, W[, C]) with H == W, got {images.shape}")
    n = images.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if n == 0:
        raise ValueError("no images given")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("images must be scaled to [0, 1] (the pixel flip is 1 - value)")
    if not 0 < fraction <= 1 or not 0 < flip_fraction <= 1:
        raise ValueError("fraction and flip_fraction must be in (0, 1]")
    n_out = int(round(fraction * n))
    if n_out < 1:
        raise ValueError(f"fraction {fraction} of {n} images gives no outliers")
    rng = np.random.default_rng(seed)
    h, w = images.shape[1], images.shape[2]

    src = rng.integers(0, n, size=n_out)
    sizes = [n_out // 3 + (i < n_out % 3) for i in range(3)]
    kind = np.repeat(np.array([1, 2, 3], dtype=np.int64), sizes)
    out = images[src].astype(np.float32, copy=True)

    t = kind == 1
    out[t] = np.swapaxes(out[t], 1, 2)

    half = np.full(n_out, -1, dtype=np.int64)
    b = np.flatnonzero(kind == 2)
    top = rng.random(b.size) < 0.5
    half[b] = np.where(top, 0, 1)
    out[b[top], : h // 2] = 0.0
    out[b[~top], h // 2 :] = 0.0

    f = np.flatnonzero(kind == 3)
    k = int(round(flip_fraction * h * w))
    # k distinct pixels per image: the first k of a random permutation of H*W.
    pix = np.argsort(rng.random((f.size, h * w)), axis=1)[:, :k]
    rows, cols = np.divmod(pix, w)
    img_idx = np.repeat(f, k)
    out[img_idx, rows.ravel(), cols.ravel()] = 1.0 - out[img_idx, rows.ravel(), cols.ravel()]

    all_images = np.concatenate([images.astype(np.float32), out], axis=0)
    is_outlier = np.concatenate([np.zeros(n, np.int64), np.ones(n_out, np.int64)])
    perm = rng.permutation(n + n_out)
    result = (all_images[perm], is_outlier[perm])
    if not return_details:
        return result
    details = ContaminationDetails(
        labels=np.concatenate([labels, labels[src]])[perm],
        kind=np.concatenate([np.zeros(n, np.int64), kind])[perm],
        source_index=np.concatenate([np.arange(n), src]).astype(np.int64)[perm],
        half=np.concatenate([np.full(n, -1, np.int64), half])[perm],
    )
    return result + (details,)


# --------------------------------------------------------------------------- #
# Opt-in download
# --------------------------------------------------------------------------- #

_DOWNLOAD_NAMES: dict[str, tuple[str, ...]] = {
    "kddcup99": ("kddcup99/kddcup.data_10_percent.gz",),
    "arrhythmia": ("odds/arrhythmia.mat",),
    "thyroid": ("odds/thyroid.npz",),
    "mnist": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"),
    "fashion_mnist": tuple(
        f"fashion_mnist/{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    ),
}


def _fetch_verified(url: str, target: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Stream ``url`` into a temp file next to ``target``; verify; then move into place.

    The target never holds a partial or unverified file: on any error or a
    digest mismatch the temp file is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                fh.write(chunk)
        if sha256 is not None and h.hexdigest() != sha256:
            raise ValueError(
                f"SHA-256 mismatch for {url} (destined for {target}): expected {sha256}, "
                f"got {h.hexdigest()}; nothing was written"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def download(
    name: str,
    dest: str | os.PathLike,
    *,
    url: str | None = None,
    sha256: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Download a data set into ``dest`` (laid out like ``$VAEGMM_DATA``). Needs a network.

    Never called implicitly: loaders only read local files.

    Args:
        name: ``"kddcup99"`` (UCI archive), ``"mnist"`` (test split),
            ``"fashion_mnist"`` (both splits), ``"arrhythmia"`` or
            ``"thyroid"`` (ODDS: ``url`` required).
        dest: the data root; files go to ``dest/<subfolder>/<file>``.
        url: override the source URL (single-file data sets only).
        sha256: expected digest, overriding :data:`SHA256` (needed when a
            ``url`` serves a different but trusted version of the file).
        overwrite: re-download files that already exist (existing files are
            otherwise kept as they are; the loaders verify them).

    Returns:
        The paths of the data set's files under ``dest``.

    Raises:
        ValueError: unknown name, missing URL, or a digest mismatch (the
            download is discarded; nothing is moved into place).
    """
    if name not in _DOWNLOAD_NAMES:
        raise ValueError(f"unknown data set {name!r}; choose from {sorted(_DOWNLOAD_NAMES)}")
    rels = _DOWNLOAD_NAMES[name]
    if url is not None and len(rels) != 1:
        raise ValueError(f"url= only works for single-file data sets; {name!r} has {len(rels)} files")
    written = []
    for rel in rels:
        target = Path(dest) / rel
        if target.exists() and not overwrite:
            written.append(target)
            continue
        src = url if url is not None else _URLS.get(rel)
        if src is None:
            raise ValueError(f"no public URL is known for {rel}; pass url=")
        expected = sha256 if sha256 is not None else SHA256.get(rel)
        written.append(_fetch_verified(src, target, expected))
    return written
