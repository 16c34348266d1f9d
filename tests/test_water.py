"""MNDWI and the per-scene Otsu threshold: the histogram arithmetic against skimage, and the
threshold identical for 1 and 3 workers and two block sizes, applied as the mask says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from geoseg.core.water import (
    INDEX_BINS,
    bin_centres,
    index_histogram,
    normalised_difference,
    otsu_threshold,
    scaled_for_threshold,
)
from geoseg.errors import GeosegError, ModelError
from geoseg.models import MNDWI, ModelSpec, load_model

S2 = ["B02", "B03", "B04", "B08", "B11", "B12"]


def test_otsu_equals_skimage_on_the_same_histogram() -> None:
    skimage_filters = pytest.importorskip("skimage.filters")
    for seed in range(12):
        rng = np.random.default_rng(seed)
        v = np.concatenate([rng.normal(-0.3, 0.1, 5000), rng.normal(0.2 + 0.03 * seed, 0.15, 700)])
        counts = index_histogram(v)
        assert counts.sum() == v.size and counts.dtype == np.int64 and len(counts) == INDEX_BINS
        assert otsu_threshold(counts) == skimage_filters.threshold_otsu(hist=(counts, bin_centres()))


def test_histogram_of_blocks_sums_to_the_histogram_of_the_scene() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4000, (2, 90, 70))
    valid = rng.random((90, 70)) > 0.1
    index = normalised_difference(a, b)
    whole = index_histogram(index, valid)
    parts = sum(index_histogram(index[y : y + 32, x : x + 25], valid[y : y + 32, x : x + 25])
                for y in range(0, 90, 32) for x in range(0, 70, 25))  # fmt: skip
    np.testing.assert_array_equal(whole, parts)
    with pytest.raises(ValueError, match="empty"):
        otsu_threshold(np.zeros(8, np.int64))


def test_scaled_bands_threshold_the_index_at_zero() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.integers(1, 4000, (2, 200, 200)).astype(np.float32)
    for t in (-0.37, 0.0, 0.1234, 0.6):
        sa, sb = scaled_for_threshold(a, b, t)
        moved = normalised_difference(sa, sb) > 0
        direct = normalised_difference(a, b) > np.float32(t)
        assert (moved != direct).sum() <= 2, "equal up to float32 rounding at the threshold"
    with pytest.raises(ValueError, match="outside"):
        scaled_for_threshold(a, b, 1.0)


def test_mndwi_model_is_green_vs_swir1() -> None:
    model, card = load_model(ModelSpec(name="mndwi", params={"threshold": 0.1}))
    assert isinstance(model, MNDWI) and card.bands == ("green", "swir1") and model.threshold == 0.1
    rng = np.random.default_rng(3)
    g, s = rng.integers(0, 3000, (2, 2, 8, 8)).astype(np.float32)
    out = model(torch.from_numpy(np.stack([g, s], axis=1))).argmax(dim=1).numpy()
    np.testing.assert_array_equal(out, normalised_difference(g, s) > np.float32(0.1))
    otsu, card = load_model(ModelSpec(name="mndwi", params={"threshold": "otsu"}))
    assert otsu.threshold == 0.0 and card.params["threshold"] == "otsu"
    with pytest.raises(ModelError, match=r"model.params.threshold .*'abc' is not a number"):
        load_model(ModelSpec(name="mndwi", params={"threshold": "abc"}))


# -- in the pipeline ------------------------------------------------------------------------------


def _lake_scene(shape_yx: tuple[int, int], seed: int) -> np.ndarray:
    """(6, Y, X) uint16 Sentinel-2-like bands: land, lakes where green > swir1, nodata rows."""
    rng = np.random.default_rng(seed)
    h, w = shape_yx
    px = rng.integers(800, 2500, size=(6, h, w)).astype(np.uint16)
    yy, xx = np.mgrid[:h, :w]
    water = np.zeros((h, w), bool)
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 60)
        water |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    px[1][water] = rng.integers(1500, 2500, int(water.sum()))  # green
    px[4][water] = rng.integers(100, 600, int(water.sum()))  # swir1
    px[:, :5, :] = 0  # nodata
    return px


def _run(scene: Path, out: Path, **kw: object) -> Any:
    from geoseg.pipeline import run_job
    from geoseg.spec import parse_spec

    data = {"inputs": [str(scene)], "output": str(out), "model": {"name": "mndwi", "params": {"threshold": "otsu"}},
            "progress": False}  # fmt: skip
    data.update(kw)
    return run_job(parse_spec(data))


@pytest.mark.usefixtures("ray_local")
def test_otsu_threshold_is_the_same_for_1_and_3_workers_and_two_block_sizes(tmp_path: Path) -> None:
    import zarr
    from conftest import write_raster

    bands = _lake_scene((700, 900), seed=5)
    scene = write_raster(tmp_path / "s.tif", bands, nodata=0, descriptions=S2)
    runs = [("a", 256, 1), ("b", 512, 3), ("c", 256, 3)]
    values, masks = [], []
    for name, block, workers in runs:
        report = _run(scene, tmp_path / f"{name}.zarr", block_px=block, workers=workers)
        assert report.ok, report.summary()
        g = zarr.open_group(str(tmp_path / f"{name}.zarr"), path="s", mode="r")
        chosen = g.attrs["geoseg"]["threshold"]
        assert chosen["method"] == "otsu" and chosen["index"] == "mndwi" and chosen["bins"] == INDEX_BINS
        assert report.inputs[0].threshold == chosen["value"] and "Otsu threshold" in report.summary()
        values.append(chosen["value"])
        masks.append(g["mask"][:])
    assert values[0] == values[1] == values[2]
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], masks[2])
    valid = bands.all(axis=0)
    index = normalised_difference(bands[1], bands[4])
    t = otsu_threshold(index_histogram(index, valid))
    assert values[0] == t and -0.5 < t < 0.6
    mask = masks[0]
    assert (mask[~valid] == 255).all()
    wrong = (mask[valid] == 1) != (index[valid] > np.float32(t))
    assert wrong.sum() <= 2, "the mask is the index above the scene's threshold (float32 rounding aside)"
    again = _run(scene, tmp_path / "a.zarr", block_px=256)
    assert again.inputs[0].already


@pytest.mark.usefixtures("ray_local")
def test_a_resumed_otsu_job_takes_the_recorded_threshold(tmp_path: Path) -> None:
    """Killed after the threshold was chosen: the rerun runs the unfinished blocks only, with
    the threshold the store holds (here planted, to see that it is read, not chosen again)."""
    import json

    import zarr
    from conftest import write_raster

    from geoseg.sinks import Store, done_blocks, part_key
    from geoseg.sinks._layout import marker_key

    bands = _lake_scene((600, 560), seed=6)
    scene = write_raster(tmp_path / "s.tif", bands, nodata=0, descriptions=S2)
    out = tmp_path / "a.zarr"
    assert _run(scene, out, block_px=256).ok
    st = Store(out)
    done = done_blocks(out, "s")
    n_blocks = sum(not k.startswith(("hist_", "otsu_")) for k in done)
    assert n_blocks >= 4 and sum(k.startswith("hist_") for k in done) == n_blocks and sum(k.startswith("otsu_") for k in done) == 1
    for k in done:
        if not k.startswith(("hist_", "otsu_")):
            (out / marker_key("s", k)).unlink()  # every model block unfinished: a kill after the choice
    g = zarr.open_group(str(out), path="s", mode="r+")
    g.attrs["geoseg"] = {**g.attrs["geoseg"], "status": "running"}
    planted = {"method": "otsu", "index": "mndwi", "value": 0.25, "bins": INDEX_BINS, "pixels": 1}
    st.set(part_key("s", "threshold.json"), json.dumps(planted).encode())
    report = _run(scene, out, block_px=256)
    assert report.ok and report.inputs[0].blocks_run == n_blocks
    mask = zarr.open_group(str(out), path="s", mode="r")["mask"][:]
    valid = bands.all(axis=0)
    wrong = (mask[valid] == 1) != (normalised_difference(bands[1], bands[4])[valid] > np.float32(0.25))
    assert wrong.sum() <= 2


def test_mndwi_without_a_swir_band_names_the_band_and_the_file(tmp_path: Path) -> None:
    from conftest import water_scene, write_raster

    from geoseg.pipeline import run_job
    from geoseg.spec import parse_spec

    scene = write_raster(tmp_path / "four.tif", water_scene((64, 64)), descriptions=["B02", "B03", "B04", "B08"])
    spec = parse_spec({"inputs": [str(scene)], "output": str(tmp_path / "o.zarr"), "model": {"name": "mndwi"},
                       "progress": False, "on_error": "fail"})  # fmt: skip
    with pytest.raises(GeosegError) as e:
        run_job(spec)
    line = str(e.value)
    assert "\n" not in line and "four.tif" in line and "'swir1'" in line and "model.params.bands" in line
