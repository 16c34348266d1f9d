"""GeoTIFF/COG (any GDAL raster) through rasterio: metadata once, then windowed reads only."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from geoseg._remote import check_bucket, check_url, explain, filesystem, gdal_options, gdal_path, is_url
from geoseg.core.grid import Window
from geoseg.errors import InputError, SourceError, first_line
from geoseg.sources._identity import content_identity, relative_hint

__all__ = ["RasterInfo", "open_raster", "opened", "read_window", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = frozenset(
    {"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32", "float64"}
)


@dataclass(frozen=True)
class RasterInfo:
    """What geoseg knows of a raster after opening it once: plain values, cheap to ship to tasks.

    ``transform`` is the affine in rasterio order ``(a, b, c, d, e, f)``; ``crs_wkt`` is empty
    for a raster without a CRS.
    """

    path: str
    shape_yx: tuple[int, int]
    count: int
    dtype: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    descriptions: tuple[str | None, ...]
    identity: str
    gcps: tuple[dict[str, Any], ...] = ()  # ground control points, where the file has no transform
    gcps_crs_wkt: str = ""
    rpcs: dict[str, Any] | None = None  # rational polynomial coefficients (rasterio's RPC.to_dict())

    @property
    def stem(self) -> str:
        name = Path(self.path).name
        for suffix in (".tiff", ".tif", ".TIF", ".TIFF", ".vrt", ".jp2", ".img"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return Path(self.path).stem


@contextmanager
def opened(path: str) -> Iterator[Any]:
    """``rasterio.open`` of a local path, or of an object URL through GDAL's ``/vsis3/``-style
    file systems configured from the environment (:mod:`geoseg._remote`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        if is_url(path):
            with rasterio.Env(**gdal_options(path)), rasterio.open(gdal_path(path)) as src:
                yield src
        else:
            with rasterio.open(path) as src:
                yield src


def _check_object(url: str) -> None:
    """Raise one line where the object ``url`` cannot be read: no such bucket or object,
    missing or rejected credentials, an unreachable endpoint, its library not installed."""
    check_url(url, SourceError, "input")
    fs = filesystem(url)
    try:
        fs.info(url)
    except FileNotFoundError:
        check_bucket(url, SourceError, "input")
        raise SourceError(f"{url}: no such object; check the URL") from None
    except Exception as e:  # noqa: BLE001  (botocore, aiohttp, gcsfs each raise their own kinds)
        raise SourceError(explain(url, e)) from None


def _identity(p: Path | str) -> str:
    try:
        return content_identity([p])
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001  (an object store's library raises its own kinds)
        raise SourceError(explain(str(p), e)) from None


def open_raster(path: str | os.PathLike[str]) -> RasterInfo:
    """Open ``path`` (a file or an object URL, e.g. ``s3://bucket/scene.tif``) for its
    metadata and check geoseg can read it; reads no pixels.

    Raises:
        SourceError: missing, unreadable or not a raster; for a URL also an unreachable
            endpoint, missing credentials or bucket.
        InputError: empty, or of a dtype geoseg does not handle (complex).
    """
    remote = is_url(os.fspath(path))
    p: Path | str = os.fspath(path) if remote else Path(path)
    if isinstance(p, str):
        _check_object(p)
    elif not p.exists():
        raise SourceError(f"{p}: no such file; check the path{relative_hint(p)}")
    elif p.is_dir():
        raise SourceError(f"{p}: is a folder, not a raster; give a GeoTIFF file")
    try:
        with opened(str(p)) as src:
            gcps, gcp_crs = src.gcps
            info = RasterInfo(
                path=p if isinstance(p, str) else str(p.resolve()),
                shape_yx=(src.height, src.width),
                count=src.count,
                dtype=src.dtypes[0] if src.count else "",
                crs_wkt=src.crs.to_wkt() if src.crs else "",
                transform=tuple(src.transform)[:6],  # type: ignore[arg-type]
                nodata=src.nodata,
                descriptions=tuple(src.descriptions),
                identity=_identity(p),
                gcps=tuple(
                    {"row": g.row, "col": g.col, "x": g.x, "y": g.y, "z": g.z, "id": g.id, "info": g.info} for g in gcps
                ),
                gcps_crs_wkt=gcp_crs.to_wkt() if gcp_crs else "",
                rpcs=src.rpcs.to_dict() if src.rpcs else None,
            )
    except RasterioError as e:
        why = first_line(e, gdal_path(p) if isinstance(p, str) else p)
        raise SourceError(f"{p}: not a readable raster ({why}); give a GeoTIFF/COG") from None
    except OSError as e:
        if isinstance(p, str):
            raise SourceError(explain(p, e)) from None
        raise SourceError(f"{p}: cannot read it ({e.strerror or e}); check permissions") from None
    if info.count == 0 or min(info.shape_yx) == 0:
        if str(p).rstrip("/").lower().endswith(".zarr"):
            raise InputError(
                f"{p}: is a Zarr store (geoseg's output?), not an input scene; inputs are GeoTIFF/COG files or NIfTI cases "
                "(export a store's mask with geoseg export)"
            )
        raise InputError(f"{p}: raster is empty ({info.count} bands, {info.shape_yx[0]}x{info.shape_yx[1]} px)")
    if info.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"{p}: pixel type {info.dtype} is not supported; convert to a real type, "
            f"e.g. gdal_translate -ot Float32"
        )
    return info


def read_window(info: RasterInfo, window: Window, bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``bands`` (0-based) of ``window`` and where every one of them holds data.

    Returns:
        ``(pixels, valid)``: (C, h, w) in the file's dtype and (h, w) bool, False where any
        chosen band is nodata or masked (GDAL's per-band or dataset mask).
    """
    y0, x0, y1, x1 = window
    rio_window = RioWindow(x0, y0, x1 - x0, y1 - y0)  # type: ignore[call-arg]
    indexes = [b + 1 for b in bands]
    try:
        with opened(info.path) as src:
            pixels = src.read(indexes, window=rio_window)
            masks = src.read_masks(indexes, window=rio_window)
    except RasterioError as e:
        where = gdal_path(info.path) if is_url(info.path) else info.path
        raise SourceError(f"{info.path}: read of window {window} failed ({first_line(e, where)})") from None
    valid = np.all(masks > 0, axis=0)
    if np.issubdtype(pixels.dtype, np.floating):
        valid &= np.all(np.isfinite(pixels), axis=0)
    return pixels, valid
