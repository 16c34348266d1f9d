"""Export a scene's objects (``instances: components``) as vectors: one polygon per instance id.

Polygons are traced from ``instance_id`` one chunk row at a time (``rasterio.features.shapes``,
GDAL's polygonize, 4-connected) in pixel coordinates, where the pieces of an object cut by
two strips share their edge exactly, joined per id (``shapely.union_all``), and only then put
into the scene's CRS through its affine transform. The table's columns come with them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geoseg.errors import StoreError

from ._export import finished_group, output_file, written
from ._store import StoreLike
from ._zarr import INSTANCE_FILL, read_table
from ._zarr import array as zarr_array

__all__ = ["export_objects", "object_frame", "VectorFormat"]

VectorFormat = Literal["geoparquet", "geojson", "csv"]


def _polygons(ids: Any, step: int) -> dict[int, Any]:
    """Instance id -> its polygon (shapely, pixel coordinates: x = column, y = row)."""
    import shapely  # noqa: PLC0415
    from rasterio.features import shapes  # noqa: PLC0415
    from rasterio.transform import Affine  # noqa: PLC0415
    from shapely.geometry import shape  # noqa: PLC0415

    h = int(ids.shape[0])
    parts: dict[int, list[Any]] = defaultdict(list)
    for y0 in range(0, h, step):
        strip = np.asarray(ids[y0 : min(y0 + step, h), :])
        objects = (strip > 0) & (strip != INSTANCE_FILL)
        if not objects.any():
            continue
        # GDAL polygonizes int32 at most: number the strip's ids 0..k-1 and map them back.
        present, local = np.unique(strip, return_inverse=True)
        local = local.reshape(strip.shape).astype(np.int32)
        for geom, value in shapes(local, mask=objects, connectivity=4, transform=Affine.translation(0, y0)):
            parts[int(present[int(value)])].append(shape(geom))
    return {k: shapely.union_all(v) for k, v in parts.items()}


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
    from shapely import affinity  # noqa: PLC0415

    g, attrs, meta = finished_group(store, name, "raster")
    if "instance_id" not in g:
        raise StoreError(
            f"group {name!r} has no objects: it was run without instances; rerun with --instances components "
            "(and --overwrite or a new store)"
        )
    ids = zarr_array(g, "instance_id")
    table = read_table(store, name, "objects")
    polys = _polygons(ids, int(ids.chunks[0]))
    a, b, c, d, e, f = attrs["spatial:transform"]
    geometry = [affinity.affine_transform(polys[int(i)], [a, b, d, e, c, f]) for i in table["instance_id"]]
    classes = list((meta.get("model") or {}).get("classes", []))
    data: dict[str, Any] = {k: v for k, v in table.items()}
    data["class"] = [classes[int(k)] if int(k) < len(classes) else str(int(k)) for k in table["class_id"]]
    return gpd.GeoDataFrame(data, geometry=geometry, crs=attrs.get("proj:wkt2") or None)


def export_objects(store: StoreLike, name: str, out: str | os.PathLike[str], fmt: VectorFormat) -> Path | str:
    """Write the objects of scene ``name`` to ``out``.

    ``geoparquet``: GeoParquet 1.x (``GeoDataFrame.to_parquet``), in the scene's CRS;
    ``geojson``: RFC 7946 GeoJSON, reprojected to EPSG:4326 as the RFC requires (pyogrio);
    ``csv``: the table without polygons (one row per object).

    Raises:
        StoreError: see :func:`object_frame`, or ``out`` cannot be written.
    """
    frame = object_frame(store, name)
    with output_file(out, fmt) as target:
        try:
            if fmt == "geoparquet":
                frame.to_parquet(target)
            elif fmt == "geojson":
                if frame.crs is not None:
                    frame = frame.to_crs(4326)
                target.unlink(missing_ok=True)  # GDAL's GeoJSON driver does not write over a file
                frame.to_file(target, driver="GeoJSON", engine="pyogrio")
            else:
                frame.drop(columns="geometry").to_csv(target, index=False)
        except (ValueError, RuntimeError) as e:
            raise StoreError(f"{out}: cannot write the {fmt} ({e}); check the folder and free space") from None
    return written(out)
