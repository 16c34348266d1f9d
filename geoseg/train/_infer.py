"""Slice-wise inference of a whole case, in the exact representation of geoseg's volume inference.

Used for validation while training and for checks of a trained model; the distributed
pipeline does the same per slice on Ray.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from geoseg.core.grid import Tiling, patch_grid
from geoseg.core.stitch import CropMerger, extract_patches
from geoseg.core.volume import Orientation

from ._data import normalise_case, slice_stack

__all__ = ["predict_case", "predict_volume"]


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    image_ras: np.ndarray,
    context: int,
    tiling: Tiling,
    n_classes: int,
    batch_size: int = 8,
) -> np.ndarray:
    """Class labels of every voxel of a normalised RAS volume, predicted axial slice by slice.

    Each slice stack (:func:`~geoseg.train.slice_stack`) is cut on the fixed patch grid of
    ``tiling`` (reflect-padded when smaller than a patch), run through ``model`` in eval mode,
    softmaxed, stitched with ``crop`` and argmaxed. Slices whose stack is all zero (no
    foreground) share one forward pass, as their inputs are identical.

    Args:
        model: (N, C', P, P) float32 -> (N, K, P, P) logits.
        image_ras: (C, X, Y, Z) float32, normalised and in RAS order.

    Returns:
        (X, Y, Z) uint8 labels in RAS order.
    """
    was_training = model.training
    model.eval()
    c, nx, ny, nz = image_ras.shape
    grid = patch_grid((nx, ny), tiling)
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    out = np.zeros((nx, ny, nz), np.uint8)
    pending: list[tuple[int, int, int, np.ndarray]] = []  # (slice, iy, ix, patch)
    mergers: dict[int, CropMerger] = {}
    left: dict[int, int] = {}

    device = next(model.parameters()).device

    def run() -> None:
        batch = torch.from_numpy(np.stack([p for *_, p in pending]).astype(np.float32, copy=False))
        probs = torch.softmax(model(batch.to(device)), dim=1).cpu().numpy()
        for (k, iy, ix, _), scores in zip(pending, probs, strict=True):
            mergers[k].add(iy, ix, scores)
            left[k] -= 1
            if left[k] == 0:
                out[:, :, k] = np.argmax(mergers.pop(k).finalize(), axis=0)
        pending.clear()

    empty = [k for k in range(nz) if not slice_stack(image_ras, k, context).any()]
    todo = sorted(set(range(nz)) - set(empty)) + empty[:1]
    for k in todo:
        stack = slice_stack(image_ras, k, context)
        mergers[k] = CropMerger(grid, (0, 0, nx, ny), n_classes)
        left[k] = len(ids)
        for (iy, ix), patch in zip(ids, extract_patches(stack, (0, 0), grid, ids), strict=True):
            pending.append((k, iy, ix, patch))
            if len(pending) >= batch_size:
                run()
    if pending:
        run()
    for k in empty[1:]:
        out[:, :, k] = out[:, :, empty[0]]
    model.train(was_training)
    return out


def predict_case(
    model: nn.Module,
    vol: np.ndarray,
    orientation: Orientation,
    context: int,
    tiling: Tiling,
    n_classes: int,
    batch_size: int = 8,
) -> np.ndarray:
    """Labels of a raw case in its file's voxel order: normalise, to RAS, :func:`predict_volume`, back.

    Args:
        vol: (C, X, Y, Z) voxels as :func:`geoseg.sources.load_case` returns them (any scaling:
            raw scanner values or pre-normalised), modalities in the model's order.
        orientation: the case's orientation (``CaseInfo.orientation``).

    Returns:
        (X, Y, Z) uint8 labels in the file's voxel order.
    """
    image, _ = normalise_case(vol)
    image_ras = np.ascontiguousarray(orientation.to_ras(image))
    labels = predict_volume(model, image_ras, context, tiling, n_classes, batch_size)
    return np.ascontiguousarray(orientation.from_ras(labels))
