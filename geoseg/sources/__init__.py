"""Image sources: open once for metadata on the driver, read windows (or cases) in tasks."""

from geoseg.sources._geotiff import SUPPORTED_DTYPES, RasterInfo, open_raster, read_window
from geoseg.sources._nifti import DEFAULT_PATTERNS, CaseInfo, load_case, open_case

__all__ = [
    "RasterInfo",
    "open_raster",
    "read_window",
    "SUPPORTED_DTYPES",
    "CaseInfo",
    "open_case",
    "load_case",
    "DEFAULT_PATTERNS",
]
