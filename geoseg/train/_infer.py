"""Whole-case inference for training validation: the very path of ``geoseg run``.

A case's slices are cut by :func:`geoseg._tasks.case_patches`, answered by a
:class:`geoseg.infer.Predictor` (the model actor's code) and stitched by
:func:`geoseg._tasks.stitch_case`, as the pipeline's read task, model actor and write task do,
so a validation Dice and a ``geoseg run`` Dice come from the same code.
"""

from __future__ import annotations

import numpy as np

from geoseg._tasks import case_patches, stitch_case
from geoseg.core.grid import Tiling, patch_grid
from geoseg.core.volume import Orientation
from geoseg.infer import Predictor

from ._data import normalise_case

__all__ = ["predict_case", "predict_volume"]


def predict_volume(predictor: Predictor, image_ras: np.ndarray, tiling: Tiling) -> np.ndarray:
    """Class labels of every voxel of a normalised RAS volume, predicted axial slice by slice.

    Each slice stack (``context_slices`` of the predictor's card either side) is cut on the
    fixed patch grid of ``tiling`` (reflect-padded when smaller than a patch), answered by
    ``predictor`` as labels and stitched with ``crop``. All-zero slices share one forward pass.

    Args:
        image_ras: (C, X, Y, Z) float32, normalised and in RAS order.

    Returns:
        (X, Y, Z) uint8 labels in RAS order.
    """
    context = int(predictor.card.params.get("context_slices", 0))
    grid = patch_grid(image_ras.shape[1:3], tiling)
    preds, _, _ = predictor.predict([case_patches(image_ras, grid, context)], labels_only=True)
    return stitch_case(preds, grid, "crop", "labels", predictor.card.n_classes)


def predict_case(predictor: Predictor, vol: np.ndarray, orientation: Orientation, tiling: Tiling) -> np.ndarray:
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
    labels = predict_volume(predictor, image_ras, tiling)
    return np.ascontiguousarray(orientation.from_ras(labels))
