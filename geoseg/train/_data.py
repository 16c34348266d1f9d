"""Cases as the model sees them: normalised, in RAS, cut into axial slice stacks. numpy only.

The representation shared by training, validation and geoseg's volume inference:

1. :func:`normalise_case`: the foreground is the union of each modality's
   :func:`~geoseg.volume.foreground_mask`; every modality is z-scored over it
   (:func:`~geoseg.volume.zscore_foreground`), background exactly 0.
2. ``orientation.to_ras``: voxel axes to (R, A, S), so axial slice ``k`` is ``vol[..., k]``.
3. :func:`slice_stack`: the model input for slice ``k``, (C * (2c + 1), X, Y) with the RAS
   X (R) axis as image rows and Y (A) as columns.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from geoseg.errors import InputError, SourceError
from geoseg.sources import CaseInfo, load_case, open_case
from geoseg.volume import Orientation, foreground_mask, zscore_foreground

from ._spec import DataSection

__all__ = ["LabelledCase", "normalise_case", "slice_stack", "load_labelled_case", "map_labels"]


def normalise_case(vol: np.ndarray, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Z-score a case's modalities over their shared foreground.

    Args:
        vol: (C, X, Y, Z) voxels of one case, any real dtype, any orientation.
        path: named in error messages.

    Returns:
        ``(image, mask)``: (C, X, Y, Z) float32, each channel ``(x - mean) / std`` over the
        foreground and 0 elsewhere; and the (X, Y, Z) bool foreground, the union of
        :func:`~geoseg.volume.foreground_mask` over the channels.

    >>> v = np.zeros((2, 4, 4, 4), np.float32); v[:, 1:3, 1:3, 1:3] = [[[[1.0, 3.0]]], [[[5.0, 9.0]]]]
    >>> image, mask = normalise_case(v)
    >>> int(mask.sum()), sorted(set(np.round(image[1][mask], 3).tolist()))
    (8, [-1.0, 1.0])
    """
    arr = np.asarray(vol)
    if arr.ndim != 4:
        raise InputError(
            f"{path or 'volume'}: shape {arr.shape} is not (C, X, Y, Z); stack the modalities first"
        )
    mask = np.zeros(arr.shape[1:], bool)
    for c in range(arr.shape[0]):
        mask |= foreground_mask(arr[c], path)
    return zscore_foreground(arr, mask, path), mask


def slice_stack(vol_ras: np.ndarray, k: int, context: int) -> np.ndarray:
    """The model input of axial slice ``k``: (C * (2 * context + 1), X, Y), same dtype.

    ``vol_ras`` is a normalised (C, X, Y, Z) volume in RAS voxel order. Channels are grouped
    by modality, then slice: ``[mod0 k-c, ..., mod0 k, ..., mod0 k+c, mod1 k-c, ..., mod1 k+c,
    ...]``; slice indices outside ``[0, Z)`` are clamped to the end slices. With
    ``context == 0`` it is ``vol_ras[:, :, :, k]``.

    >>> v = np.arange(2 * 1 * 1 * 3).reshape(2, 1, 1, 3)  # mod0 slices 0,1,2; mod1 slices 3,4,5
    >>> slice_stack(v, 0, 1)[:, 0, 0].tolist()
    [0, 0, 1, 3, 3, 4]
    >>> slice_stack(v, 2, 0)[:, 0, 0].tolist()
    [2, 5]
    """
    if vol_ras.ndim != 4:
        raise InputError(f"slice_stack: volume of shape {vol_ras.shape} is not (C, X, Y, Z)")
    n_z = vol_ras.shape[3]
    if not 0 <= k < n_z:
        raise InputError(f"slice_stack: slice {k} is outside 0..{n_z - 1}")
    if context < 0:
        raise InputError(f"slice_stack: context {context} is negative; use 0 or more neighbour slices")
    if context == 0:
        return vol_ras[:, :, :, k]
    idx = np.clip(np.arange(k - context, k + context + 1), 0, n_z - 1)
    picked = vol_ras[:, :, :, idx]  # (C, X, Y, 2c+1)
    c, x, y, s = picked.shape
    return np.ascontiguousarray(picked.transpose(0, 3, 1, 2)).reshape(c * s, x, y)


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
    img = nib.load(str(label_path))
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
