"""The rasterio source: metadata without pixels, exact windows, nodata / masks / NaN as invalid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError, SourceError
from geoseg.sources import open_raster, read_window
from tests.conftest import CRS_CASES, CUSTOM_WKT, write_raster


def test_window_reads_are_exact(tmp_path: Path) -> None:
    data = np.arange(3 * 70 * 100, dtype=np.int16).reshape(3, 70, 100)
    info = open_raster(write_raster(tmp_path / "a.tif", data))
    assert info.shape_yx == (70, 100) and info.count == 3 and info.dtype == "int16"
    px, valid = read_window(info, (10, 20, 50, 90), (2, 0))
    assert np.array_equal(px, data[[2, 0], 10:50, 20:90]) and valid.all()


def test_nodata_value_marks_pixels_invalid(tmp_path: Path) -> None:
    data = np.full((2, 40, 40), 7, np.uint16)
    data[0, 5, 6] = 0  # nodata in one of the chosen bands is enough
    data[1, 9, 9] = 0
    info = open_raster(write_raster(tmp_path / "n.tif", data, nodata=0))
    _, valid = read_window(info, (0, 0, 40, 40), (0,))
    assert not valid[5, 6] and valid[9, 9] and valid.sum() == 40 * 40 - 1
    _, valid = read_window(info, (0, 0, 40, 40), (0, 1))
    assert not valid[5, 6] and not valid[9, 9]


def test_internal_mask_marks_pixels_invalid(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "m.tif", np.full((1, 32, 32), 3, np.uint8))
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        mask = np.full((32, 32), 255, np.uint8)
        mask[:, :4] = 0
        dst.write_mask(mask)
    _, valid = read_window(open_raster(path), (0, 0, 32, 32), (0,))
    assert not valid[:, :4].any() and valid[:, 4:].all()


def test_float_nan_is_invalid(tmp_path: Path) -> None:
    data = np.ones((1, 20, 20), np.float32)
    data[0, 3, 3] = np.nan
    _, valid = read_window(open_raster(write_raster(tmp_path / "f.tif", data)), (0, 0, 20, 20), (0,))
    assert not valid[3, 3] and valid.sum() == 399


@pytest.mark.parametrize("case", sorted(CRS_CASES))
def test_any_crs_round_trips_as_wkt(tmp_path: Path, case: str) -> None:
    crs, transform = CRS_CASES[case]
    info = open_raster(write_raster(tmp_path / "c.tif", np.ones((1, 8, 8), np.uint8), crs=crs, transform=transform))
    assert rasterio.crs.CRS.from_wkt(info.crs_wkt) == rasterio.crs.CRS.from_user_input(crs)
    assert info.transform == tuple(transform)[:6]
    if crs == CUSTOM_WKT:
        assert rasterio.crs.CRS.from_wkt(info.crs_wkt).to_epsg() is None


def test_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        open_raster(tmp_path / "missing.tif")
    with pytest.raises(SourceError, match="is a folder"):
        open_raster(tmp_path)
    (tmp_path / "t.tif").write_text("text")
    with pytest.raises(SourceError, match=r"t\.tif: not a readable raster"):
        open_raster(tmp_path / "t.tif")
    cplx = write_raster(tmp_path / "z.tif", np.ones((1, 8, 8), np.complex64))
    with pytest.raises(InputError, match="complex64 is not supported.*gdal_translate"):
        open_raster(cplx)


def test_identity_changes_with_content(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "i.tif", np.ones((1, 16, 16), np.uint8))
    first = open_raster(path).identity
    write_raster(path, np.zeros((1, 16, 16), np.uint8))
    assert open_raster(path).identity != first
