"""Real imagery from ../shared/data (skipped with the reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
import xarray as xr

from geoseg.pipeline import run_job
from geoseg.spec import parse_spec
from tests.conftest import shared_data

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.realdata]


def test_ndwi_recall_on_sentinel2_osm_water(tmp_path: Path) -> None:
    """OSM holds only 1-50 ha water polygons (positives only): recall is the fair score.
    Measured 0.899 on 2026-11-22 (0.965 on polygon interiors); docs/water.md reports it."""
    scene = shared_data("sentinel2_T33UUU", "S2L1C_T33UUU_20170216_10m_B02-B03-B04-B08-B11-B12.tif")
    truth_path = shared_data("sentinel2_T33UUU", "osm_water_mask_10m.tif")
    out = tmp_path / "s2.zarr"
    report = run_job(parse_spec({"inputs": [str(scene)], "output": str(out), "model": {"name": "ndwi"}, "progress": False}))
    assert report.ok, report.summary()
    mask = xr.open_zarr(out, group=scene.stem).mask.values
    with rasterio.open(truth_path) as t:
        truth = t.read(1) == 1
    valid = mask != 255
    recall = ((mask == 1) & truth & valid).sum() / (truth & valid).sum()
    assert recall > 0.85, f"NDWI recall {recall:.3f} on OSM water"
    assert 0.02 < (mask[valid] == 1).mean() < 0.3, "a mask of all water would have perfect recall"


def test_mndwi_otsu_on_sentinel2_osm_water(tmp_path: Path) -> None:
    """MNDWI with its Otsu threshold on T33UUU: measured threshold 0.1645, recall 0.812, 9.0 % of
    the valid pixels water on 2026-12-01 (docs/water.md, docs/scripts/water_recall.py)."""
    scene = shared_data("sentinel2_T33UUU", "S2L1C_T33UUU_20170216_10m_B02-B03-B04-B08-B11-B12.tif")
    truth_path = shared_data("sentinel2_T33UUU", "osm_water_mask_10m.tif")
    out = tmp_path / "s2.zarr"
    spec = {"inputs": [str(scene)], "output": str(out), "model": {"name": "mndwi", "params": {"threshold": "otsu"}},
            "progress": False}  # fmt: skip
    report = run_job(parse_spec(spec))
    assert report.ok, report.summary()
    ds = xr.open_zarr(out, group=scene.stem)
    chosen = ds.attrs["geoseg"]["threshold"]
    assert chosen["method"] == "otsu" and 0.1 < chosen["value"] < 0.25 and report.inputs[0].threshold == chosen["value"]
    mask = ds.mask.values
    with rasterio.open(truth_path) as t:
        truth = t.read(1) == 1
    valid = mask != 255
    recall = ((mask == 1) & truth & valid).sum() / (truth & valid).sum()
    assert recall > 0.75, f"MNDWI (Otsu) recall {recall:.3f} on OSM water"
    assert 0.02 < (mask[valid] == 1).mean() < 0.15


def test_landsat8_band_names_resolve_and_run(tmp_path: Path) -> None:
    scene = shared_data("landsat8", "L8_LC80200392015216LGN00_30m_B2-B7.tif")
    out = tmp_path / "l8.zarr"
    report = run_job(parse_spec({"inputs": [str(scene)], "output": str(out), "model": {"name": "ndwi"}, "progress": False}))
    assert report.ok, report.summary()
    import zarr

    g = zarr.open_group(str(out), path=scene.stem, mode="r")
    assert g.attrs["geoseg"]["bands"] == [1, 3]  # B3 green, B5 NIR (0-based)
    with rasterio.open(scene) as src:
        assert tuple(g.attrs["spatial:transform"]) == tuple(src.transform)[:6]
