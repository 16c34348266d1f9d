"""Segmentation metrics on label arrays: Dice, BraTS regions, lesion detection. Pure numpy/scipy.

The classes are geoseg's tumour classes (the ``mri-tumour`` card): 0 background, 1 oedema,
2 non-enhancing tumour + necrosis, 3 enhancing tumour. The BraTS evaluation regions are
nested unions of them:

- ``whole_tumour``: classes 1, 2, 3 (BraTS labels 1-4);
- ``tumour_core``: classes 2, 3 (BraTS labels 1, 3, 4);
- ``enhancing``: class 3 (BraTS label 4).

>>> truth = np.array([0, 1, 2, 3, 3])
>>> pred = np.array([0, 1, 1, 3, 0])
>>> {k: round(dice(brats_regions(pred)[k], v), 3) for k, v in brats_regions(truth).items()}
{'whole_tumour': 0.857, 'tumour_core': 0.5, 'enhancing': 0.667}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from geoseg.errors import InputError

__all__ = ["REGIONS", "LesionCounts", "CaseScore", "dice", "brats_regions", "lesion_counts", "evaluate_store"]

REGIONS: dict[str, tuple[int, ...]] = {
    "whole_tumour": (1, 2, 3),
    "tumour_core": (2, 3),
    "enhancing": (3,),
}
"""Each BraTS evaluation region as the geoseg tumour classes it unites."""


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"{what}: prediction of shape {a.shape} and truth of shape {b.shape} differ; give the same grid"
        )


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap ``2|P∩T| / (|P| + |T|)`` of two boolean arrays of one shape; 1.0 when both are empty.

    >>> dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.6666666666666666
    >>> dice(np.zeros(3, bool), np.zeros(3, bool))
    1.0
    """
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    _same_shape(p, t, "dice")
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / total


def brats_regions(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The BraTS regions of a geoseg tumour label array (any shape), as boolean arrays of its shape.

    Keys are those of :data:`REGIONS`, in that order.

    Raises:
        InputError: ``labels`` is not an integer array.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise InputError(
            f"brats_regions: labels of type {arr.dtype} are not class indices; give an integer array"
        )
    return {name: np.isin(arr, classes) for name, classes in REGIONS.items()}


@dataclass(frozen=True)
class LesionCounts:
    """Lesion-wise detection: truth lesions hit or missed, and predicted lesions touching no truth."""

    detected: int
    missed: int
    false_positive: int

    @property
    def truth_lesions(self) -> int:
        return self.detected + self.missed


def lesion_counts(pred: np.ndarray, truth: np.ndarray, connectivity: int = 3) -> LesionCounts:
    """Count lesions as 3-D connected components of the tumour (label > 0) of each array.

    A truth lesion is *detected* when any predicted tumour voxel overlaps it, else *missed*; a
    predicted lesion that overlaps no truth tumour voxel is a *false positive*.
    ``connectivity`` is scipy's: 1 faces, 2 faces+edges, 3 faces+edges+corners (26-neighbours).

    >>> truth = np.zeros((1, 1, 9), int); truth[0, 0, [1, 2, 5]] = 1
    >>> pred = np.zeros((1, 1, 9), int); pred[0, 0, [2, 7]] = 3
    >>> lesion_counts(pred, truth)
    LesionCounts(detected=1, missed=1, false_positive=1)

    Raises:
        InputError: the arrays differ in shape or are not 3-D, or ``connectivity`` is not 1-3.
    """
    p = np.asarray(pred) > 0
    t = np.asarray(truth) > 0
    _same_shape(p, t, "lesion_counts")
    if p.ndim != 3:
        raise InputError(
            f"lesion_counts: arrays of shape {p.shape} are not 3-D volumes; give (X, Y, Z) label arrays"
        )
    if connectivity not in (1, 2, 3):
        raise InputError(f"lesion_counts: connectivity {connectivity} is not 1, 2 or 3 (scipy's); use 3")
    structure = ndimage.generate_binary_structure(3, connectivity)
    truth_ids, n_truth = ndimage.label(t, structure=structure)
    pred_ids, n_pred = ndimage.label(p, structure=structure)
    hit_truth = np.unique(truth_ids[p & t])
    hit_pred = np.unique(pred_ids[p & t])
    detected = int(np.count_nonzero(hit_truth))
    return LesionCounts(
        detected=detected,
        missed=int(n_truth) - detected,
        false_positive=int(n_pred) - int(np.count_nonzero(hit_pred)),
    )


@dataclass(frozen=True)
class CaseScore:
    """Scores of one case of a store against its ground truth."""

    name: str
    truth: str
    dice: dict[str, float]
    lesions: LesionCounts


def evaluate_store(
    store: str,
    truth_pattern: str,
    label_map: dict[int, int] | None = None,
    names: list[str] | None = None,
) -> list[CaseScore]:
    """Score every complete case group of ``store`` (or ``names``) against the truth file found
    by ``truth_pattern`` (a glob) in the case's source folder.

    ``label_map`` maps the truth file's labels to geoseg's tumour classes (e.g. BraTS
    ``{0: 0, 2: 1, 1: 2, 3: 2, 4: 3}``); None keeps them as they are.

    Raises:
        StoreError: no such group, or it is not a complete volume.
        SourceError: no truth file, or more than one, matches.
        InputError: the truth's shape differs from the mask's, or holds unmapped labels.
    """
    from pathlib import Path  # noqa: PLC0415

    import nibabel as nib  # noqa: PLC0415  (only scoring reads label files)

    from geoseg.errors import SourceError, StoreError  # noqa: PLC0415
    from geoseg.sinks import array, attrs, list_groups, open_group  # noqa: PLC0415  (zarr: only when scoring)

    groups = names or list_groups(store)
    if not groups:
        open_group(store, "")  # raises the store's own error: no store there
    scores = []
    for name in groups:
        g = open_group(store, name)
        a = attrs(g)
        meta = dict(a.get("geoseg") or {})
        if "affine" not in a or meta.get("status") != "complete":
            if names:
                raise StoreError(f"{store}: group {name!r} is not a complete MRI case; rerun the job")
            continue
        source = Path(meta["source"])
        folder = source if source.is_dir() else source.parent
        hits = sorted(folder.glob(truth_pattern))
        if len(hits) != 1:
            raise SourceError(
                f"{folder}: truth pattern {truth_pattern!r} matches {len(hits)} files "
                f"({[h.name for h in hits][:4]}); give a pattern that matches exactly one"
            )
        truth = np.asarray(nib.load(hits[0]).dataobj)  # type: ignore[attr-defined]
        truth = np.rint(truth).astype(np.int64)
        if label_map is not None:
            unknown = sorted(set(np.unique(truth).tolist()) - set(label_map))
            if unknown:
                raise InputError(f"{hits[0]}: labels {unknown} are not in the label map {label_map}; extend it")
            lut = np.zeros(max(label_map) + 1, np.int64)
            for src, dst in label_map.items():
                lut[src] = dst
            truth = lut[truth]
        pred = np.asarray(array(g, "mask")[...])
        _same_shape(pred, truth, f"{hits[0]} vs {store}/{name}/mask")
        pr, tr = brats_regions(pred), brats_regions(truth)
        scores.append(
            CaseScore(
                name=name,
                truth=str(hits[0]),
                dice={k: dice(pr[k], tr[k]) for k in REGIONS},
                lesions=lesion_counts(pred, truth),
            )
        )
    return scores
