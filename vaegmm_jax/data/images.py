"""Image data sets: MNIST and Fashion-MNIST from IDX files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vaegmm_jax.data.containers import ImageDataset
from vaegmm_jax.data.files import SHA256, check_sha256, gunzip_if_compressed, resolve_data_file

__all__ = [
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IDX_CLASS_NAMES",
    "load_idx_images",
    "load_mnist",
    "load_fashion_mnist",
]

#: class names of MNIST, by label
MNIST_CLASSES = tuple(str(i) for i in range(10))
#: class names of Fashion-MNIST, by label
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
#: class names of the IDX image sets, by data set (the sub-folder of the data root)
IDX_CLASS_NAMES: dict[str, tuple[str, ...]] = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_MNIST_CLASSES}
_IDX_SPLIT = {"train": "train", "test": "t10k"}


def _parse_idx(raw: bytes, file: Path, ndim: int) -> np.ndarray:
    """The (d_1, ..., d_ndim) uint8 array of an unsigned-byte IDX file's bytes (magic 0x0000 08 <ndim>, big-endian dims)."""
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


def load_idx_images(
    dataset: str, split: str, path: str | os.PathLike | None = None, *, verify: bool = True
) -> ImageDataset:
    """Loads a 28 x 28 grey-scale image set of ten classes from its IDX files (gzip or plain).

    Args:
        dataset: ``"mnist"`` or ``"fashion_mnist"`` (the sub-folder of the data root and the
            key of :data:`IDX_CLASS_NAMES`).
        split: ``"train"`` (60,000 images) or ``"test"`` (t10k, 10,000 images).
        path: the data root or the data set's folder; defaults to ``$VAEGMM_DATA``.
        verify: check SHA-256 of known files and the image count.

    Returns:
        :class:`ImageDataset` with images (N, 28, 28, 1) float32 in [0, 1]
        and labels (N,) int64.
    """
    if dataset not in IDX_CLASS_NAMES:
        raise ValueError(f"dataset must be one of {sorted(IDX_CLASS_NAMES)}, got {dataset!r}")
    class_names = IDX_CLASS_NAMES[dataset]
    if split not in _IDX_SPLIT:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = _IDX_SPLIT[split]
    arrays = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        rel = f"{dataset}/{prefix}-{kind}-ubyte.gz"
        file = resolve_data_file(path, rel)
        data = file.read_bytes()
        if verify and rel in SHA256 and file.name == Path(rel).name:
            check_sha256(data, file, SHA256[rel])
        arrays.append(_parse_idx(gunzip_if_compressed(data, file), file, ndim))
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
    """MNIST digits: :func:`load_idx_images` of ``"mnist"``. The shared data folder ships only
    the test split (no digest of the train split is known here)."""
    return load_idx_images("mnist", split, path, verify=verify)


def load_fashion_mnist(
    split: str = "train", path: str | os.PathLike | None = None, *, verify: bool = True
) -> ImageDataset:
    """Fashion-MNIST (Zalando's clothing images): :func:`load_idx_images` of ``"fashion_mnist"``, both splits."""
    return load_idx_images("fashion_mnist", split, path, verify=verify)
