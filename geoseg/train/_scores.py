"""Validation scores of raster models: IoU, relaxed precision/recall, object F1. Pure numpy/scipy."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["iou", "relaxed_precision_recall", "object_f1"]


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty).

    >>> iou(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.5
    """
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


def relaxed_precision_recall(pred: np.ndarray, truth: np.ndarray, tol_px: float = 3.0) -> tuple[float, float]:
    """Precision and recall of (H, W) bool masks with a tolerance of ``tol_px`` pixels.

    Precision: the share of predicted pixels within ``tol_px`` (Euclidean) of a label pixel;
    recall: the share of label pixels within ``tol_px`` of a predicted pixel (Mnih's relaxed
    measures for road maps). An empty prediction has precision 1; empty labels recall 1.
    """
    def within(src: np.ndarray, of: np.ndarray) -> float:
        if not src.any():
            return 1.0
        if not of.any():
            return 0.0
        dist = ndimage.distance_transform_edt(~of)
        return float((dist[src] <= tol_px).mean())

    return within(pred, truth), within(truth, pred)


def object_f1(pred: np.ndarray, truth: np.ndarray, min_iou: float = 0.5) -> dict[str, float]:
    """Object-level precision, recall and F1 of two (H, W) id rasters (0 = none).

    Objects are matched one-to-one, greedily by IoU (highest first), a match needing IoU >=
    ``min_iou``; unmatched predictions are false positives, unmatched labels misses.

    Returns:
        ``{"f1", "precision", "recall", "tp", "fp", "fn"}``.
    """
    p_ids, p_size = np.unique(pred[pred > 0], return_counts=True)
    t_ids, t_size = np.unique(truth[truth > 0], return_counts=True)
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([pred[both], truth[both]]), axis=1, return_counts=True)
    ps = dict(zip(p_ids.tolist(), p_size.tolist(), strict=True))
    ts = dict(zip(t_ids.tolist(), t_size.tolist(), strict=True))
    cand = [
        (n / (ps[a] + ts[b] - n), a, b) for (a, b), n in zip(pairs.T.tolist(), inter.tolist(), strict=True)
    ]
    used_p: set[int] = set()
    used_t: set[int] = set()
    for value, a, b in sorted(cand, reverse=True):
        if value >= min_iou and a not in used_p and b not in used_t:
            used_p.add(a)
            used_t.add(b)
    tp = len(used_p)
    fp, fn = len(ps) - tp, len(ts) - tp
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"f1": f1, "precision": prec, "recall": rec, "tp": tp, "fp": fp, "fn": fn}
