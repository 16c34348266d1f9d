"""Labelled cases as the model sees them: normalised, in RAS, with class labels.

The representation shared by training, validation and geoseg's volume inference, defined
once in :mod:`geoseg.core.volume` and re-exported here:

1. :func:`~geoseg.core.volume.normalise_case`: the foreground is the union of each modality's
   :func:`~geoseg.core.volume.foreground_mask`; every modality is z-scored over it
   (:func:`~geoseg.core.volume.zscore_foreground`), background exactly 0.
2. ``orientation.to_ras``: voxel axes to (R, A, S), so axial slice ``k`` is ``vol[..., k]``.
3. :func:`~geoseg.core.volume.slice_stack`: the input of slice ``k``, (C * (2c + 1), X, Y), the RAS
   X (R) axis as image rows and Y (A) as columns.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from geoseg.core.volume import Orientation, normalise_case, slice_stack
from geoseg.errors import InputError, SourceError
from geoseg.sources import CaseInfo, load_case, open_case

from ._spec import DataSection

__all__ = ["LabelledCase", "normalise_case", "slice_stack", "load_labelled_case", "map_labels"]


def map_labels(labels: np.ndarray, label_map: dict[int, int], path: str) -> np.ndarray:
    """Source labels -> class indices (uint8) through ``label_map``; an unmapped value raises InputError."""
    arr = np.asarray(labels)
    as_int = np.rint(arr).astype(np.int64)
    if arr.dtype.kind == "f" and not np.array_equal(as_int, arr):
        raise InputError(f"{path}: label file holds non-integer values; give integer labels")
    values = np.unique(as_int)
    unknown = [int(v) for v in values if int(v) not in label_map or v < 0]
    if unknown:
        raise InputError(
            f"{path}: labels {unknown} are not in label_map {dict(label_map)}; add them to data.label_map"
        )
    lut = np.zeros(int(values.max()) + 1, np.uint8)
    for src, dst in label_map.items():
        if 0 <= src < len(lut):
            lut[src] = dst
    return lut[as_int]


@dataclass(frozen=True)
class LabelledCase:
    """A training or validation case in the model's representation.

    ``image`` (C, X, Y, Z) float32 and ``mask`` (X, Y, Z) bool foreground are in RAS voxel
    order; ``labels`` (X, Y, Z) uint8 class indices too; ``labels_file`` are the same labels in
    the file's voxel order (for evaluation against predictions mapped back with
    ``orientation.from_ras``).
    """

    name: str
    info: CaseInfo
    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    labels_file: np.ndarray

    @property
    def orientation(self) -> Orientation:
        return self.info.orientation


def _label_file(folder: Path, pattern: str) -> Path:
    hits = sorted(
        Path(h) for h in glob.glob(str(folder / pattern)) if h.lower().endswith((".nii", ".nii.gz"))
    )
    if len(hits) != 1:
        found = ", ".join(h.name for h in hits) or "none"
        raise SourceError(
            f"{folder}: {len(hits)} label files match data.labels {pattern!r} (found: {found}); "
            f"make the pattern match exactly one NIfTI file"
        )
    return hits[0]


def load_labelled_case(folder: Path, data: DataSection) -> LabelledCase:
    """Open, normalise and reorient one case folder with its label file (see :class:`LabelledCase`).

    Raises:
        SourceError: a missing folder or file, or no/several files for a modality or the labels.
        InputError: labels on another grid, or labels that ``data.label_map`` does not cover.
    """
    patterns = {k: list(v) for k, v in data.modality_patterns.items()}
    info = open_case(folder, data.modalities, patterns or None)
    image, mask = normalise_case(load_case(info), info.path)
    label_path = _label_file(Path(folder), data.labels)
    img: Any = nib.load(str(label_path))
    raw = np.asarray(img.dataobj)
    if raw.shape[:3] != info.shape_xyz or raw.ndim != 3:
        raise InputError(
            f"{label_path}: labels of shape {raw.shape} do not fit the case's {info.shape_xyz} voxels; "
            f"give labels on the images' grid"
        )
    if not np.allclose(img.affine, np.asarray(info.affine), atol=1e-4, rtol=0):
        raise InputError(
            f"{label_path}: its affine differs from the images'; give labels on the images' grid"
        )
    labels_file = map_labels(raw, data.label_map, str(label_path))
    orient = info.orientation
    return LabelledCase(
        name=info.name,
        info=info,
        image=np.ascontiguousarray(orient.to_ras(image)),
        mask=np.ascontiguousarray(orient.to_ras(mask)),
        labels=np.ascontiguousarray(orient.to_ras(labels_file)),
        labels_file=labels_file,
    )
