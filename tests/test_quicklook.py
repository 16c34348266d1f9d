"""geoseg quicklook: a picture per output, the mask in its legend's colours where the mask is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from geoseg.cli import main
from geoseg.quicklook import NODATA_COLOUR, class_colours
from tests.conftest import write_raster
from tests.test_volume_pipeline import _write_case

pytestmark = pytest.mark.usefixtures("ray_local")
S2 = ["B02", "B03", "B04", "B08"]


def test_scene_quicklook_shows_the_mask_where_it_is(tmp_path: Path) -> None:
    """Red and blue bands constant (they stretch to 0), green and NIR make water on a diagonal:
    a water pixel is exactly 55 % of its class colour in red and blue, land is 0 there, nodata grey."""
    h, w = 600, 900
    y, x = np.mgrid[:h, :w]
    water = (x + y) % 200 < 90
    data = np.empty((4, h, w), np.uint16)
    data[0], data[2] = 1000, 1000  # B02 blue, B04 red
    data[1] = np.where(water, 2000, 600)  # B03 green
    data[3] = np.where(water, 400, 2500)  # B08 nir
    data[:, :40, :] = 0  # nodata strip
    src = write_raster(tmp_path / "s.tif", data, nodata=0, descriptions=S2)
    out = tmp_path / "o.zarr"
    assert main(["run", "-i", str(src), "-m", "ndwi", "-o", str(out), "--no-progress"]) == 0
    png = tmp_path / "s.png"
    assert main(["quicklook", str(out), "--name", "s", "--out", str(png), "--max-px", "300"]) == 0
    pic = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pic.shape[1] == 300 and pic.shape[0] > 200, "the longer side is --max-px, the legend below the picture"
    mask = zarr.open_group(str(out), path="s")["mask"][:]
    rows = np.minimum(((np.arange(200) + 0.5) * h / 200).astype(int), h - 1)
    cols = np.minimum(((np.arange(300) + 0.5) * w / 300).astype(int), w - 1)
    small = mask[np.ix_(rows, cols)]
    img = pic[:200, :300]
    assert (small == 1).any() and (small == 0).any() and (small == 255).any()
    assert (img[small == 255] == NODATA_COLOUR).all(), "nodata in its own colour"
    colour = class_colours(2)[1].astype(float)
    want = np.rint(0.55 * colour).astype(int)
    assert (img[small == 1][:, [0, 2]] == want[[0, 2]]).all(), "water pixels blend the class colour"
    assert (img[small == 0][:, [0, 2]] == 0).all(), "land pixels show the (black) input"


def test_case_quicklook_cuts_three_planes_through_the_largest_lesion(tmp_path: Path) -> None:
    case = _write_case(tmp_path / "c", np.diag([1.0, 1.0, 2.0, 1.0]), (60, 64, 40), seed=4)
    model = tmp_path / "m"
    model.mkdir()
    import torch

    from tests.test_volume_pipeline import _Threshold

    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(_Threshold(), (torch.zeros(2, 2, 64, 64),), dynamic_shapes=({0: batch},)), model / "t.pt2")
    (model / "t.card.yaml").write_text(
        "name: t\narchitecture: exported\nclasses: [background, bright]\nbands: [flair, t1c]\n"
        "normalisation: {kind: zscore_foreground}\npatch_px: 64\n"
    )
    out = tmp_path / "o.zarr"
    assert main(["run", "-i", str(case), "--model-file", str(model / "t.pt2"), "-o", str(out), "--no-progress"]) == 0
    png = tmp_path / "c.png"
    assert main(["quicklook", str(out), "--name", "c", "--out", str(png)]) == 0
    pic = np.asarray(Image.open(png).convert("RGB")).astype(int)
    # three panels at 2 px per voxel, side by side: sagittal (A, S) 64x40, coronal (R, S) 60x40,
    # axial (R, A) 60x64 rotated for display, then the legend below the tallest (64 voxels: 128 px)
    assert pic.shape[1] >= 2 * (64 + 60 + 60) + 8 and pic.shape[0] > 128
    g = zarr.open_group(str(out), path="c")
    mask, ids = g["mask"][:], g["lesion_id"][:]  # the affine is diagonal: file order is RAS
    sizes = np.bincount(ids.ravel())
    sizes[0] = 0
    i, j, k = np.rint(np.argwhere(ids == sizes.argmax()).mean(axis=0)).astype(int)
    in_slices = int(mask[i, :, :].sum() + mask[:, j, :].sum() + mask[:, :, k].sum())
    top = pic[:128]
    tinted = ~((top[..., 0] == top[..., 1]) & (top[..., 1] == top[..., 2]))  # the scan is grey; the mask is not
    assert in_slices > 50 and tinted.sum() == 4 * in_slices, "every mask voxel of the three slices, and nothing else"


def test_quicklook_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quicklook", str(tmp_path / "none.zarr"), "--name", "s", "--out", str(tmp_path / "x.png")]) == 2
    assert "no Zarr store there" in capsys.readouterr().err
