"""Instances from a class mask, across blocks: one id per connected object in the whole scene.

Each block is labelled on its own (connected components of each chosen class, 4-connected,
``scipy.ndimage.label``); labels that touch across a shared block face with the same class
are joined (connected components of the graph of those pairs, ``scipy.sparse.csgraph``, the
union-find step); the joined objects are numbered 1..N by their first pixel in raster
(row-major) order of the whole scene. That order does not depend on the blocks, so the ids
are the same for any block size, worker count or order of work. This is the block-wise
labelling of dask-image's ``ndmeasure.label`` (blocks labelled apart, face labels merged by a
connected-components pass, relabelled), with partition-free ids added.

Pure numpy and scipy: no I/O, no Ray, no torch; :mod:`geoseg._instances` runs it in tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.errors import InputError

__all__ = [
    "NODATA_ID",
    "MAX_INSTANCES",
    "BlockComponents",
    "label_mask",
    "block_components",
    "join_blocks",
    "Objects",
]

NODATA_ID = np.uint32(0xFFFFFFFF)
"""``instance_id`` where the input has no data (and where nothing is written yet)."""

MAX_INSTANCES = int(NODATA_ID) - 1
"""Objects one group can hold: uint32 ids 1..2**32 - 2 (0 is background)."""

_FACE = ndimage.generate_binary_structure(2, 1)  # 4-connectivity: pixels sharing an edge


def label_mask(mask: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of each class of ``classes`` in a (y, x) class mask.

    Args:
        mask: (y, x) integer class indices (any value outside ``classes``, nodata included,
            is background).
        classes: the class indices whose pixels form objects.

    Returns:
        ``(labels, label_class)``: (y, x) int32 local labels, 0 = background, 1..n objects
        of the block; (n,) uint8, the class of label k at ``label_class[k - 1]``. Two pixels
        of one label share a class and are joined by a path of edge-neighbours (4-connected).
    """
    labels = np.zeros(mask.shape, np.int32)
    label_class: list[np.ndarray] = []
    n = 0
    for c in classes:
        lab, k = ndimage.label(mask == c, structure=_FACE)
        if k:
            hit = lab > 0
            labels[hit] = lab[hit] + n
            label_class.append(np.full(k, c, np.uint8))
            n += k
    return labels, (np.concatenate(label_class) if label_class else np.zeros(0, np.uint8))


@dataclass(frozen=True)
class BlockComponents:
    """What the join needs of one labelled block, in scene pixel coordinates.

    ``n`` objects of the block (local labels 1..n). Per label (arrays of length ``n``):
    ``label_class`` (uint8), ``first`` (int64, the scene's row-major index y * width + x of its
    first pixel), ``pixels`` (int64), ``sum_y``/``sum_x`` (float64, sums of pixel-centre
    coordinates, row + 0.5 and column + 0.5), ``bbox`` ((n, 4) int64 y0, x0, y1, x1, end
    exclusive), ``area`` (float64, the sum of the pixels' areas; NaN when unknown), ``score``
    (float32, an instance model's confidence; NaN for components of a mask). Edges: the local
    labels along the block's ``top``/``bottom`` rows and ``left``/``right`` columns. A label
    may own no pixel (an instance model's detection whose pixels other patches provide):
    ``pixels`` 0, ``first`` the int64 maximum, ``bbox`` (max, max, min, min).
    """

    origin: tuple[int, int]
    shape: tuple[int, int]
    label_class: np.ndarray
    first: np.ndarray
    pixels: np.ndarray
    sum_y: np.ndarray
    sum_x: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    score: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.label_class)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain named arrays (for ``np.savez``); :meth:`from_arrays` reverses it."""
        return {
            "origin": np.asarray(self.origin, np.int64),
            "shape": np.asarray(self.shape, np.int64),
            **{k: getattr(self, k) for k in _ARRAYS},
            **({} if self.score is None else {"score": self.score}),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> BlockComponents:
        oy, ox = (int(v) for v in a["origin"])
        h, w = (int(v) for v in a["shape"])
        score = np.asarray(a["score"]) if "score" in a else None
        return cls(origin=(oy, ox), shape=(h, w), **{k: np.asarray(a[k]) for k in _ARRAYS}, score=score)


_ARRAYS = ("label_class", "first", "pixels", "sum_y", "sum_x", "bbox", "area", "top", "bottom", "left", "right")


def block_components(
    labels: np.ndarray,
    label_class: np.ndarray,
    origin: tuple[int, int],
    scene_width: int,
    pixel_area: float | np.ndarray | None = None,
    score: np.ndarray | None = None,
) -> BlockComponents:
    """Per-label measures and edges of one labelled block (:func:`label_mask`'s output).

    Args:
        labels: (h, w) int32 local labels of the block whose top-left pixel is ``origin``
            (row, column) of a scene ``scene_width`` pixels wide.
        label_class: (n,) uint8 class of each label.
        pixel_area: the area of one pixel: a number, (h,) per row (a geographic CRS), (h, w)
            per pixel, or None (unknown: areas are NaN).
        score: (n,) float32 confidence of each label (instance models), or None.
    """
    h, w = labels.shape
    n = len(label_class)
    oy, ox = origin
    flat = labels.ravel()
    pixels = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    rows = np.repeat(np.arange(oy, oy + h, dtype=np.float64) + 0.5, w)
    cols = np.tile(np.arange(ox, ox + w, dtype=np.float64) + 0.5, h)
    sum_y = np.bincount(flat, weights=rows, minlength=n + 1)[1:]
    sum_x = np.bincount(flat, weights=cols, minlength=n + 1)[1:]
    if pixel_area is None:
        area = np.full(n, np.nan)
    else:
        pa = np.asarray(pixel_area, np.float64)
        per_pixel = np.broadcast_to(pa.reshape(h, 1) if pa.ndim == 1 else pa, (h, w))
        area = np.bincount(flat, weights=per_pixel.ravel(), minlength=n + 1)[1:]
    big = np.iinfo(np.int64).max
    first = np.full(n + 1, big, np.int64)
    np.minimum.at(first, flat, np.arange(flat.size, dtype=np.int64))
    first = first[1:]
    fy, fx = np.divmod(first, w)
    bbox = np.tile(np.array([big, big, -big, -big], np.int64), (n, 1))  # no pixel: neutral for min/max
    for k, sl in enumerate(ndimage.find_objects(labels, max_label=n)):
        if sl is not None:
            bbox[k] = (sl[0].start + oy, sl[1].start + ox, sl[0].stop + oy, sl[1].stop + ox)
    return BlockComponents(
        origin=(oy, ox),
        shape=(h, w),
        label_class=np.asarray(label_class, np.uint8),
        first=np.where(pixels > 0, (fy + oy) * scene_width + (fx + ox), big),
        pixels=pixels,
        sum_y=sum_y,
        sum_x=sum_x,
        bbox=bbox,
        area=area,
        top=labels[0].copy(),
        bottom=labels[-1].copy(),
        left=labels[:, 0].copy(),
        right=labels[:, -1].copy(),
        score=None if score is None else np.asarray(score, np.float32),
    )


@dataclass(frozen=True)
class Objects:
    """The scene's objects, ids 1..N in order (arrays of length N), as :class:`BlockComponents`
    measures them, summed over the blocks each object spans."""

    instance_id: np.ndarray  # uint32
    class_id: np.ndarray  # uint8
    first: np.ndarray  # int64
    pixels: np.ndarray  # int64
    centroid_yx: np.ndarray  # (N, 2) float64, pixel coordinates (centre of pixel (0, 0) is (0.5, 0.5))
    bbox: np.ndarray  # (N, 4) int64 y0, x0, y1, x1 pixels, end exclusive
    area: np.ndarray  # float64
    score: np.ndarray  # float32, the best score of the object's detections; NaN for components


def _face_pairs(a: BlockComponents, b: BlockComponents, offsets: tuple[int, int]) -> np.ndarray | None:
    """Global node pairs (2, k) of labels of ``a`` and ``b`` touching across their shared face."""
    (ay, ax), (ah, aw) = a.origin, a.shape
    (by, bx), (bh, bw) = b.origin, b.shape
    if bx == ax + aw:  # b right of a
        lo, hi = max(ay, by), min(ay + ah, by + bh)
        if lo >= hi:
            return None
        la, lb = a.right[lo - ay : hi - ay], b.left[lo - by : hi - by]
    elif by == ay + ah:  # b below a
        lo, hi = max(ax, bx), min(ax + aw, bx + bw)
        if lo >= hi:
            return None
        la, lb = a.bottom[lo - ax : hi - ax], b.top[lo - bx : hi - bx]
    else:
        return None
    both = (la > 0) & (lb > 0)
    la, lb = la[both], lb[both]
    same = a.label_class[la - 1] == b.label_class[lb - 1]
    return np.stack([la[same] - 1 + offsets[0], lb[same] - 1 + offsets[1]])


def join_blocks(
    blocks: Sequence[BlockComponents], faces: bool = True, edges: np.ndarray | None = None
) -> tuple[list[np.ndarray], Objects]:
    """Join the labels of blocks that tile a scene into scene-wide objects.

    Blocks must not overlap; neighbours are blocks whose extents share an edge (a block's
    right column meets the next one's left column, or bottom row the next top row).

    Args:
        blocks: the blocks' labels and measures.
        faces: join labels of one class that touch across a face (components of a mask);
            False for an instance model's detections, which touch without being one object.
        edges: (2, m) int64 further pairs of labels that are one object, as node numbers:
            block ``i``'s label ``k`` is node ``sum(n of blocks before i) + k - 1``.

    Returns:
        ``(luts, objects)``: per block, a (n + 1,) uint32 table from its local labels to
        instance ids (``lut[0] == 0``), and the objects, ids 1..N ordered by first pixel.
        Joined labels that own no pixel at all get no id (0).

    Raises:
        InputError: more objects than a uint32 id holds (:data:`MAX_INSTANCES`).
    """
    sizes = np.array([b.n for b in blocks], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    by_left = {(b.origin[1], b.origin[0]): i for i, b in enumerate(blocks)}
    by_top = {(b.origin[0], b.origin[1]): i for i, b in enumerate(blocks)}
    pairs = [np.zeros((2, 0), np.int64)] + ([] if edges is None else [np.asarray(edges, np.int64).reshape(2, -1)])
    for i, a in enumerate(blocks if faces else ()):
        right = by_left.get((a.origin[1] + a.shape[1], a.origin[0]))
        below = by_top.get((a.origin[0] + a.shape[0], a.origin[1]))
        for j in (right, below):
            if j is not None:
                p = _face_pairs(a, blocks[j], (int(offsets[i]), int(offsets[j])))
                if p is not None:
                    pairs.append(p)
    edges = np.concatenate(pairs, axis=1)
    graph = coo_matrix((np.ones(edges.shape[1], np.int8), (edges[0], edges[1])), shape=(total, total))
    n_comp, comp = connected_components(graph, directed=False) if total else (0, np.zeros(0, np.int64))

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in blocks]) if blocks else np.zeros(0)

    first = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, comp, cat("first").astype(np.int64))
    n_obj = int((first < np.iinfo(np.int64).max).sum())  # components owning a pixel
    if n_obj > MAX_INSTANCES:
        raise InputError(f"{n_obj} objects in one group, more than uint32 instance ids hold ({MAX_INSTANCES})")
    order = np.argsort(first, kind="stable")[:n_obj]  # rank -> component; firsts of objects are distinct
    ids = np.zeros(n_comp, np.uint32)
    ids[order] = np.arange(1, n_obj + 1, dtype=np.uint32)
    node_id = ids[comp]
    luts = [np.concatenate([[0], node_id[offsets[i] : offsets[i + 1]]]).astype(np.uint32) for i in range(len(blocks))]

    def total_of(name: str) -> np.ndarray:
        return np.bincount(comp, weights=cat(name).astype(np.float64), minlength=n_comp)[order]

    pixels = np.bincount(comp, weights=cat("pixels").astype(np.float64), minlength=n_comp)[order].astype(np.int64)
    bbox_all = np.concatenate([b.bbox for b in blocks]) if blocks else np.zeros((0, 4), np.int64)
    lo = np.full((n_comp, 2), np.iinfo(np.int64).max, np.int64)
    hi = np.full((n_comp, 2), np.iinfo(np.int64).min, np.int64)
    np.minimum.at(lo, comp, bbox_all[:, :2])
    np.maximum.at(hi, comp, bbox_all[:, 2:])
    cls = np.zeros(n_comp, np.uint8)
    cls[comp] = cat("label_class").astype(np.uint8)
    score = np.full(n_comp, np.nan, np.float32)
    if blocks and all(b.score is not None for b in blocks):
        score[:] = -np.inf
        np.maximum.at(score, comp, cat("score").astype(np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = np.stack([total_of("sum_y"), total_of("sum_x")], axis=1) / pixels[:, None]
    return luts, Objects(
        instance_id=np.arange(1, n_obj + 1, dtype=np.uint32),
        class_id=cls[order],
        first=first[order],
        pixels=pixels,
        centroid_yx=centroid,
        bbox=np.concatenate([lo, hi], axis=1)[order],
        area=total_of("area"),
        score=score[order],
    )
