"""Image sources: open once for metadata on the driver, read windows in tasks."""

from geoseg.sources._geotiff import SUPPORTED_DTYPES, RasterInfo, open_raster, read_window

__all__ = ["RasterInfo", "open_raster", "read_window", "SUPPORTED_DTYPES"]
