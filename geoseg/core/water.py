"""Water indices and a per-scene Otsu threshold that any partition of the scene agrees on.

A normalised-difference index ``(a - b) / (a + b)`` (NDWI: green, NIR; MNDWI: green, SWIR1)
lies in [-1, 1]. Each block counts its valid pixels in :data:`INDEX_BINS` fixed bins of that
range (integer counts, :func:`index_histogram`); the scene's histogram is the sum of the
blocks' counts, and integer sums do not depend on the order or the grouping of the blocks, so
the threshold :func:`otsu_threshold` picks from it (Otsu 1979, as
``skimage.filters.threshold_otsu(hist=...)``) is the same for any block size or worker count.

:func:`scaled_for_threshold` moves a threshold into the bands: ``(a - b) / (a + b) > t``
exactly where ``a (1 - t) > b (1 + t)`` (for ``a + b > 0`` and ``-1 < t < 1``), so a model that
thresholds at 0 thresholds the scaled bands at ``t`` and one model serves every scene. (Where
``a + b == 0`` the index is 0 either way, so such a pixel is never above a threshold moved
into the bands, even a negative one.)

Pure numpy: no I/O, no Ray, no torch.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "INDEX_BINS",
    "normalised_difference",
    "index_histogram",
    "bin_centres",
    "otsu_threshold",
    "scaled_for_threshold",
]

INDEX_BINS = 2000
"""Fixed bins of [-1, 1] for index histograms: 0.001 wide."""


def normalised_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / (a + b)`` in float32, 0 where ``a + b == 0``: the arithmetic of the models.

    >>> normalised_difference(np.array([3, 1, 0]), np.array([1, 3, 0])).tolist()
    [0.5, -0.5, 0.0]
    """
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    total = a32 + b32
    nonzero = total != 0
    out = np.zeros(total.shape, np.float32)
    np.divide(a32 - b32, total, out=out, where=nonzero)
    return out


def index_histogram(index: np.ndarray, valid: np.ndarray | None = None, bins: int = INDEX_BINS) -> np.ndarray:
    """(bins,) int64 counts of the ``valid`` pixels of ``index`` in ``bins`` equal bins of [-1, 1].

    Bin ``k`` holds ``-1 + 2k/bins <= v < -1 + 2(k+1)/bins``; 1.0 falls in the last bin, values
    outside [-1, 1] in the end bins, NaN nowhere.

    >>> index_histogram(np.array([-1.0, 0.0, 0.0, 1.0]), bins=4).tolist()
    [1, 0, 2, 1]
    """
    v = np.asarray(index, np.float64)
    keep = np.isfinite(v) if valid is None else (np.asarray(valid, bool) & np.isfinite(v))
    k = np.floor((v[keep] + 1.0) * (bins / 2.0)).astype(np.int64)
    return np.bincount(np.clip(k, 0, bins - 1), minlength=bins).astype(np.int64)


def bin_centres(bins: int = INDEX_BINS) -> np.ndarray:
    """(bins,) float64 centres of the bins of :func:`index_histogram`."""
    return -1.0 + (np.arange(bins, dtype=np.float64) + 0.5) * (2.0 / bins)


def otsu_threshold(counts: np.ndarray) -> float:
    """Otsu's threshold of a histogram of :func:`index_histogram`: the bin centre that maximises
    the between-class variance of "at or below" and "above" (Otsu 1979).

    The same value as ``skimage.filters.threshold_otsu(hist=(counts, bin_centres(len(counts))))``;
    pixels above it are the upper class. A histogram with one occupied bin gives that bin's centre.

    Raises:
        ValueError: no counts at all (a scene without valid pixels).

    >>> otsu_threshold(np.array([5, 5, 0, 0, 3, 3]))  # two clusters: the split after bin 1
    -0.5
    """
    c = np.asarray(counts, np.float64)
    if c.sum() <= 0:
        raise ValueError("the histogram is empty: no valid pixels to choose a threshold from")
    centres = bin_centres(len(c))
    occupied = np.flatnonzero(c)
    if len(occupied) == 1:
        return float(centres[occupied[0]])
    w1 = np.cumsum(c)
    w2 = np.cumsum(c[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = np.cumsum(c * centres) / w1
        m2 = (np.cumsum((c * centres)[::-1]) / w2[::-1])[::-1]
    between = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[int(np.nanargmax(between))])


def scaled_for_threshold(a: np.ndarray, b: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(a (1 - t), b (1 + t))`` in float32: bands whose index is above 0 where the index of
    ``a, b`` is above ``t`` (up to float32 rounding).

    Raises:
        ValueError: ``t`` outside (-1, 1), where the index cannot be above or below it.
    """
    t = float(threshold)
    if not -1.0 < t < 1.0:
        raise ValueError(f"index threshold {t!r} is outside (-1, 1)")
    return np.asarray(a, np.float32) * np.float32(1.0 - t), np.asarray(b, np.float32) * np.float32(1.0 + t)
