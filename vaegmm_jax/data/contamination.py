"""Synthetic outliers among images: the teaching notebook's contaminated MNIST."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ContaminationDetails", "contaminated_mnist"]


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
