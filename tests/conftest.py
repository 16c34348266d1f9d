"""Shared fixtures: rasters made in code, one local Ray for the session, the real-data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

# The tests run on their own private Ray, whatever cluster the shell names.
os.environ.pop("RAY_ADDRESS", None)

SHARED_DATA = Path(os.environ.get("GEOSEG_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
"""../shared/data beside the repository, or $GEOSEG_SHARED_DATA (as docs/scripts read it)."""

# A CRS with no EPSG code: an oblique Mercator around a made-up centre.
CUSTOM_WKT = (
    'PROJCS["geoseg test oblique mercator",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
    '6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Hotine_Oblique_Mercator_Azimuth_Center"],PARAMETER["latitude_of_center",47.3],'
    'PARAMETER["longitude_of_center",8.1],PARAMETER["azimuth",31.4],PARAMETER["rectified_grid_angle",31.4],'
    'PARAMETER["scale_factor",0.9999],PARAMETER["false_easting",1000],PARAMETER["false_northing",2000],'
    'UNIT["metre",1]]'
)

CRS_CASES = {
    "epsg4326": ("EPSG:4326", Affine(0.0001, 0, 8.5, 0, -0.0001, 47.4)),
    "utm_south": ("EPSG:32733", Affine(10.0, 0, 300000.0, 0, -10.0, 8000000.0)),
    "polar_stereo": ("EPSG:3031", Affine(30.0, 0, -1200000.0, 0, -30.0, 900000.0)),
    "custom_wkt": (CUSTOM_WKT, Affine(2.5, 0, 1000.0, 0, -2.5, 2000.0)),
}


def shared_data(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not present: {p} (clone with ../shared beside the repo, or set GEOSEG_SHARED_DATA)")
    return p


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: str = "EPSG:32633",
    transform: Affine = Affine(10.0, 0, 500000.0, 0, -10.0, 6000000.0),
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
    tiled: bool = True,
) -> Path:
    """Write (C, Y, X) ``data`` as a GeoTIFF."""
    c, h, w = data.shape
    profile = {
        "driver": "GTiff", "height": h, "width": w, "count": c, "dtype": data.dtype.name,
        "crs": CRS.from_user_input(crs), "transform": transform, "nodata": nodata,
    }  # fmt: skip
    if tiled and h >= 16 and w >= 16:
        profile.update(tiled=True, blockxsize=16 * max(1, min(w, 256) // 16), blockysize=16 * max(1, min(h, 256) // 16))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = tuple(descriptions)
    return path


def water_scene(shape_yx: tuple[int, int], seed: int = 0, nodata: bool = False) -> np.ndarray:
    """(4, Y, X) uint16 bands B02, B03, B04, B08 with random water/land and noise (nodata 0)."""
    rng = np.random.default_rng(seed)
    h, w = shape_yx
    px = rng.integers(200, 4000, size=(4, h, w)).astype(np.uint16)
    if nodata:
        px[:, : max(1, h // 10), :] = 0
        px[:, :, -max(1, w // 7) :] = 0
        px[:, h // 2, w // 3] = 0
    return px


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One private local Ray for every test that needs it (4 logical CPUs on the 2-core machine).

    ``address="local"``: a cluster that ``ray start`` left on this machine (its address is in
    /tmp/ray/ray_current_cluster, which a bare ``ray.init()`` joins) is never used by the tests.
    """
    import ray

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()
