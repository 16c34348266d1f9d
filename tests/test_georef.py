"""Invariant 5: the output grid is the input grid, in xarray/rioxarray and in the exported COG."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from pyproj import CRS

from geoseg.pipeline import run_job
from geoseg.sinks import export_cog
from geoseg.spec import parse_spec
from tests.conftest import CRS_CASES, water_scene, write_raster

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.mark.parametrize("case", sorted(CRS_CASES))
def test_zarr_and_cog_keep_crs_and_transform_exactly(tmp_path: Path, case: str) -> None:
    import rioxarray  # noqa: F401  (registers .rio)

    crs, transform = CRS_CASES[case]
    src = write_raster(
        tmp_path / f"{case}.tif", water_scene((300, 410), seed=1, nodata=True), crs=crs, transform=transform,
        nodata=0, descriptions=["B02", "B03", "B04", "B08"],
    )  # fmt: skip
    out = tmp_path / "o.zarr"
    report = run_job(parse_spec({"inputs": [str(src)], "output": str(out), "model": {"name": "ndwi"}, "progress": False}))
    assert report.ok, report.summary()

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. "failed to open with consolidated metadata"
        ds = xr.open_zarr(out, group=case)
    with rasterio.open(src) as ref:
        assert ds.mask.shape == (ref.height, ref.width)
        assert ds.mask.rio.transform() == ref.transform
        assert CRS.from_user_input(ds.mask.rio.crs.to_wkt()).equals(CRS.from_wkt(ref.crs.to_wkt()))
        np.testing.assert_array_equal(ds.x.values, ref.xy(0, np.arange(ref.width))[0])
        np.testing.assert_array_equal(ds.y.values, ref.xy(np.arange(ref.height), 0)[1])
        assert ds.mask.dims == ("y", "x")
    if case == "custom_wkt":
        assert "proj:code" not in ds.attrs and "Oblique" in ds.attrs["proj:wkt2"].replace("_", " ").title()
    else:
        assert ds.attrs["proj:code"] == crs

    cog = export_cog(out, case, tmp_path / f"{case}.cog.tif")
    with rasterio.open(cog) as c, rasterio.open(src) as ref:
        assert c.transform == ref.transform and c.crs == ref.crs and c.nodata == 255
        assert c.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and c.profile["tiled"]
        np.testing.assert_array_equal(c.read(1), ds.mask.values)


def test_export_refuses_an_unfinished_group(tmp_path: Path) -> None:
    from geoseg.errors import StoreError
    from geoseg.sinks import SceneLayout, prepare_group

    layout = SceneLayout("s", (10, 10), 448, ("a", "b"), "", (1.0, 0.0, 0.0, 0.0, -1.0, 10.0), False)
    prepare_group(tmp_path / "o.zarr", layout, "fp", {})
    with pytest.raises(StoreError, match="not complete"):
        export_cog(tmp_path / "o.zarr", "s", tmp_path / "x.tif")
