"""Patches in, image out: extraction, merging and the reference. Pure numpy.

A merger takes one kind of patch output and follows "add, then finalize" (MONAI's
``inferers/merger.py`` split: a protocol, one implementation per kind):

- :class:`CropMerger`, :class:`GaussianMerger`: class scores (K, P, P) float32, ``crop`` or
  ``gaussian`` stitching;
- :class:`LabelMerger`: class labels (1, P, P) uint8, ``crop`` only (the argmax commutes with
  cropping, so the model may answer labels, a fraction of the bytes).

Mergers accumulate patches in the grid's global row-major order, so a pixel's value is the
same float32 arithmetic whichever block it is stitched in: that is what makes the distributed
run bit-identical to :func:`reference`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Literal, Protocol

import numpy as np

from geoseg.core.grid import PatchGrid, Window
from geoseg.errors import InputError

__all__ = [
    "StitchMode",
    "PatchOutput",
    "NODATA_LABEL",
    "Merger",
    "extract_patches",
    "gaussian_weight",
    "CropMerger",
    "GaussianMerger",
    "LabelMerger",
    "make_merger",
    "labels_from_scores",
    "stitch_extent",
    "reference",
]

StitchMode = Literal["crop", "gaussian"]
PatchOutput = Literal["scores", "labels"]
"""What a semantic model's patch answer is: ``scores`` (K, P, P) float32 class probabilities, or
``labels`` (1, P, P) uint8 argmax labels. The plan chooses it; no task guesses it from a dtype."""
NODATA_LABEL = 255


class Merger(Protocol):
    """Stitches patch results into one extent: ``add`` each patch in global grid order, then
    ``finalize`` once (a finalized merger refuses more patches)."""

    def add(self, iy: int, ix: int, result: np.ndarray) -> None: ...

    def finalize(self) -> np.ndarray: ...


def extract_patches(
    window_array: np.ndarray,
    origin_yx: tuple[int, int],
    grid: PatchGrid,
    patch_ids: Iterable[tuple[int, int]],
) -> np.ndarray:
    """Cut patches out of an array read at ``origin_yx``.

    Args:
        window_array: (C, h, w) pixels of a window that holds every requested patch.
        origin_yx: image coordinates of ``window_array[:, 0, 0]``.
        grid: the image's patch grid.
        patch_ids: ``(iy, ix)`` patch indices.

    Returns:
        (N, C, P, P) array of the input dtype; a patch of an image smaller than P is padded by
        reflection after its end (``stitch`` only ever reads its unpadded part).
    """
    p = grid.tiling.patch_px
    oy, ox = origin_yx
    out = []
    for iy, ix in patch_ids:
        y0, x0, y1, x1 = grid.window(iy, ix)
        patch = window_array[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        if patch.shape[1:] != (y1 - y0, x1 - x0):
            raise InputError(f"window at {origin_yx} of shape {window_array.shape} misses patch {(iy, ix)}")
        if patch.shape[1] < p or patch.shape[2] < p:
            pad = ((0, 0), (0, p - patch.shape[1]), (0, p - patch.shape[2]))
            patch = np.pad(patch, pad, mode="reflect") if min(patch.shape[1:]) > 1 else np.pad(patch, pad, mode="edge")
        out.append(patch)
    if not out:
        return np.zeros((0, window_array.shape[0], p, p), window_array.dtype)
    return np.stack(out)


@lru_cache(maxsize=8)
def gaussian_weight(patch_px: int, sigma_scale: float = 0.125) -> np.ndarray:
    """(P, P) float32 importance map: a Gaussian of sigma ``sigma_scale * P``, max 1, min > 0.

    As MONAI's ``compute_importance_map``/nnU-Net: centre pixels count most, and no weight is 0
    so every pixel stays defined.
    """
    c = (patch_px - 1) / 2.0
    sigma = sigma_scale * patch_px
    g = np.exp(-0.5 * ((np.arange(patch_px, dtype=np.float64) - c) / sigma) ** 2)
    w = np.outer(g, g)
    w /= w.max()
    w = w.astype(np.float32)
    w = np.maximum(w, w[w > 0].min(), out=w)
    w.setflags(write=False)
    return w


def _overlap(a: Window, b: Window) -> Window | None:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    return (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


class _Merger:
    """Accumulates (K, P, P) patch scores into a (K, h, w) float32 extent; finalize once."""

    def __init__(self, grid: PatchGrid, extent: Window, n_classes: int, dtype: type = np.float32) -> None:
        self.grid = grid
        self.extent = extent
        y0, x0, y1, x1 = extent
        self._scores: np.ndarray | None = np.zeros((n_classes, y1 - y0, x1 - x0), dtype)
        self._last = -1

    def _check(self, iy: int, ix: int) -> np.ndarray:
        if self._scores is None:
            raise RuntimeError("merger already finalized: make a new one for new patches")
        g = self.grid.index(iy, ix)
        if g <= self._last:
            raise RuntimeError(f"patch {(iy, ix)} added out of grid order (after #{self._last})")
        self._last = g
        return self._scores

    def _take(self) -> np.ndarray:
        if self._scores is None:
            raise RuntimeError("merger already finalized: make a new one for new patches")
        out, self._scores = self._scores, None
        return out


class CropMerger(_Merger):
    """Each pixel from the one patch whose core holds it (patches not touching a core are skipped).

    (K, P, P) float32 scores in, (K, h, w) float32 out.
    """

    def add(self, iy: int, ix: int, scores: np.ndarray) -> None:
        acc = self._check(iy, ix)
        hit = _overlap(self.grid.core(iy, ix), self.extent)
        if hit is None:
            return
        py, px = self.grid.starts_y[iy], self.grid.starts_x[ix]
        ey, ex = self.extent[0], self.extent[1]
        acc[:, hit[0] - ey : hit[2] - ey, hit[1] - ex : hit[3] - ex] = scores[
            :, hit[0] - py : hit[2] - py, hit[1] - px : hit[3] - px
        ]

    def finalize(self) -> np.ndarray:
        return self._take()


class GaussianMerger(_Merger):
    """Weighted mean of every patch over a pixel, weights :func:`gaussian_weight`, in float32."""

    def __init__(self, grid: PatchGrid, extent: Window, n_classes: int) -> None:
        super().__init__(grid, extent, n_classes)
        self._weights = np.zeros(self._scores.shape[1:], np.float32)  # type: ignore[union-attr]
        self._w = gaussian_weight(grid.tiling.patch_px)

    def add(self, iy: int, ix: int, scores: np.ndarray) -> None:
        acc = self._check(iy, ix)
        hit = _overlap(self.grid.window(iy, ix), self.extent)
        if hit is None:
            return
        py, px = self.grid.starts_y[iy], self.grid.starts_x[ix]
        ey, ex = self.extent[0], self.extent[1]
        dst = (slice(hit[0] - ey, hit[2] - ey), slice(hit[1] - ex, hit[3] - ex))
        src = (slice(hit[0] - py, hit[2] - py), slice(hit[1] - px, hit[3] - px))
        w = self._w[src]
        acc[(slice(None), *dst)] += scores[(slice(None), *src)] * w
        self._weights[dst] += w

    def finalize(self) -> np.ndarray:
        out = self._take()
        out /= self._weights
        return out


class LabelMerger(CropMerger):
    """``crop`` stitching of (1, P, P) uint8 labels into an (h, w) uint8 mask: equal, pixel for
    pixel, to stitching the scores and taking the argmax."""

    def __init__(self, grid: PatchGrid, extent: Window) -> None:
        super().__init__(grid, extent, 1, np.uint8)

    def finalize(self) -> np.ndarray:
        return self._take()[0]


def make_merger(
    mode: StitchMode, grid: PatchGrid, extent: Window, n_classes: int, output: PatchOutput = "scores"
) -> Merger:
    """The merger for ``output`` patches stitched with ``mode`` into ``extent``."""
    if mode not in ("crop", "gaussian"):
        raise InputError(f"stitch mode {mode!r} is unknown: use 'crop' or 'gaussian'")
    if output == "labels":
        if mode != "crop":
            raise InputError("label patches stitch with crop only: ask the model for scores to blend with gaussian")
        return LabelMerger(grid, extent)
    if output != "scores":
        raise InputError(f"patch output {output!r} is unknown: use 'scores' or 'labels'")
    return CropMerger(grid, extent, n_classes) if mode == "crop" else GaussianMerger(grid, extent, n_classes)


def stitch_extent(
    grid: PatchGrid,
    extent: Window,
    mode: StitchMode,
    output: PatchOutput,
    n_classes: int,
    results: Iterable[tuple[int, int, np.ndarray]],
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stitch patch results ``(iy, ix, result)`` (any order) into ``extent``.

    Returns:
        ``(labels, scores)``: (h, w) uint8 class labels, :data:`NODATA_LABEL` where ``valid``
        (h, w) is False; and the (K, h, w) float32 scores (NaN where not valid), or None for
        label patches.
    """
    merger = make_merger(mode, grid, extent, n_classes, output)
    for iy, ix, result in sorted(results, key=lambda t: grid.index(t[0], t[1])):
        merger.add(iy, ix, result)
    out = merger.finalize()
    if output == "labels":
        if valid is not None:
            out[~valid] = NODATA_LABEL
        return out, None
    labels = labels_from_scores(out, valid)
    if valid is not None:
        out[:, ~valid] = np.nan
    return labels, out


def labels_from_scores(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(K, h, w) scores -> (h, w) uint8 class index, 255 where ``valid`` is False."""
    labels = np.argmax(scores, axis=0).astype(np.uint8)
    if valid is not None:
        labels[~valid] = NODATA_LABEL
    return labels


def reference(
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    grid: PatchGrid,
    mode: StitchMode,
    n_classes: int,
    batch_size: int = 16,
) -> np.ndarray:
    """Single-process tiled inference of a whole in-memory image: the ground truth for tests.

    Args:
        image: (C, Y, X) model input, already normalised.
        predict: (N, C, P, P) float32 -> (N, K, P, P) float32 class scores.
        grid: the patch grid of ``image``.

    Returns:
        (K, Y, X) float32 stitched scores.
    """
    if image.shape[1:] != grid.shape_yx:
        raise InputError(f"image shape {image.shape[1:]} differs from grid shape {grid.shape_yx}")
    merger = make_merger(mode, grid, (0, 0, *grid.shape_yx), n_classes)
    ny, nx = grid.n_yx
    ids = [(iy, ix) for iy in range(ny) for ix in range(nx)]
    for k in range(0, len(ids), batch_size):
        chunk = ids[k : k + batch_size]
        scores = predict(extract_patches(image, (0, 0), grid, chunk))
        for (iy, ix), s in zip(chunk, scores, strict=True):
            merger.add(iy, ix, s)
    return merger.finalize()
