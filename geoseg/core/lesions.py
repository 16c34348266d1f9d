"""Lesions: 3-D connected components of a mask, with volumes and centroids. Pure numpy/scipy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["LESION_COLUMNS", "drop_small_lesions", "label_lesions", "lesion_table"]

LESION_COLUMNS = ("lesion_id", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")


def label_lesions(mask: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, int]:
    """Connected components (26-connectivity) of the voxels whose class is in ``classes``.

    Returns:
        ``(ids, n)``: (X, Y, Z) uint32 lesion ids (0 outside lesions), numbered 1..n in
        scan order of their first voxel, and the count n.
    """
    fg = np.isin(mask, np.asarray(classes, dtype=mask.dtype))
    ids, n = ndimage.label(fg, structure=np.ones((3, 3, 3), bool))
    return ids.astype(np.uint32, copy=False), int(n)


def drop_small_lesions(
    mask: np.ndarray, ids: np.ndarray, n: int, voxel_ml: float, min_ml: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Set lesions under ``min_ml`` millilitres to background; renumber the rest 1..m in order.

    Small isolated components are the typical false positives of a slice-wise model; a model
    card declares the cut-off as its ``min_lesion_ml`` param. ``mask`` and ``ids`` are
    not modified.

    >>> mask = np.zeros((5, 1, 1), np.uint8); mask[[0, 3, 4]] = 1
    >>> ids, n = label_lesions(mask, [1])
    >>> m, ids2, n2 = drop_small_lesions(mask, ids, n, 0.001, 0.0015)
    >>> m.ravel().tolist(), ids2.ravel().tolist(), n2
    ([0, 0, 0, 1, 1], [0, 0, 0, 1, 1], 1)
    """
    if n == 0 or min_ml <= 0:
        return mask, ids, n
    sizes = np.bincount(ids.ravel(), minlength=n + 1)
    small = sizes * float(voxel_ml) < min_ml
    small[0] = False
    if not small.any():
        return mask, ids, n
    keep = ~small
    keep[0] = False
    new_id = np.zeros(n + 1, np.uint32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    out = mask.copy()
    out[small[ids]] = 0
    return out, new_id[ids], int(keep.sum())


def lesion_table(ids: np.ndarray, n: int, affine: np.ndarray, voxel_ml: float) -> dict[str, np.ndarray]:
    """One row per lesion: id, voxel count, volume in mL, centroid in scanner millimetres.

    Args:
        ids: (X, Y, Z) lesion ids from :func:`label_lesions`, in the file's voxel order.
        affine: (4, 4) voxel-to-scanner affine of that voxel order.
        voxel_ml: volume of one voxel in millilitres (mm^3 / 1000).

    >>> ids = np.zeros((4, 4, 4), np.uint32); ids[0:2, 0, 0] = 1
    >>> t = lesion_table(ids, 1, np.diag([2.0, 2.0, 2.0, 1.0]), 0.008)
    >>> t["voxels"].tolist(), t["volume_ml"].tolist(), t["centroid_x_mm"].tolist()
    ([2], [0.016], [1.0])
    """
    index = np.arange(1, n + 1)
    voxels = ndimage.sum_labels(np.ones(ids.shape, np.int64), ids, index).astype(np.int64) if n else np.zeros(0, np.int64)
    centres = np.asarray(ndimage.center_of_mass(np.ones(ids.shape, np.float32), ids, index), np.float64).reshape(-1, 3)
    mm = centres @ np.asarray(affine, np.float64)[:3, :3].T + np.asarray(affine, np.float64)[:3, 3]
    return {
        "lesion_id": index.astype(np.uint32),
        "voxels": voxels,
        "volume_ml": voxels * float(voxel_ml),
        "centroid_x_mm": mm[:, 0],
        "centroid_y_mm": mm[:, 1],
        "centroid_z_mm": mm[:, 2],
    }
