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


def _complete_group(store: Path, name: str, mask: np.ndarray, classes: tuple[str, ...], **layout: object) -> None:
    """A complete scene group holding ``mask``, as a run leaves it (for export tests)."""
    from geoseg.sinks import SceneLayout, complete_group, prepare_group, write_block

    h, w = mask.shape
    lay = SceneLayout(name, (h, w), 448, classes, layout.pop("crs_wkt", ""), layout.pop("transform", (1.0, 0, 0, 0, -1.0, h)), **layout)  # type: ignore[arg-type]
    prepare_group(store, lay, "fp", {"model": {"classes": list(classes)}})
    write_block(store, name, (0, 0, h, w), {"mask": mask})
    complete_group(store, name, {})


def test_cog_overviews_of_labels_hold_only_labels_present(tmp_path: Path) -> None:
    """Columns of class 0 and 3 (of 4): GDAL's default averaging would invent classes 1 and 2 in
    the overviews; mode keeps each overview pixel one of the classes it covers."""
    mask = np.zeros((1024, 1024), np.uint8)
    mask[:, 1::2] = 3
    mask[:, 512:] = np.where(np.arange(512) % 4 < 2, 0, 3)[None, :]
    _complete_group(tmp_path / "o.zarr", "s", mask, ("a", "b", "c", "d"), crs_wkt=CRS.from_epsg(32633).to_wkt(),
                    transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 6000000.0))  # fmt: skip
    cog = export_cog(tmp_path / "o.zarr", "s", tmp_path / "s.tif")
    with rasterio.open(cog) as src:
        assert src.overviews(1), "a 1024 px COG has overviews"
        np.testing.assert_array_equal(src.read(1), mask)
        for f in src.overviews(1):
            ov = src.read(1, out_shape=(1024 // f, 1024 // f))
            assert set(np.unique(ov).tolist()) <= {0, 3}, f"overview 1/{f} invents classes {sorted(set(np.unique(ov).tolist()) - {0, 3})}"


def test_gcp_georeferenced_input_keeps_its_gcps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A scene georeferenced by ground control points only (as Sentinel-1 GRD) is not written with an
    identity transform and no CRS silently: the GCPs go into the group and the COG, and the run says so."""
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS as RioCRS

    from geoseg.cli import main

    data = water_scene((200, 300), seed=3)
    path = tmp_path / "s1.tif"
    gcps = [GroundControlPoint(row=r, col=c, x=16.0 + c * 1e-4, y=48.0 - r * 1e-4, z=0.0) for r in (0, 199) for c in (0, 299)]
    with rasterio.open(path, "w", driver="GTiff", height=200, width=300, count=4, dtype="uint16") as dst:
        dst.write(data)
        dst.descriptions = ("B02", "B03", "B04", "B08")
        dst.gcps = (gcps, RioCRS.from_epsg(4326))
    out = tmp_path / "o.zarr"
    assert main(["run", "-i", str(path), "-m", "ndwi", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "4 ground control points" in err and "warp it first" in err
    import zarr

    attrs = zarr.open_group(str(out), path="s1", mode="r").attrs.asdict()
    assert len(attrs["gcps"]["points"]) == 4 and "4326" in attrs["gcps"]["crs_wkt"]
    cog = export_cog(out, "s1", tmp_path / "s1.cog.tif")
    with rasterio.open(cog) as src:
        got, crs = src.gcps
        assert len(got) == 4 and crs.to_epsg() == 4326
        assert {(g.row, g.col) for g in got} == {(g.row, g.col) for g in gcps}
