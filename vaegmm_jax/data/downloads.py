"""Opt-in download of the data sets into a folder laid out like ``$VAEGMM_DATA`` (needs a network).

Nothing else in :mod:`vaegmm_jax.data` touches the network: the loaders only read local files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from vaegmm_jax.data.files import SHA256

__all__ = ["fetch_verified", "download"]

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

_DOWNLOAD_NAMES: dict[str, tuple[str, ...]] = {
    "kddcup99": ("kddcup99/kddcup.data_10_percent.gz",),
    "arrhythmia": ("odds/arrhythmia.mat",),
    "thyroid": ("odds/thyroid.npz",),
    "mnist": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"),
    "fashion_mnist": tuple(
        f"fashion_mnist/{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")
    ),
}


def fetch_verified(url: str, target: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Streams ``url`` into a temporary file next to ``target``, verifies it, then moves it into place.

    The target never holds a partial or unverified file: on any error or a
    digest mismatch the temporary file is removed.

    Args:
        url: where to read from (any scheme ``urllib`` opens, ``file://`` included).
        target: the file to write.
        sha256: the expected hex digest, or None to skip the check.
        timeout: seconds ``urllib`` waits for the server.

    Returns:
        ``target``.
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
        written.append(fetch_verified(src, target, expected))
    return written
