"""Instances from an instance model, across patches: one id per object however many it spans.

An instance model (Mask R-CNN) answers each 256 px patch on its own, so an object that crosses
a patch seam comes back once from every patch that sees it. geoseg joins those detections by
what their masks say on the pixels both patches see, never by boxes:

1. **One instance per pixel in a patch** (:func:`resolve_patch`): detections scoring at least
   ``score_threshold`` are ranked by score, then by position (box top, then left, then the
   model's order); each pixel whose mask probability is at least ``mask_threshold`` goes to
   the best-ranked detection claiming it. A detection left with no pixel is dropped. The
   patch's answer is a :data:`record <patch_record_dtype>`: an index map and per-instance
   class and score.
2. **Edges across overlaps** (:func:`patch_edges`): for two patches whose windows overlap,
   instance ``a`` of one and ``b`` of the other are one object when they have the same class
   and ``|a ∩ b| / min(|a|, |b|) >= merge_overlap`` counted on the overlap's pixels only
   (overlap over the smaller, SAHI's ``IOS`` metric, but of masks on shared pixels). Many-to-one
   joins are kept: a ring or a U cut by a patch border shows up as two pieces in one patch and
   one in its neighbour.
3. **Pixels by crop**: each pixel takes the instance of the patch whose core holds it, the same
   rule as ``crop`` stitching of a semantic mask (:func:`block_nodes`).
4. **Union-find** over every patch's instances with those edges (``scipy.sparse.csgraph``, in
   :func:`geoseg.core.instances.join_blocks`), ids 1..N by each object's first pixel in
   row-major order. Nothing depends on arrival order, blocks or workers: the ids are the same
   for any partition, and equal the single-process :func:`merge_scene`.

Pure numpy and scipy: no I/O, no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from geoseg.errors import ModelError

from .grid import Block, PatchGrid, Window
from .instances import NODATA_ID, Objects, block_components, join_blocks

__all__ = [
    "MAX_PATCH_INSTANCES",
    "patch_record_dtype",
    "resolve_patch",
    "patch_edges",
    "overlapping_patches",
    "block_nodes",
    "block_edges",
    "node_edges",
    "merge_scene",
]

MAX_PATCH_INSTANCES = 1024
"""Instances one patch may hold after thresholding (torchvision keeps 100 by default)."""


def patch_record_dtype(patch_px: int) -> np.dtype:
    """The fixed-size answer of one patch: ``index`` (P, P) uint16 (0 none, k + 1 instance k),
    ``label`` (:data:`MAX_PATCH_INSTANCES`,) uint8 class, ``score`` (same,) float32, ``count``
    uint16 instances. Fixed size, so patch answers slice and concatenate as arrays do."""
    k = MAX_PATCH_INSTANCES
    return np.dtype(
        [("index", np.uint16, (patch_px, patch_px)), ("label", np.uint8, (k,)), ("score", np.float32, (k,)), ("count", np.uint16)]
    )


def resolve_patch(
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    masks: np.ndarray,
    n_classes: int,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> np.ndarray:
    """One patch's detections as a 0-d record of :func:`patch_record_dtype`: one instance per pixel.

    Args:
        boxes: (K, 4) float, x1 y1 x2 y2 in patch pixels (torchvision's Mask R-CNN output).
        labels: (K,) int class indices, 1..n_classes - 1 (0 is the background).
        scores: (K,) float confidences in [0, 1].
        masks: (K, 1, P, P) or (K, P, P) float mask probabilities.
        n_classes: classes of the model's card, background included.

    Raises:
        ModelError: a label outside 1..n_classes - 1, or more than
            :data:`MAX_PATCH_INSTANCES` instances above the thresholds.
    """
    masks = np.asarray(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    k, p = masks.shape[0], masks.shape[-1]
    rec = np.zeros((), patch_record_dtype(p))
    labels = np.asarray(labels, np.int64).reshape(k)
    scores = np.asarray(scores, np.float32).reshape(k)
    boxes = np.asarray(boxes, np.float64).reshape(k, 4)
    bad = labels[(labels < 1) | (labels >= n_classes)]
    if bad.size:
        raise ModelError(
            f"the instance model returns class {int(bad[0])}, its card has classes 1..{n_classes - 1} "
            "(0 is the background); fix the card's classes"
        )
    keep = np.flatnonzero(scores >= score_threshold)
    rank = keep[np.lexsort((keep, boxes[keep, 0], boxes[keep, 1], -scores[keep]))]
    if rank.size == 0:
        return rec
    claimed = masks[rank] >= mask_threshold  # (k', P, P) in rank order
    owner = np.argmax(claimed, axis=0)  # the first (best-ranked) claim of each pixel
    has = claimed.any(axis=0)
    owned = np.bincount(owner[has], minlength=rank.size) > 0
    n = int(owned.sum())
    if n > MAX_PATCH_INSTANCES:
        raise ModelError(
            f"the instance model returns {n} instances in one patch, more than geoseg keeps ({MAX_PATCH_INSTANCES}); "
            "raise --param score_threshold"
        )
    new = np.zeros(rank.size + 1, np.uint16)  # rank position -> compact index (1..n), dropped -> 0
    new[1:][owned] = np.arange(1, n + 1, dtype=np.uint16)
    rec["index"] = np.where(has, new[owner + 1], 0)
    rec["label"][:n] = labels[rank[owned]]
    rec["score"][:n] = scores[rank[owned]]
    rec["count"] = n
    return rec


def _axis_overlaps(starts: tuple[int, ...], p: int, i: int) -> range:
    lo = next(j for j in range(len(starts)) if starts[j] + p > starts[i])
    hi = max(j for j in range(len(starts)) if starts[j] < starts[i] + p)
    return range(lo, hi + 1)


def overlapping_patches(grid: PatchGrid, iy: int, ix: int) -> Iterator[tuple[int, int]]:
    """Patches whose windows share pixels with patch (iy, ix), itself excluded, in grid order."""
    p = grid.tiling.patch_px
    for jy in _axis_overlaps(grid.starts_y, p, iy):
        for jx in _axis_overlaps(grid.starts_x, p, ix):
            if (jy, jx) != (iy, ix):
                yield jy, jx


def _intersect(a: Window, b: Window) -> Window | None:
    y0, x0, y1, x1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


def patch_edges(
    grid: PatchGrid, a: tuple[int, int], rec_a: np.ndarray, b: tuple[int, int], rec_b: np.ndarray, merge_overlap: float
) -> np.ndarray:
    """Pairs (m, 2) of instance indices (1-based, ``a``'s then ``b``'s) that are one object.

    Counted on the pixels both patch windows cover: same class and overlap over the smaller
    of the two pieces there at least ``merge_overlap`` (a fraction in (0, 1]).
    """
    wa, wb = grid.window(*a), grid.window(*b)
    shared = _intersect(wa, wb)
    na, nb = int(rec_a["count"]), int(rec_b["count"])
    if shared is None or not na or not nb:
        return np.zeros((0, 2), np.int64)
    y0, x0, y1, x1 = shared
    ia = rec_a["index"][y0 - wa[0] : y1 - wa[0], x0 - wa[1] : x1 - wa[1]].astype(np.int64).ravel()
    ib = rec_b["index"][y0 - wb[0] : y1 - wb[0], x0 - wb[1] : x1 - wb[1]].astype(np.int64).ravel()
    joint = np.bincount(ia * (nb + 1) + ib, minlength=(na + 1) * (nb + 1)).reshape(na + 1, nb + 1)
    inter = joint[1:, 1:]
    size_a = joint[1:, :].sum(axis=1)
    size_b = joint[:, 1:].sum(axis=0)
    smaller = np.minimum(size_a[:, None], size_b[None, :])
    same = rec_a["label"][:na, None] == rec_b["label"][None, :nb]
    hit = (inter > 0) & same & (inter >= merge_overlap * smaller)
    ka, kb = np.nonzero(hit)
    return np.stack([ka + 1, kb + 1], axis=1).astype(np.int64)


def block_nodes(
    grid: PatchGrid, block: Block, records: Mapping[tuple[int, int], np.ndarray], valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The block's pixels as local labels of its core patches' instances (``crop``).

    Local label numbering: the core patches in grid order, each patch's instances 1..count in
    order, so the instance ``k`` of the ``j``-th core patch is ``sum(counts[:j]) + k``.

    Returns:
        ``(labels, label_class, score, counts)``: (h, w) int32 labels of the block's extent (0
        background and where ``valid`` is False); (n,) uint8 and (n,) float32 per label; (c,)
        int64 instances of each core patch.
    """
    y0, x0, y1, x1 = block.extent
    labels = np.zeros((y1 - y0, x1 - x0), np.int32)
    classes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    counts: list[int] = []
    offset = 0
    for iy, ix in block.core_patches():
        rec = records[(iy, ix)]
        n = int(rec["count"])
        cy0, cx0, cy1, cx1 = grid.core(iy, ix)
        wy0, wx0, _, _ = grid.window(iy, ix)
        idx = rec["index"][cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0].astype(np.int32)
        labels[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = np.where(idx > 0, idx + offset, 0)
        classes.append(rec["label"][:n])
        scores.append(rec["score"][:n])
        counts.append(n)
        offset += n
    if valid is not None:
        labels[~valid] = 0
    cat = np.concatenate
    return labels, cat(classes).astype(np.uint8), cat(scores).astype(np.float32), np.asarray(counts, np.int64)


def block_edges(
    grid: PatchGrid, block: Block, records: Mapping[tuple[int, int], np.ndarray], merge_overlap: float
) -> np.ndarray:
    """Edges (m, 4) int64 ``(patch a, instance a, patch b, instance b)`` (patch by
    :meth:`PatchGrid.index`) from each core patch of ``block`` to every overlapping patch after
    it in grid order: over all blocks, each pair of patches is compared exactly once.
    ``records`` holds the core patches of ``block`` and of its neighbours."""
    out = [np.zeros((0, 4), np.int64)]
    for a in block.core_patches():
        pa = grid.index(*a)
        for b in overlapping_patches(grid, *a):
            pb = grid.index(*b)
            if pb < pa:
                continue
            e = patch_edges(grid, a, records[a], b, records[b], merge_overlap)
            if len(e):
                out.append(np.column_stack([np.full(len(e), pa), e[:, 0], np.full(len(e), pb), e[:, 1]]))
    return np.concatenate(out)


def node_edges(edges: np.ndarray, patch_base: np.ndarray) -> np.ndarray:
    """:func:`block_edges` rows as (2, m) node numbers for :func:`join_blocks`, where
    ``patch_base[patch index]`` is the node number of that patch's instance 1."""
    e = np.asarray(edges, np.int64).reshape(-1, 4)
    return np.stack([patch_base[e[:, 0]] + e[:, 1] - 1, patch_base[e[:, 2]] + e[:, 3] - 1])


def patch_bases(blocks: Sequence[Block], grid: PatchGrid, counts: Sequence[np.ndarray]) -> np.ndarray:
    """``patch_base`` for :func:`node_edges`: blocks' labels numbered one block after another."""
    base = np.zeros(len(grid), np.int64)
    offset = 0
    for block, c in zip(blocks, counts, strict=True):
        starts = offset + np.concatenate([[0], np.cumsum(c)[:-1]]) if len(c) else np.zeros(0, np.int64)
        for (iy, ix), s in zip(block.core_patches(), starts, strict=True):
            base[grid.index(iy, ix)] = s
        offset += int(np.sum(c))
    return base


def merge_scene(
    grid: PatchGrid, records: Mapping[tuple[int, int], np.ndarray], merge_overlap: float = 0.5, valid: np.ndarray | None = None
) -> tuple[np.ndarray, Objects]:
    """The single-process reference: every patch's record -> (H, W) uint32 instance ids
    (0 background, :data:`~geoseg.core.instances.NODATA_ID` where ``valid`` is False) and the
    objects. The pipeline's blocks must give exactly this."""
    h, w = grid.shape_yx
    ny, nx = grid.n_yx
    whole = Block(0, (0, 0, h, w), (0, ny), (0, nx), (0, ny), (0, nx))
    labels, cls, score, counts = block_nodes(grid, whole, records, valid)
    comp = block_components(labels, cls, (0, 0), w, None, score)
    edges = node_edges(block_edges(grid, whole, records, merge_overlap), patch_bases([whole], grid, [counts]))
    (lut,), objects = join_blocks([comp], faces=False, edges=edges)
    ids = lut[labels]
    if valid is not None:
        ids[~valid] = NODATA_ID
    return ids, objects
