"""Where the data files are and whether they are intact: the data root, file lookup, digests, gzip.

Every loader takes an explicit ``path`` or, when it is omitted, reads the environment
variable :data:`ENV_VAR` (``VAEGMM_DATA``): a folder laid out like ::

    $VAEGMM_DATA/
        kddcup99/kddcup.data_10_percent.gz
        odds/arrhythmia.mat
        odds/thyroid.npz
        mnist/t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
        fashion_mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz

``path`` may be that data root, the data set's own sub-folder (``.../odds``) or, for
single-file data sets, the file itself.

Files whose SHA-256 digest is known (:data:`SHA256`) are checked when the loaders are
called with ``verify=True`` (the default).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

__all__ = ["ENV_VAR", "SHA256", "data_root", "resolve_data_file", "check_sha256", "gunzip_if_compressed"]

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


def check_sha256(data: bytes, file: Path, expected: str) -> None:
    """Raises a ValueError naming ``file`` unless the SHA-256 hex digest of ``data`` is ``expected``."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ValueError(
            f"SHA-256 mismatch for {file}: expected {expected}, got {actual}. "
            "The file is corrupted, truncated or a different version; "
            "re-download it (or pass verify=False to skip the check)."
        )


def data_root() -> Path:
    """The folder named by ``$VAEGMM_DATA``; a FileNotFoundError saying what to set when it is unset."""
    root = os.environ.get(ENV_VAR)
    if not root:
        raise FileNotFoundError(
            f"no path given and the environment variable {ENV_VAR} is not set: "
            f"set {ENV_VAR} to the data folder (containing kddcup99/, odds/, mnist/, "
            "fashion_mnist/) or pass path= explicitly"
        )
    return Path(root)


def resolve_data_file(path: str | os.PathLike | None, relpath: str) -> Path:
    """Locates ``relpath`` (e.g. ``"odds/thyroid.npz"``) from ``path`` or ``$VAEGMM_DATA``.

    Args:
        path: the file itself, the data root, or the data set's sub-folder; None reads
            :data:`ENV_VAR`.
        relpath: the file's path relative to the data root.

    Returns:
        The path of an existing file; a FileNotFoundError names where it was looked for.
    """
    rel = Path(relpath)
    base = data_root() if path is None else Path(path)
    if base.is_file():
        return base
    for cand in (base / rel, base / rel.name):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"data file not found: {base / rel} (nor {base / rel.name}); "
        f"set {ENV_VAR} to the data folder or pass path=, or fetch the file with "
        "vaegmm_jax.data.download()"
    )


def gunzip_if_compressed(data: bytes, file: Path) -> bytes:
    """``data`` decompressed when it is gzip (detected by its magic bytes, not by the file name), else as is.

    A malformed gzip stream raises a ValueError naming ``file``.
    """
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"malformed gzip file {file}: {err}") from err
