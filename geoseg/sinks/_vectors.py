"""Export a scene's mask as vectors: polygons (water, objects) or centre lines (roads).

Both are made from the finished ``mask`` one chunk row (strip) at a time, so memory follows a
strip, not the scene, and both come out merged across strip and block seams:

- **polygons**: the connected parts (4-connected) of the chosen classes. With
  ``instances: components`` the group's ``instance_id`` and ``objects`` table are used; without,
  the same components are found here with the same code (:mod:`geoseg.core.instances`: strips
  labelled apart, joined across their faces by union-find, ids by first pixel). Each id is
  traced per strip in pixel coordinates (``rasterio.features.shapes``, GDAL's polygonize),
  where pieces of one object cut by two strips share their edge exactly, joined
  (``shapely.union_all``, holes kept) and only then put into the CRS by the affine.
- **lines**: the skeleton of the chosen classes (``skimage.morphology.skeletonize``) of each
  strip read with ``halo`` rows on both sides (so the skeleton near a seam is that of the
  whole road), its pixel graph (:mod:`geoseg.core.lines`, segments to the strip above
  included once), one feature per connected network, its segments merged into maximal
  LineStrings (``shapely.line_merge``) between pixel centres.

Totals per scene (features, area in km² or length in km; geodesic on the CRS's ellipsoid
where the CRS is geographic) come with every export.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from geoseg.errors import StoreError

from ._export import finished_group, output_file, written
from ._store import StoreLike
from ._zarr import INSTANCE_FILL, read_table
from ._zarr import array as zarr_array

__all__ = [
    "export_objects",
    "export_vectors",
    "object_frame",
    "vector_frame",
    "VectorFormat",
    "VectorGeometry",
    "VectorTotals",
    "ROAD_HALO_PX",
]

VectorFormat = Literal["geoparquet", "geojson", "gpkg", "csv"]
VectorGeometry = Literal["polygons", "lines"]

ROAD_HALO_PX = 64
"""Rows read above and below a strip for its skeleton: the skeleton of a road narrower than
twice this is the same as that of the whole scene near the strip's seams."""

_METRES_PER_DEGREE = 111_320.0  # a degree of latitude (and of longitude at the equator)


@dataclass(frozen=True)
class VectorTotals:
    """A scene's vector totals: ``features``; ``area_km2`` (polygons) or ``length_km`` (lines),
    NaN without a CRS; ``geodesic`` where measured on the ellipsoid (a geographic CRS)."""

    scene: str
    geometry: str
    classes: tuple[str, ...]
    features: int
    area_km2: float | None = None
    length_km: float | None = None
    geodesic: bool = False
    simplify_m: float = 0.0

    def line(self) -> str:
        what = "/".join(self.classes)
        how = " (geodesic)" if self.geodesic else ""
        if self.geometry == "lines":
            return f"{self.scene}: {what} centre lines: {self.features} networks, {self.length_km:.3f} km{how}"
        return f"{self.scene}: {what} polygons: {self.features}, {self.area_km2:.4f} km²{how}"

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}


def _strips(arr: Any, step: int, halo: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y0, top, rows)``: scene rows ``y0 - top .. y0 + step + halo`` of a 2-D array, strip by strip."""
    h = int(arr.shape[0])
    for y0 in range(0, h, step):
        lo, hi = max(0, y0 - halo), min(h, y0 + step + halo)
        yield y0, y0 - lo, np.asarray(arr[lo:hi, :])


def _trace(strips: Iterator[tuple[int, np.ndarray]]) -> dict[int, Any]:
    """Id -> its polygon (shapely, pixel coordinates: x = column, y = row) from ``(y0, ids)``
    strips of an id array (0 and the fill are no object)."""
    import shapely  # noqa: PLC0415
    from rasterio.features import shapes  # noqa: PLC0415
    from rasterio.transform import Affine  # noqa: PLC0415
    from shapely.geometry import shape  # noqa: PLC0415

    parts: dict[int, list[Any]] = defaultdict(list)
    for y0, strip in strips:
        objects = (strip > 0) & (strip != INSTANCE_FILL)
        if not objects.any():
            continue
        # GDAL polygonizes int32 at most: number the strip's ids 0..k-1 and map them back.
        present, local = np.unique(strip, return_inverse=True)
        local = local.reshape(strip.shape).astype(np.int32)
        for geom, value in shapes(local, mask=objects, connectivity=4, transform=Affine.translation(0, y0)):
            parts[int(present[int(value)])].append(shape(geom))
    return {k: shapely.union_all(v) for k, v in parts.items()}


def _to_world(geoms: Sequence[Any], transform: Sequence[float]) -> list[Any]:
    from shapely import affinity  # noqa: PLC0415

    a, b, c, d, e, f = transform[:6]
    return [affinity.affine_transform(g, [a, b, d, e, c, f]) for g in geoms]


def object_frame(store: StoreLike, name: str) -> Any:
    """The objects of scene ``name`` as a ``geopandas.GeoDataFrame`` in the scene's CRS.

    One row per instance id (the ``objects`` table's columns, plus ``class``, the class name),
    its polygon as ``geometry`` (holes kept; an object of one id is one polygon, or several
    only where pixels touch at a corner). A scene without a CRS gives pixel-grid coordinates
    of its transform and no CRS.

    Raises:
        StoreError: no such complete scene, or it was run without ``instances``.
    """
    import geopandas as gpd  # noqa: PLC0415

    g, attrs, meta = finished_group(store, name, "raster")
    if "instance_id" not in g:
        raise StoreError(
            f"group {name!r} has no objects: it was run without instances; rerun with --instances components "
            "(and --overwrite or a new store)"
        )
    ids = zarr_array(g, "instance_id")
    table = read_table(store, name, "objects")
    polys = _trace((y0, s) for y0, _, s in _strips(ids, int(ids.chunks[0])))
    geometry = _to_world([polys[int(i)] for i in table["instance_id"]], attrs["spatial:transform"])
    classes = list((meta.get("model") or {}).get("classes", []))
    data: dict[str, Any] = {k: v for k, v in table.items()}
    data["class"] = [classes[int(k)] if int(k) < len(classes) else str(int(k)) for k in table["class_id"]]
    return gpd.GeoDataFrame(data, geometry=geometry, crs=attrs.get("proj:wkt2") or None)


def _class_indices(name: str, all_classes: Sequence[str], chosen: Sequence[str] | None) -> tuple[int, ...]:
    if chosen is None:
        return tuple(range(1, len(all_classes)))
    out = []
    for c in chosen:
        if c not in all_classes:
            raise StoreError(
                f"group {name!r} has no class {c!r} (classes: {', '.join(all_classes)}); give --class with one of those"
            )
        out.append(all_classes.index(c))
    return tuple(sorted(set(out)))


def _component_polygons(mask: Any, classes: tuple[int, ...], step: int) -> tuple[list[int], list[int], list[Any], list[int]]:
    """Components of ``classes`` in ``mask``, joined across strips: ``(ids, class ids, polygons, pixels)``."""
    from geoseg.core.instances import BlockComponents, block_components, join_blocks, label_mask  # noqa: PLC0415

    width = int(mask.shape[1])
    comps: list[BlockComponents] = []
    for y0, _, strip in _strips(mask, step):
        labels, cls = label_mask(strip, classes)
        comps.append(block_components(labels, cls, (y0, 0), width, None))
    luts, obj = join_blocks(comps)

    def relabelled() -> Iterator[tuple[int, np.ndarray]]:
        for (y0, _, strip), lut in zip(_strips(mask, step), luts, strict=True):
            labels, _ = label_mask(strip, classes)
            yield y0, lut[labels]

    polys = _trace(relabelled())
    ids = [int(i) for i in obj.instance_id]
    return ids, [int(c) for c in obj.class_id], [polys[i] for i in ids], [int(p) for p in obj.pixels]


def _centre_lines(mask: Any, classes: tuple[int, ...], step: int, halo: int) -> tuple[list[int], list[Any]]:
    """Networks of the skeleton of ``classes``: ``(ids, MultiLineStrings)`` in pixel coordinates."""
    import shapely  # noqa: PLC0415
    from skimage.morphology import skeletonize  # noqa: PLC0415

    from geoseg.core.lines import network_ids, skeleton_segments  # noqa: PLC0415

    width = int(mask.shape[1])
    parts: list[np.ndarray] = []
    above: np.ndarray | None = None
    for y0, top, rows in _strips(mask, step, halo):
        skel = skeletonize(np.isin(rows, classes))[top : top + min(step, rows.shape[0] - top)]
        parts.append(skeleton_segments(skel, y0, above))
        above = skel[-1]
    seg = np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)
    net, n = network_ids(seg, width)
    centres = seg.astype(np.float64) + 0.5  # pixel centres: (row + 0.5, column + 0.5)
    coords = np.stack([centres[:, [1, 0]], centres[:, [3, 2]]], axis=1)  # (k, 2 points, x y)
    order = np.argsort(net, kind="stable")
    bounds = np.searchsorted(net[order], np.arange(n + 1))
    lines = []
    for i in range(n):
        pieces = shapely.linestrings(coords[order[bounds[i] : bounds[i + 1]]])
        merged = shapely.line_merge(shapely.multilinestrings(pieces))
        lines.append(merged if merged.geom_type == "MultiLineString" else shapely.multilinestrings([merged]))
    return list(range(1, n + 1)), lines


def _simplify_tolerance(simplify_m: float, crs: Any, name: str) -> float:
    """``simplify_m`` metres in the CRS's units (degrees: metres / 111 320, a degree of latitude)."""
    if isinstance(simplify_m, bool) or not isinstance(simplify_m, int | float) or not math.isfinite(simplify_m) or simplify_m < 0:
        raise StoreError(f"--simplify {simplify_m!r} is not a distance in metres >= 0; give e.g. --simplify 10")
    if simplify_m == 0:
        return 0.0
    if crs is None:
        raise StoreError(f"group {name!r} has no CRS, so --simplify in metres has no meaning there; leave --simplify out")
    if crs.is_geographic:
        return simplify_m / _METRES_PER_DEGREE
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    return simplify_m / unit


def _measures(geoms: Sequence[Any], crs: Any, lines: bool) -> tuple[np.ndarray, bool]:
    """Per geometry, its area in m² or length in m (geodesic in a geographic CRS), NaN without a CRS."""
    if crs is None:
        return np.full(len(geoms), np.nan), False
    if crs.is_geographic:
        geod = crs.get_geod()
        if lines:
            return np.array([geod.geometry_length(g) for g in geoms], np.float64), True
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms], np.float64), True
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    if lines:
        return np.array([g.length * unit for g in geoms], np.float64), False
    return np.array([g.area * unit * unit for g in geoms], np.float64), False


def vector_frame(
    store: StoreLike,
    name: str,
    geometry: VectorGeometry = "polygons",
    classes: Sequence[str] | None = None,
    simplify_m: float = 0.0,
) -> tuple[Any, VectorTotals]:
    """The vectors of scene ``name`` as a ``geopandas.GeoDataFrame`` in the scene's CRS, and its totals.

    ``polygons``: one row per connected part of ``classes`` (default: every class but the
    first), holes kept, with ``id``, ``class``, ``pixels``, ``area_m2``; with instances and no
    ``classes``, the ``objects`` table's rows (:func:`object_frame`) with ``area_m2``.
    ``lines``: one row per connected centre-line network (a MultiLineString) with ``id``,
    ``class``, ``length_m``. ``simplify_m`` > 0 simplifies each geometry with that tolerance in
    metres (topology kept; in a geographic CRS metres / 111 320 degrees); the measures are of
    the written geometries, geodesic where the CRS is geographic.

    Raises:
        StoreError: no such complete scene, a class it does not have, a geometry other than
            polygons or lines, a bad ``simplify_m``.
    """
    import geopandas as gpd  # noqa: PLC0415
    import shapely  # noqa: PLC0415
    from pyproj import CRS  # noqa: PLC0415

    if geometry not in get_args(VectorGeometry):
        raise StoreError(
            f"geometry {geometry!r} is not one of {', '.join(get_args(VectorGeometry))}: "
            "use polygons for areas (water), lines for centre lines (roads)"
        )
    g, attrs, meta = finished_group(store, name, "raster")
    wkt = attrs.get("proj:wkt2") or None
    crs = CRS.from_wkt(wkt) if wkt else None
    tolerance = _simplify_tolerance(simplify_m, crs, name)
    all_classes = list((meta.get("model") or {}).get("classes", []))
    chosen = _class_indices(name, all_classes, classes)
    mask = zarr_array(g, "mask")
    step = int(mask.chunks[0])
    lines = geometry == "lines"
    if lines:
        ids, geoms = _centre_lines(mask, chosen, step, ROAD_HALO_PX)
        data: dict[str, Any] = {"id": ids, "class": ["/".join(all_classes[c] for c in chosen)] * len(ids)}
    elif classes is None and "instance_id" in g:
        frame = object_frame(store, name)
        data = {k: frame[k].to_numpy() for k in frame.columns if k != "geometry"}
        geoms = list(frame.geometry)
    else:
        ids, cls, polys, pixels = _component_polygons(mask, chosen, step)
        geoms = _to_world(polys, attrs["spatial:transform"])
        data = {"id": ids, "class": [all_classes[c] for c in cls], "pixels": pixels}
    if lines:
        geoms = _to_world(geoms, attrs["spatial:transform"])
    if tolerance > 0:
        geoms = [shapely.simplify(x, tolerance, preserve_topology=True) for x in geoms]
    measure, geodesic = _measures(geoms, crs, lines)
    data["length_m" if lines else "area_m2"] = measure
    frame = gpd.GeoDataFrame(data, geometry=geoms, crs=wkt)
    total = float(measure.sum()) / 1e6 if crs is not None else float("nan")
    totals = VectorTotals(
        scene=name, geometry=geometry, classes=tuple(all_classes[c] for c in chosen), features=len(geoms),
        area_km2=None if lines else total, length_km=total * 1e3 if lines else None, geodesic=geodesic,
        simplify_m=float(simplify_m),
    )  # fmt: skip
    return frame, totals


def export_vectors(
    store: StoreLike,
    name: str,
    out: str | os.PathLike[str],
    fmt: VectorFormat,
    geometry: VectorGeometry = "polygons",
    classes: Sequence[str] | None = None,
    simplify_m: float = 0.0,
) -> VectorTotals:
    """Write the vectors of scene ``name`` (:func:`vector_frame`) to ``out``, with its totals.

    ``gpkg``: a GeoPackage in the scene's CRS, the features in a layer named by the classes
    (``objects`` for instances) and the totals in a ``totals`` table; ``geoparquet``: GeoParquet
    1.x in the scene's CRS, the totals in its ``geoseg:totals`` metadata; ``geojson``: RFC 7946
    GeoJSON, reprojected to EPSG:4326 as the RFC requires; ``csv``: the rows without geometry.

    Raises:
        StoreError: see :func:`vector_frame`, or ``out`` cannot be written.
    """
    frame, totals = vector_frame(store, name, geometry, classes, simplify_m)
    if fmt == "geojson" and frame.crs is None:
        raise StoreError(
            f"group {name!r} has no CRS, and GeoJSON coordinates are EPSG:4326 (RFC 7946); "
            "export --format gpkg or geoparquet, whose coordinates may be pixels"
        )
    layer = "objects" if "instance_id" in frame.columns else "_".join(totals.classes) or "features"
    with output_file(out, fmt) as target:
        try:
            _write(frame, totals, target, fmt, layer)
        except (ValueError, RuntimeError, OSError) as e:
            raise StoreError(f"{out}: cannot write the {fmt} ({e}); check the folder and free space") from None
    return totals


def _write(frame: Any, totals: VectorTotals, target: Path, fmt: str, layer: str) -> None:
    if fmt == "geoparquet":
        import pyarrow.parquet as pq  # noqa: PLC0415

        frame.to_parquet(target)
        table = pq.read_table(target)
        meta = {**(table.schema.metadata or {}), b"geoseg:totals": json.dumps(totals.to_dict()).encode()}
        pq.write_table(table.replace_schema_metadata(meta), target)
    elif fmt == "geojson":
        frame = frame.to_crs(4326)  # a frame without a CRS was refused before
        target.unlink(missing_ok=True)  # GDAL's GeoJSON driver does not write over a file
        frame.to_file(target, driver="GeoJSON", engine="pyogrio", layer=layer)
    elif fmt == "gpkg":
        import pandas as pd  # noqa: PLC0415
        import pyogrio  # noqa: PLC0415

        target.unlink(missing_ok=True)
        frame.to_file(target, driver="GPKG", engine="pyogrio", layer=layer)
        row = {k: (",".join(v) if isinstance(v, list) else v) for k, v in totals.to_dict().items()}
        pyogrio.write_dataframe(pd.DataFrame([row]), target, layer="totals", driver="GPKG", append=True)
    else:
        frame.drop(columns="geometry").to_csv(target, index=False)


def export_objects(store: StoreLike, name: str, out: str | os.PathLike[str], fmt: VectorFormat) -> Path | str:
    """Write the polygons of scene ``name`` (its objects where it has instances) to ``out``;
    returns where they went (a path, or the URL of an object store)."""
    export_vectors(store, name, out, fmt)
    return written(out)

