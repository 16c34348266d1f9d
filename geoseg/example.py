"""Synthetic Sentinel-2-like scenes with known water, for the README example, tests and benchmarks.

The scene is drawn window by window, so a 20000x20000 scene needs no scene-sized buffer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window as RioWindow

__all__ = ["water_truth", "write_scene", "write_example"]

BANDS = ("B02", "B03", "B04", "B08")
NODATA = 0


def water_truth(y: np.ndarray, x: np.ndarray, shape_yx: tuple[int, int]) -> np.ndarray:
    """Where the synthetic scene has water: two lakes and a meandering river (bool)."""
    h, w = shape_yx
    fy, fx = y / h, x / w
    lake1 = ((fy - 0.3) / 0.12) ** 2 + ((fx - 0.25) / 0.15) ** 2 < 1
    lake2 = ((fy - 0.7) / 0.08) ** 2 + ((fx - 0.7) / 0.1) ** 2 < 1
    river = np.abs(fy - (0.5 + 0.15 * np.sin(fx * 2 * np.pi * 1.5))) < 0.012 + 0.006 * fx
    return lake1 | lake2 | river


def _pixels(y0: int, x0: int, y1: int, x1: int, shape_yx: tuple[int, int], seed: int) -> np.ndarray:
    y, x = np.mgrid[y0:y1, x0:x1]
    water = water_truth(y, x, shape_yx)
    rng = np.random.default_rng([seed, y0, x0])
    noise = rng.normal(0, 60, size=(4, y1 - y0, x1 - x0))
    land = np.array([900, 1100, 1000, 2800], np.float64)[:, None, None]
    wet = np.array([1100, 1000, 700, 400], np.float64)[:, None, None]
    px = np.where(water[None], wet, land) + noise
    px = np.clip(px, 1, 10000).astype(np.uint16)
    px[:, (x < 3) | (y < 2)] = NODATA  # a strip of nodata along two edges
    return px


def write_scene(
    path: str | os.PathLike[str],
    shape_yx: tuple[int, int] = (1536, 2048),
    crs: str = "EPSG:32633",
    pixel_m: float = 10.0,
    seed: int = 0,
    window_px: int = 1024,
) -> Path:
    """Write a 4-band uint16 tiled GeoTIFF (bands B02, B03, B04, B08; nodata 0)."""
    h, w = shape_yx
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": 4,
        "dtype": "uint16",
        "crs": CRS.from_user_input(crs),
        "transform": from_origin(399960.0, 5900040.0, pixel_m, pixel_m),
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(out, "w", **profile) as dst:
        dst.descriptions = BANDS
        for y0 in range(0, h, window_px):
            for x0 in range(0, w, window_px):
                y1, x1 = min(y0 + window_px, h), min(x0 + window_px, w)
                dst.write(_pixels(y0, x0, y1, x1, shape_yx, seed), window=RioWindow(x0, y0, x1 - x0, y1 - y0))
    return out


JOB = """\
# A ready job: water mapping of a generated Sentinel-2-like scene with the NDWI model.
# Paths are relative to this file. Every field: docs/spec.md.
inputs: [scene.tif]
output: out.zarr
model:
  name: ndwi
  params:
    threshold: 0.0   # water where (green - NIR) / (green + NIR) > threshold
block_px: 1024       # 2 x 2 Zarr chunks of 512 px: 4 blocks for this 1536 x 2048 scene
"""


def write_example(folder: str | os.PathLike[str]) -> Path:
    """Write ``scene.tif`` and ``job.yaml`` into ``folder``; returns the job spec's path."""
    d = Path(folder)
    write_scene(d / "scene.tif")
    job = d / "job.yaml"
    job.write_text(JOB)
    return job
