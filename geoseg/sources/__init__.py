"""Image sources: open once for metadata on the driver, read windows (or cases) in tasks.

The GeoTIFF half (rasterio, hence GDAL) is imported on first use, so NIfTI-only work such as
training on MRI cases never loads GDAL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geoseg.sources._nifti import DEFAULT_PATTERNS, CaseInfo, load_case, nifti_image, open_case

if TYPE_CHECKING:
    from geoseg.sources._geotiff import SUPPORTED_DTYPES, RasterInfo, open_raster, opened, read_window

_LAZY = {"SUPPORTED_DTYPES", "RasterInfo", "open_raster", "opened", "read_window"}

__all__ = [
    "DEFAULT_PATTERNS",
    "SUPPORTED_DTYPES",
    "CaseInfo",
    "RasterInfo",
    "load_case",
    "nifti_image",
    "open_case",
    "open_raster",
    "opened",
    "read_window",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module("geoseg.sources._geotiff"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
