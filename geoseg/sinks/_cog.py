"""Export a finished scene group to a Cloud-Optimised GeoTIFF, window by window."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window as RioWindow

from geoseg.errors import StoreError
from geoseg.sinks._zarr import MASK_FILL, open_group

__all__ = ["export_cog"]


def export_cog(store: str | os.PathLike[str], name: str, out: str | os.PathLike[str], array: str = "mask") -> Path:
    """Write ``<store>/<name>/<array>`` (``mask`` or ``probs``) as a COG with the same grid.

    Reads one Zarr chunk row at a time, so memory stays bounded whatever the scene size.
    """
    g = open_group(store, name)
    meta = g.attrs.get("geoseg", {})
    if meta.get("status") != "complete":
        raise StoreError(f"{store}: group {name!r} is not complete (status {meta.get('status')!r}); rerun the job first")
    if array not in g:
        raise StoreError(f"{store}: group {name!r} has no array {array!r} (has {sorted(g.array_keys())})")
    if "spatial:transform" not in g.attrs:
        raise StoreError(f"{store}: group {name!r} is an MRI case, not a raster scene; export it with --format nifti")
    arr = g[array]
    transform = Affine(*g.attrs["spatial:transform"])
    wkt = g.attrs.get("proj:wkt2")
    crs = CRS.from_wkt(wkt) if wkt else None
    bands = 1 if arr.ndim == 2 else arr.shape[0]
    h, w = arr.shape[-2:]
    step = arr.chunks[-2]
    out = Path(out)
    if not out.parent.is_dir():
        raise StoreError(f"{out}: folder {out.parent} does not exist; create it or choose another --out")
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "count": bands,
        "dtype": str(arr.dtype),
        "crs": crs,
        "transform": transform,
        "nodata": MASK_FILL if array == "mask" else float("nan"),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    try:
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            staging = Path(tmp) / "staging.tif"
            with rasterio.open(staging, "w", **profile) as dst:
                for y0 in range(0, h, step):
                    y1 = min(y0 + step, h)
                    data = np.asarray(arr[..., y0:y1, :])
                    dst.write(data.reshape(bands, y1 - y0, w), window=RioWindow(0, y0, w, y1 - y0))
                if array == "mask":
                    classes = meta.get("model", {}).get("classes", [])
                    dst.update_tags(1, **{f"class_{i}": c for i, c in enumerate(classes)})
                    dst.update_tags(geoseg_source=str(meta.get("source", "")))
            rasterio.shutil.copy(staging, out, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")
    except rasterio.errors.RasterioError as e:
        raise StoreError(f"{out}: cannot write the GeoTIFF ({e}); check the folder exists and is writable") from None
    return out
