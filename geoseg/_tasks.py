"""Bodies of the Ray tasks: read a block, stitch and write a block.

Kept apart from :mod:`geoseg.pipeline` so that task workers import rasterio and zarr but never
torch: Ray imports a task's module in every worker that runs it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from geoseg.grid import Block, PatchGrid
from geoseg.sinks import mark_block_done, write_block
from geoseg.sources import RasterInfo, read_window
from geoseg.stitch import NODATA_LABEL, CropMerger, StitchMode, extract_patches, labels_from_scores, make_merger

__all__ = ["read_block", "stitch_write", "n_cores"]


def n_cores(b: Block) -> int:
    """Patches whose cores make up the block: the ones it sends through the model."""
    return (b.cores_y[1] - b.cores_y[0]) * (b.cores_x[1] - b.cores_x[0])


def read_block(info: RasterInfo, bands: tuple[int, ...], grid: PatchGrid, block: Block) -> tuple[Any, Any]:
    """Windowed read of a block's patches; returns (N, C, P, P) patches and (h, w) validity."""
    ids = list(block.core_patches())
    wins = [grid.window(iy, ix) for iy, ix in ids]
    y0, x0 = min(w[0] for w in wins), min(w[1] for w in wins)
    y1, x1 = max(w[2] for w in wins), max(w[3] for w in wins)
    pixels, valid = read_window(info, (y0, x0, y1, x1), bands)
    patches = extract_patches(pixels, (y0, x0), grid, ids)
    ey0, ex0, ey1, ex1 = block.extent
    return patches, np.ascontiguousarray(valid[ey0 - y0 : ey1 - y0, ex0 - x0 : ex1 - x0])


def stitch_write(
    store: str,
    scene: str,
    grid: PatchGrid,
    block: Block,
    mode: StitchMode,
    n_classes: int,
    write_probs: bool,
    sources: tuple[Block, ...],
    valid: np.ndarray,
    *preds: np.ndarray,
) -> tuple[str, int, int]:
    """Stitch a block from the predictions of ``sources`` (in global patch order), write it."""
    scored: list[tuple[int, int, int, np.ndarray]] = []
    for src, pred in zip(sources, preds, strict=True):
        for k, (iy, ix) in enumerate(src.core_patches()):
            scored.append((grid.index(iy, ix), iy, ix, pred[k]))
    scored.sort(key=lambda t: t[0])
    labels_in = bool(preds) and preds[0].dtype == np.uint8
    merger = CropMerger(grid, block.extent, 1, np.uint8) if labels_in else make_merger(mode, grid, block.extent, n_classes)
    for _, iy, ix, s in scored:
        merger.add(iy, ix, s)
    scores = merger.finalize()
    probs = None
    if labels_in:
        labels = scores[0]
        labels[~valid] = NODATA_LABEL
    else:
        labels = labels_from_scores(scores, valid)
        if write_probs:
            probs = scores
            probs[:, ~valid] = np.nan
    write_block(store, scene, block.extent, labels, probs)
    mark_block_done(store, scene, block.name, json.dumps({"patches": n_cores(block)}))
    return scene, block.index, n_cores(block)
