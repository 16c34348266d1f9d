"""Instances of a scene: from the semantic mask (``instances: components``) or from an
instance model (a card with ``task: instance``), as phases of a scene.

Components of a mask, three later phases:

1. :class:`LabelBlock`, one per block: connected components of the block's ``mask``, their
   measures and edge labels, saved as a part of the group (``.npz`` in the store).
2. :class:`JoinObjects`, one per group: joins the blocks' labels across faces
   (:func:`geoseg.core.instances.join_blocks`), writes the lookup tables and the ``objects``
   table (world coordinates from the affine, areas in m²).
3. :class:`RelabelBlock`, one per block: labels the block again (deterministic) and writes
   ``instance_id`` through the lookup table.

An instance model: its blocks' write is :class:`DetectionWrite` (the model phase: one
instance per pixel by ``crop``, ``mask`` from the instances' classes, and the block's labels
and overlap edges saved as its part, :mod:`geoseg.core.detections`), then
:class:`JoinDetections` (union-find over the edges) and :class:`RelabelDetections`.

Every result is a key of the store, so a killed run resumes at the phase it reached.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.core.detections import block_edges, block_nodes, node_edges, patch_bases
from geoseg.core.grid import Block, PatchGrid, Window
from geoseg.core.instances import NODATA_ID, BlockComponents, Objects, block_components, join_blocks, label_mask
from geoseg.errors import StoreError
from geoseg.sinks import Store, array, open_group, part_key, write_block, write_table
from geoseg.sinks._zarr import MASK_FILL

__all__ = [
    "LabelBlock",
    "JoinObjects",
    "RelabelBlock",
    "DetectionWrite",
    "JoinDetections",
    "RelabelDetections",
    "pixel_area",
    "instance_phases",
    "detection_phases",
    "OBJECT_COLUMNS",
]

OBJECT_COLUMNS = (
    "instance_id", "class_id", "pixels", "area_m2", "centroid_x", "centroid_y", "xmin", "ymin", "xmax", "ymax",
    "row_min", "col_min", "row_max", "col_max",
)  # fmt: skip
"""The ``objects`` table: id, class index, pixel count, area (m², NaN without a CRS), centroid
and bounding box in the CRS's coordinates, and the bounding box in pixels (end exclusive).
An instance model's table has a ``score`` column after ``class_id``: the best confidence of
the detections joined into the object."""


def pixel_area(crs_wkt: str, transform: Sequence[float], y0: int, h: int) -> float | np.ndarray | None:
    """The area in m² of one pixel of rows ``y0 .. y0 + h`` of a raster.

    A projected CRS: |det| of the affine times the square of the axis unit in metres (pyproj's
    ``unit_conversion_factor``). A geographic CRS with a north-up transform: per row, the
    geodesic area of the pixel's quadrilateral on the CRS's ellipsoid (``pyproj.Geod``), so
    areas are true areas at every latitude. None (unknown) without a CRS, or for a rotated
    transform in a geographic CRS.
    """
    if not crs_wkt:
        return None
    from pyproj import CRS  # noqa: PLC0415

    crs = CRS.from_wkt(crs_wkt)
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if crs.is_geographic:
        if b or d:
            return None
        geod = crs.get_geod()
        if geod is None:
            return None
        tops = f + e * (y0 + np.arange(h, dtype=np.float64))
        return np.array(
            [abs(geod.polygon_area_perimeter([c, c + a, c + a, c], [t, t, t + e, t + e])[0]) for t in tops]
        )
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return abs(a * e - b * d) * unit * unit


def _save(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    if compressed:
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    else:
        np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _load(store: Store, key: str) -> dict[str, np.ndarray]:
    data = store.get(key)
    if data is None:
        raise StoreError(f"{store.url}: {key} is missing; rerun with --overwrite to recompute the group")
    with np.load(io.BytesIO(data)) as z:
        return {k: z[k] for k in z.files}


def _read_mask(store: Store, group: str, extent: Window) -> np.ndarray:
    y0, x0, y1, x1 = extent
    return np.asarray(array(open_group(store, group), "mask")[y0:y1, x0:x1])


@dataclass(frozen=True)
class LabelBlock:
    """Phase 1: components of one block's mask, saved as ``parts/components/<block>.npz``."""

    group: str
    block: str
    extent: Window
    classes: tuple[int, ...]
    width: int
    crs_wkt: str
    transform: tuple[float, ...]

    def run(self, store: Store) -> dict[str, Any]:
        labels, cls = label_mask(_read_mask(store, self.group, self.extent), self.classes)
        y0, x0, y1, _ = self.extent
        comp = block_components(labels, cls, (y0, x0), self.width, pixel_area(self.crs_wkt, self.transform, y0, y1 - y0))
        store.set(part_key(self.group, f"components/{self.block}.npz"), _save(comp.to_arrays()))
        return {"labels": comp.n}


@dataclass(frozen=True)
class JoinObjects:
    """Phase 2: joins every block's labels into objects; writes ``parts/<key>.npz`` (a lookup
    table per block) and the group's ``objects`` table."""

    group: str
    key: str
    blocks: tuple[str, ...]
    transform: tuple[float, ...]
    scored = False

    def join(self, parts: list[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], Objects]:
        """The blocks' saved parts -> per-block lookup tables and the objects."""
        return join_blocks([BlockComponents.from_arrays(p) for p in parts])

    def run(self, store: Store) -> dict[str, Any]:
        luts, obj = self.join([_load(store, part_key(self.group, f"components/{b}.npz")) for b in self.blocks])
        store.set(part_key(self.group, f"{self.key}.npz"), _save(dict(zip(self.blocks, luts, strict=True))))
        a, b, c, d, e, f = self.transform
        cy, cx = obj.centroid_yx[:, 0], obj.centroid_yx[:, 1]
        r0, c0, r1, c1 = (obj.bbox[:, i] for i in range(4))
        xs = np.stack([c + a * cc + b * rr for cc, rr in ((c0, r0), (c1, r0), (c0, r1), (c1, r1))])
        ys = np.stack([f + d * cc + e * rr for cc, rr in ((c0, r0), (c1, r0), (c0, r1), (c1, r1))])
        columns = {
            "instance_id": obj.instance_id,
            "class_id": obj.class_id,
            **({"score": obj.score} if self.scored else {}),
            "pixels": obj.pixels,
            "area_m2": obj.area.astype(np.float64),
            "centroid_x": c + a * cx + b * cy,
            "centroid_y": f + d * cx + e * cy,
            "xmin": xs.min(axis=0),  # over the 4 corners: (4, N) -> (N,), N = 0 included
            "ymin": ys.min(axis=0),
            "xmax": xs.max(axis=0),
            "ymax": ys.max(axis=0),
            "row_min": r0,
            "col_min": c0,
            "row_max": r1,
            "col_max": c1,
        }
        write_table(store, self.group, "objects", columns)
        return {"objects": len(obj.pixels)}


@dataclass(frozen=True)
class RelabelBlock:
    """Phase 3: ``instance_id`` of one block, its components looked up in the join's tables."""

    group: str
    block: str
    extent: Window
    classes: tuple[int, ...]
    join_key: str

    def labels(self, store: Store, mask: np.ndarray) -> np.ndarray:
        """The block's local labels, as phase 1 numbered them."""
        return label_mask(mask, self.classes)[0]

    def run(self, store: Store) -> dict[str, Any]:
        mask = _read_mask(store, self.group, self.extent)
        labels = self.labels(store, mask)
        lut = _load(store, part_key(self.group, f"{self.join_key}.npz"))[self.block]
        ids = lut[labels]
        ids[mask == MASK_FILL] = NODATA_ID
        write_block(store, self.group, self.extent, {"instance_id": ids})
        return {}


def _join_key(names: Sequence[str]) -> str:
    """The join's marker key: it names the block layout, so a rerun with another block size
    never mixes lookup tables of two layouts."""
    return "join_" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]


def instance_phases(
    group: str,
    extents: Sequence[tuple[str, Window]],
    classes: tuple[int, ...],
    width: int,
    crs_wkt: str,
    transform: tuple[float, ...],
) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """The three later phases of a scene as ``(marker key, task)`` pairs."""
    names = tuple(n for n, _ in extents)
    join_key = _join_key(names)
    return (
        tuple((f"label_{n}", LabelBlock(group, n, ext, classes, width, crs_wkt, transform)) for n, ext in extents),
        ((join_key, JoinObjects(group, join_key, names, transform)),),
        tuple((f"ids_{n}", RelabelBlock(group, n, ext, classes, join_key)) for n, ext in extents),
    )


@dataclass(frozen=True)
class DetectionWrite:
    """The model phase of an instance model's block: its core patches' instances by ``crop``
    (:func:`~geoseg.core.detections.block_nodes`), ``mask`` from their classes, and the block's
    labels, measures and overlap edges (to every later overlapping patch, the neighbours'
    included) saved as ``parts/components/<block>.npz``."""

    group: str
    grid: PatchGrid
    block: Block
    sources: tuple[Block, ...]
    merge_overlap: float
    width: int
    crs_wkt: str
    transform: tuple[float, ...]

    def write(self, store: Store, valid: np.ndarray | None, preds: Sequence[np.ndarray]) -> dict[str, Any]:
        records = {
            ij: pred[k] for src, pred in zip(self.sources, preds, strict=True) for k, ij in enumerate(src.core_patches())
        }
        labels, cls, score, counts = block_nodes(self.grid, self.block, records, valid)
        mask = np.concatenate([[0], cls]).astype(np.uint8)[labels]
        if valid is not None:
            mask[~valid] = MASK_FILL
        write_block(store, self.group, self.block.extent, {"mask": mask})
        y0, x0, y1, _ = self.block.extent
        area = pixel_area(self.crs_wkt, self.transform, y0, y1 - y0)
        comp = block_components(labels, cls, (y0, x0), self.width, area, score)
        edges = block_edges(self.grid, self.block, records, self.merge_overlap)
        part = {**comp.to_arrays(), "counts": counts, "edges": edges, "labels": labels}
        store.set(part_key(self.group, f"components/{self.block.name}.npz"), _save(part, compressed=True))
        return {"patches": len(counts), "detections": len(cls)}


@dataclass(frozen=True)
class JoinDetections(JoinObjects):
    """Phase 2 of an instance model: the blocks' instances joined by their overlap edges
    (union-find; touching instances are never joined by touching alone)."""

    grid: PatchGrid | None = None
    block_list: tuple[Block, ...] = ()
    scored = True

    def join(self, parts: list[dict[str, np.ndarray]]) -> tuple[list[np.ndarray], Objects]:
        assert self.grid is not None
        base = patch_bases(self.block_list, self.grid, [p["counts"] for p in parts])
        edges = node_edges(np.concatenate([p["edges"].reshape(-1, 4) for p in parts]), base)
        return join_blocks([BlockComponents.from_arrays(p) for p in parts], faces=False, edges=edges)


@dataclass(frozen=True)
class RelabelDetections(RelabelBlock):
    """Phase 3 of an instance model: the labels saved by :class:`DetectionWrite`."""

    def labels(self, store: Store, mask: np.ndarray) -> np.ndarray:
        return _load(store, part_key(self.group, f"components/{self.block}.npz"))["labels"]


def detection_phases(
    group: str, grid: PatchGrid, blks: Sequence[Block], transform: tuple[float, ...]
) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """The two later phases of an instance model's scene (its model phase wrote phase 1)."""
    names = tuple(b.name for b in blks)
    join_key = _join_key(names)
    return (
        ((join_key, JoinDetections(group, join_key, names, transform, grid, tuple(blks))),),
        tuple((f"ids_{b.name}", RelabelDetections(group, b.name, b.extent, (), join_key)) for b in blks),
    )
