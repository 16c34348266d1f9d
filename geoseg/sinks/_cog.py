"""Export a finished scene group to a Cloud-Optimised GeoTIFF, window by window."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.rpc import RPC
from rasterio.windows import Window as RioWindow

from geoseg.errors import StoreError

from ._export import finished_group, output_file, written
from ._store import StoreLike
from ._zarr import INSTANCE_FILL, MASK_FILL
from ._zarr import array as zarr_array

__all__ = ["export_cog", "overview_resampling"]

_LABEL_ARRAYS = frozenset({"mask", "lesion_id", "instance_id"})


_NODATA: dict[str, float] = {"mask": MASK_FILL, "instance_id": INSTANCE_FILL, "lesion_id": 0}


def overview_resampling(array: str) -> str:
    """GDAL's overview resampling for an array: ``MODE`` for labels and ids (each overview pixel
    is the most common value it covers, so only labels present appear, never an average of two
    classes), ``AVERAGE`` for probabilities."""
    return "MODE" if array in _LABEL_ARRAYS else "AVERAGE"


def _georeferencing(attrs: dict[str, Any]) -> dict[str, Any]:
    """rasterio profile entries for the group's georeferencing: CRS and transform, or the
    ground control points or RPCs the input carried instead."""
    out: dict[str, Any] = {"transform": Affine(*attrs["spatial:transform"])}
    wkt = attrs.get("proj:wkt2")
    out["crs"] = CRS.from_wkt(wkt) if wkt else None
    return out


def export_cog(store: StoreLike, name: str, out: str | os.PathLike[str], array: str = "mask") -> Path | str:
    """Write ``<store>/<name>/<array>`` (``mask`` or ``probs``) as a COG on exactly the scene's grid.

    Reads one Zarr chunk row at a time, so memory stays bounded whatever the scene size.
    Overviews of labels use the most common value (:func:`overview_resampling`); ground control
    points or RPCs of an input without an affine transform are written with the mask.

    Raises:
        StoreError: no such complete scene or array, or the file cannot be written.
    """
    g, attrs, meta = finished_group(store, name, "raster")
    arr = zarr_array(g, array)
    bands = 1 if arr.ndim == 2 else int(arr.shape[0])
    h, w = (int(v) for v in arr.shape[-2:])
    step = int(arr.chunks[-2])
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": bands,
        "dtype": str(arr.dtype),
        **_georeferencing(attrs),
        "nodata": _NODATA.get(array, float("nan")),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    gcps = attrs.get("gcps")
    rpcs = attrs.get("rpcs")
    with output_file(out, "GeoTIFF") as target:
        staging = target.with_name(target.name + ".staging.tif")
        try:
            with rasterio.open(staging, "w", **profile) as dst:
                for y0 in range(0, h, step):
                    y1 = min(y0 + step, h)
                    data = np.asarray(arr[..., y0:y1, :])
                    dst.write(data.reshape(bands, y1 - y0, w), window=RioWindow(0, y0, w, y1 - y0))
                if gcps:
                    points = [GroundControlPoint(**p) for p in gcps["points"]]
                    dst.gcps = (points, CRS.from_wkt(gcps["crs_wkt"]) if gcps.get("crs_wkt") else None)
                if rpcs:
                    dst.rpcs = RPC(**rpcs)
                if array == "mask":
                    classes = (meta.get("model") or {}).get("classes", [])
                    dst.update_tags(1, **{f"class_{i}": c for i, c in enumerate(classes)})
                dst.update_tags(geoseg_source=str(meta.get("source", "")), geoseg_array=array)
            rasterio.shutil.copy(
                staging, target, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER",
                RESAMPLING=overview_resampling(array),
            )  # fmt: skip
        except rasterio.errors.RasterioError as e:
            raise StoreError(f"{out}: cannot write the GeoTIFF ({e}); check the folder is writable") from None
        finally:
            staging.unlink(missing_ok=True)
    return written(out)
