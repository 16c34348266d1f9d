"""Vector labels on an image's grid: read (GeoJSON, GeoPackage, GeoParquet; any CRS), reproject
to the image's CRS, drop what lies outside the image (counted), and rasterise on its pixel grid.

Shared by semantic training (polygons and buffered lines burnt into a class raster) and
instance training (one polygon per object). Reading and reprojection are geopandas / pyogrio
(which call PROJ); rasterisation is :func:`rasterio.features.rasterize` with the image's
affine transform, so a label pixel means what an inference pixel means.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine

from geoseg.errors import InputError, SourceError, first_line

if TYPE_CHECKING:  # geopandas is imported when labels are read, not with geoseg.train
    import geopandas as gpd

__all__ = ["VectorLabels", "read_vector_labels", "rasterise_labels"]

log = logging.getLogger("geoseg.train")

_KINDS = {"polygon": ("Polygon", "MultiPolygon"), "line": ("LineString", "MultiLineString")}


@dataclass(frozen=True)
class VectorLabels:
    """Label geometries in the image's CRS, only those that touch the image.

    Attributes:
        frame: a GeoDataFrame in the image's CRS, its index reset (row ``i`` is object ``i``).
        dropped_outside: geometries that lie wholly outside the image's bounds.
        dropped_empty: empty or null geometries.
    """

    frame: gpd.GeoDataFrame
    dropped_outside: int
    dropped_empty: int


def read_vector_labels(
    path: Path,
    crs: object,
    transform: Affine,
    shape: tuple[int, int],
    kind: str | Iterable[str] = ("polygon", "line"),
) -> VectorLabels:
    """Read ``path`` and put its geometries on the image grid's CRS, dropping those outside it.

    Args:
        path: a vector file geopandas reads (GeoJSON, GeoPackage's first layer, GeoParquet).
        crs: the image's CRS (anything pyproj accepts, e.g. a rasterio ``CRS``).
        transform: the image's affine transform, pixel (col, row) -> (x, y).
        shape: the image's (height, width) in pixels.
        kind: geometry kinds the task takes: ``"polygon"`` and/or ``"line"``.

    Returns:
        :class:`VectorLabels`; the counts of dropped geometries are also logged.

    Raises:
        SourceError: the file is missing or not a vector file.
        InputError: it has no CRS, holds geometries of another kind than ``kind``, or none of
            its geometries touches the image.
    """
    import geopandas as gpd  # noqa: PLC0415  (a slow import, needed only here)
    from shapely.geometry import box  # noqa: PLC0415

    if not path.is_file():
        raise SourceError(f"labels {path}: no such file; give a GeoJSON, GeoPackage or GeoParquet file")
    try:
        frame = gpd.read_parquet(path) if path.suffix.lower() == ".parquet" else gpd.read_file(path)
    except Exception as e:  # pyogrio/arrow raise their own types for any malformed file
        raise SourceError(
            f"labels {path}: not a vector file ({first_line(e, path)}); give GeoJSON, GeoPackage or GeoParquet"
        ) from None
    if frame.crs is None:
        raise InputError(f"labels {path}: the file has no CRS; write it with one (e.g. EPSG:4326 for GeoJSON)")
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    allowed = {t for k in kinds for t in _KINDS[k]}
    empty = frame.geometry.isna() | frame.geometry.is_empty
    frame = frame[~empty]
    wrong = sorted(set(frame.geom_type) - allowed)
    if wrong:
        raise InputError(
            f"labels {path}: holds {', '.join(wrong)} geometries, this task takes {' or '.join(kinds)}s; "
            "give labels of that kind"
        )
    frame = frame.to_crs(crs)
    h, w = shape
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (w, h)
    bounds = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    inside = frame.geometry.intersects(bounds).to_numpy()
    frame = frame[inside].reset_index(drop=True)
    labels = VectorLabels(frame, int((~inside).sum()), int(empty.sum()))
    if labels.dropped_outside or labels.dropped_empty:
        log.warning(
            "labels %s: %d geometries outside the image and %d empty ones dropped; %d kept",
            path, labels.dropped_outside, labels.dropped_empty, len(frame),
        )
    if not len(frame):
        raise InputError(
            f"labels {path}: none of its {labels.dropped_outside} geometries touches the image; "
            "check that the labels and the image cover the same place"
        )
    return labels


def rasterise_labels(
    geometries: Iterable[object],
    values: Iterable[int],
    transform: Affine,
    shape: tuple[int, int],
    buffer: float = 0.0,
    dtype: str = "uint8",
) -> np.ndarray:
    """Burn geometries (in the image's CRS) into a (height, width) raster of ``values``.

    A pixel is burnt when its centre lies inside a geometry (GDAL's default rule, as
    :func:`rasterio.features.rasterize`); later geometries overwrite earlier ones. Lines are
    first buffered by ``buffer`` CRS units (metres in a projected CRS) each side.

    Returns:
        (height, width) array of ``dtype``; 0 where no geometry lies.
    """
    from rasterio.features import rasterize  # noqa: PLC0415

    shapes = [
        (g.buffer(buffer) if buffer > 0 else g, int(v))  # type: ignore[attr-defined]
        for g, v in zip(geometries, values, strict=True)
    ]
    if not shapes:
        return np.zeros(shape, dtype)
    return rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype=dtype)
