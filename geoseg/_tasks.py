"""Bodies of the Ray tasks: read a block or case, stitch and write it.

Kept apart from :mod:`geoseg.pipeline` so that task workers import rasterio and zarr but never
torch: Ray imports a task's module in every worker that runs it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from geoseg.core.grid import Block, PatchGrid
from geoseg.core.lesions import drop_small_lesions, label_lesions, lesion_table
from geoseg.sinks import mark_block_done, write_block, write_volume
from geoseg.sources import CaseInfo, RasterInfo, load_case, read_window
from geoseg.core.stitch import NODATA_LABEL, CropMerger, StitchMode, extract_patches, labels_from_scores, make_merger

from geoseg.core.volume import normalise_case, slice_stack

__all__ = ["read_block", "stitch_write", "read_case", "stitch_write_case", "n_cores", "CASE_BLOCK"]

CASE_BLOCK = "case"
"""Marker name of a volume: a case is one block (cases are small and many)."""


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


def read_case(info: CaseInfo, grid: PatchGrid, context: int) -> np.ndarray:
    """Load a case, z-score it over its foreground, turn it to RAS and cut every axial slice.

    Returns:
        (Z * G, C', P, P) float32 patches, slice-major then grid order (G patches a slice).
    """
    image, _ = normalise_case(load_case(info), info.path)
    ras = np.ascontiguousarray(info.orientation.to_ras(image))
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    return np.concatenate(
        [extract_patches(slice_stack(ras, k, context), (0, 0), grid, ids) for k in range(ras.shape[3])]
    )


def stitch_write_case(
    store: str,
    info: CaseInfo,
    grid: PatchGrid,
    mode: StitchMode,
    n_classes: int,
    lesion_classes: tuple[int, ...],
    min_lesion_ml: float,
    pred: np.ndarray,
) -> tuple[str, int, int]:
    """Stitch every slice, undo the reorientation exactly, find lesions (dropping those under
    ``min_lesion_ml``), write the case."""
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    n = len(ids)
    n_slices = pred.shape[0] // n
    labels_ras = np.empty((*grid.shape_yx, n_slices), np.uint8)
    extent = (0, 0, *grid.shape_yx)
    for k in range(n_slices):
        part = pred[k * n : (k + 1) * n]
        labels_in = part.dtype == np.uint8
        merger = CropMerger(grid, extent, 1, np.uint8) if labels_in else make_merger(mode, grid, extent, n_classes)
        for (iy, ix), s in zip(ids, part, strict=True):
            merger.add(iy, ix, s)
        out = merger.finalize()
        labels_ras[:, :, k] = out[0] if labels_in else labels_from_scores(out)
    mask = np.ascontiguousarray(info.orientation.from_ras(labels_ras))
    lesion_ids, count = label_lesions(mask, lesion_classes)
    mask, lesion_ids, count = drop_small_lesions(mask, lesion_ids, count, info.voxel_ml, min_lesion_ml)
    table = lesion_table(lesion_ids, count, np.asarray(info.affine), info.voxel_ml)
    write_volume(store, info.name, mask, lesion_ids)
    stats = {"patches": int(pred.shape[0]), "lesions": {k: v.tolist() for k, v in table.items()}}
    mark_block_done(store, info.name, CASE_BLOCK, json.dumps(stats))
    return info.name, 0, int(pred.shape[0])
