"""Instances from the semantic mask (``instances: components``): three later phases of a scene.

1. :class:`LabelBlock`, one per block: connected components of the block's ``mask``, their
   measures and edge labels, saved as a part of the group (``.npz`` in the store).
2. :class:`JoinObjects`, one per group: joins the blocks' labels across faces
   (:func:`geoseg.core.instances.join_blocks`), writes the lookup tables and the ``objects``
   table (world coordinates from the affine, areas in m²).
3. :class:`RelabelBlock`, one per block: labels the block again (deterministic) and writes
   ``instance_id`` through the lookup table.

Every result is a key of the store, so a killed run resumes at the phase it reached.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.core.grid import Window
from geoseg.core.instances import NODATA_ID, BlockComponents, block_components, join_blocks, label_mask
from geoseg.errors import StoreError
from geoseg.sinks import Store, array, open_group, part_key, write_block, write_table
from geoseg.sinks._zarr import MASK_FILL

__all__ = ["LabelBlock", "JoinObjects", "RelabelBlock", "pixel_area", "instance_phases", "OBJECT_COLUMNS"]

OBJECT_COLUMNS = (
    "instance_id", "class_id", "pixels", "area_m2", "centroid_x", "centroid_y", "xmin", "ymin", "xmax", "ymax",
    "row_min", "col_min", "row_max", "col_max",
)  # fmt: skip
"""The ``objects`` table: id, class index, pixel count, area (m², NaN without a CRS), centroid
and bounding box in the CRS's coordinates, and the bounding box in pixels (end exclusive)."""


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


def _save(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
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

    def run(self, store: Store) -> dict[str, Any]:
        comps = [
            BlockComponents.from_arrays(_load(store, part_key(self.group, f"components/{b}.npz"))) for b in self.blocks
        ]
        luts, obj = join_blocks(comps)
        store.set(part_key(self.group, f"{self.key}.npz"), _save(dict(zip(self.blocks, luts, strict=True))))
        a, b, c, d, e, f = self.transform
        cy, cx = obj.centroid_yx[:, 0], obj.centroid_yx[:, 1]
        r0, c0, r1, c1 = (obj.bbox[:, i] for i in range(4))
        xs = np.stack([c + a * cc + b * rr for cc, rr in ((c0, r0), (c1, r0), (c0, r1), (c1, r1))])
        ys = np.stack([f + d * cc + e * rr for cc, rr in ((c0, r0), (c1, r0), (c0, r1), (c1, r1))])
        columns = {
            "instance_id": obj.instance_id,
            "class_id": obj.class_id,
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

    def run(self, store: Store) -> dict[str, Any]:
        mask = _read_mask(store, self.group, self.extent)
        labels, _ = label_mask(mask, self.classes)
        lut = _load(store, part_key(self.group, f"{self.join_key}.npz"))[self.block]
        ids = lut[labels]
        ids[mask == MASK_FILL] = NODATA_ID
        write_block(store, self.group, self.extent, {"instance_id": ids})
        return {}


def instance_phases(
    group: str,
    extents: Sequence[tuple[str, Window]],
    classes: tuple[int, ...],
    width: int,
    crs_wkt: str,
    transform: tuple[float, ...],
) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """The three later phases of a scene as ``(marker key, task)`` pairs.

    The join's key names the block layout, so a rerun with another block size never mixes
    lookup tables of two layouts.
    """
    names = tuple(n for n, _ in extents)
    join_key = "join_" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return (
        tuple((f"label_{n}", LabelBlock(group, n, ext, classes, width, crs_wkt, transform)) for n, ext in extents),
        ((join_key, JoinObjects(group, join_key, names, transform)),),
        tuple((f"ids_{n}", RelabelBlock(group, n, ext, classes, join_key)) for n, ext in extents),
    )
