"""Instances from a class mask: ids from block-wise labelling joined across faces equal a
single-process labelling of the whole scene, for any partition (DESIGN invariants 2-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geoseg.core.instances import NODATA_ID, block_components, join_blocks, label_mask


def reference_ids(mask: np.ndarray, classes: list[int]) -> np.ndarray:
    """Whole-scene reference: scipy.ndimage.label per class (4-connected), objects numbered by
    their first pixel in row-major order."""
    out = np.zeros(mask.shape, np.int64)
    n = 0
    for c in classes:
        lab, k = ndimage.label(mask == c)
        out[lab > 0] = lab[lab > 0] + n
        n += k
    flat = out.ravel()
    _, first_idx = np.unique(flat, return_index=True)
    labels_in_order = flat[np.sort(first_idx)]
    labels_in_order = labels_in_order[labels_in_order > 0]
    lut = np.zeros(n + 1, np.int64)
    lut[labels_in_order] = np.arange(1, len(labels_in_order) + 1)
    return lut[out]


def blocked_ids(mask: np.ndarray, classes: list[int], by: int, bx: int, area: float | None = None) -> Any:
    h, w = mask.shape
    comps, labels = [], []
    for y0 in range(0, h, by):
        for x0 in range(0, w, bx):
            lab, cls = label_mask(mask[y0 : y0 + by, x0 : x0 + bx], classes)
            labels.append(((y0, x0), lab))
            comps.append(block_components(lab, cls, (y0, x0), w, area))
    luts, objects = join_blocks(comps)
    out = np.zeros(mask.shape, np.int64)
    for ((y0, x0), lab), lut in zip(labels, luts, strict=True):
        out[y0 : y0 + lab.shape[0], x0 : x0 + lab.shape[1]] = lut[lab]
    return out, objects


masks = st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.2, 0.8)).map(
    lambda t: np.where(
        np.random.default_rng(t[2]).random((t[0], t[1])) < t[3],
        np.random.default_rng(t[2] + 1).integers(1, 3, (t[0], t[1])),
        0,
    ).astype(np.uint8)
)


@settings(max_examples=200, deadline=None)
@given(masks, st.integers(1, 17), st.integers(1, 17))
def test_blocked_ids_equal_the_whole_scene_reference_for_any_partition(mask: np.ndarray, by: int, bx: int) -> None:
    ids, objects = blocked_ids(mask, [1, 2], by, bx)
    ref = reference_ids(mask, [1, 2])
    np.testing.assert_array_equal(ids, ref)
    n = int(ref.max())
    assert len(objects.instance_id) == n
    np.testing.assert_array_equal(objects.pixels, np.bincount(ref.ravel(), minlength=n + 1)[1:])
    for k in range(1, n + 1):
        ys, xs = np.nonzero(ref == k)
        assert objects.class_id[k - 1] == mask[ys[0], xs[0]]
        np.testing.assert_array_equal(objects.bbox[k - 1], [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
        np.testing.assert_allclose(objects.centroid_yx[k - 1], [ys.mean() + 0.5, xs.mean() + 0.5])


def test_an_object_larger_than_a_block_is_one_object_and_touching_classes_stay_apart() -> None:
    mask = np.zeros((50, 60), np.uint8)
    mask[5:45, 3:57] = 1  # spans every 8 x 8 block it crosses
    mask[5:45, 30:32] = 2  # a road of another class across it: splits it in two, stays its own
    ids, objects = blocked_ids(mask, [1, 2], 8, 8, area=100.0)
    assert len(objects.instance_id) == 3
    assert set(np.unique(ids[mask == 1])) == {1, 3}, "left and right parts of class 1"
    assert set(np.unique(ids[mask == 2])) == {2}
    np.testing.assert_allclose(objects.area, objects.pixels * 100.0)
    assert list(objects.class_id) == [1, 2, 1]


def test_diagonal_neighbours_are_separate_objects_as_in_4_connectivity() -> None:
    mask = np.array([[1, 0], [0, 1]], np.uint8)
    ids, objects = blocked_ids(mask, [1], 1, 1)
    assert ids.tolist() == [[1, 0], [0, 2]]


def test_no_objects_gives_empty_tables() -> None:
    ids, objects = blocked_ids(np.zeros((9, 9), np.uint8), [1], 4, 4)
    assert ids.max() == 0 and len(objects.instance_id) == 0 and objects.bbox.shape == (0, 4)


def test_nodata_id_is_the_largest_uint32() -> None:
    assert NODATA_ID == np.iinfo(np.uint32).max


def test_per_row_pixel_areas_sum_per_object() -> None:
    mask = np.zeros((6, 4), np.uint8)
    mask[1:5, 1:3] = 1
    rows = np.arange(6, dtype=float) + 1.0
    _, objects = blocked_ids(mask, [1], 3, 2, area=None)
    assert np.isnan(objects.area).all()
    lab, cls = label_mask(mask, [1])
    comp = block_components(lab, cls, (0, 0), 4, rows)
    assert comp.area.tolist() == [2 * (2 + 3 + 4 + 5)]
    with pytest.raises(ValueError):
        block_components(lab, cls, (0, 0), 4, np.ones(5))


# -- in the pipeline ------------------------------------------------------------------------------

def _run(scene: Path, out: Path, **kw: object) -> Any:
    from geoseg.pipeline import run_job
    from geoseg.spec import parse_spec

    data = {"inputs": [str(scene)], "output": str(out), "model": {"name": "ndwi"}, "progress": False,
            "instances": "components"}  # fmt: skip
    data.update(kw)
    return run_job(parse_spec(data))


def _group(out: Path, name: str) -> Any:
    import zarr

    return zarr.open_group(str(out), path=name, mode="r")


@pytest.mark.usefixtures("ray_local")
def test_instance_ids_equal_the_whole_scene_reference_for_any_block_size_and_worker_count(tmp_path: Path) -> None:
    from conftest import water_scene, write_raster

    from geoseg.sinks import read_table

    scene = write_raster(
        tmp_path / "s.tif", water_scene((700, 900), seed=3, nodata=True), nodata=0, descriptions=["B02", "B03", "B04", "B08"]
    )
    r1 = _run(scene, tmp_path / "a.zarr", block_px=256, workers=1)
    r2 = _run(scene, tmp_path / "b.zarr", block_px=512, workers=2)
    assert r1.ok and r2.ok
    a, b = _group(tmp_path / "a.zarr", "s"), _group(tmp_path / "b.zarr", "s")
    mask = a["mask"][:]
    ids = a["instance_id"][:]
    np.testing.assert_array_equal(ids, b["instance_id"][:])
    ref = reference_ids(mask, [1]).astype(np.uint32)
    ref[mask == 255] = NODATA_ID
    np.testing.assert_array_equal(ids, ref)
    n = int(ref[ref != NODATA_ID].max())
    assert n > 100, "the random scene has many objects that cross block faces"
    t = read_table(tmp_path / "a.zarr", "s", "objects")
    np.testing.assert_array_equal(t["instance_id"], np.arange(1, n + 1))
    counts = np.bincount(ref[ref != NODATA_ID].astype(np.int64), minlength=n + 1)[1:]
    np.testing.assert_array_equal(t["pixels"], counts)
    np.testing.assert_allclose(t["area_m2"], counts * 100.0)  # 10 m pixels of EPSG:32633
    k = int(np.argmax(counts)) + 1
    ys, xs = np.nonzero(ref == k)
    np.testing.assert_allclose(t["centroid_x"][k - 1], 500000.0 + 10.0 * (xs.mean() + 0.5))
    np.testing.assert_allclose(t["centroid_y"][k - 1], 6000000.0 - 10.0 * (ys.mean() + 0.5))
    assert (t["xmin"][k - 1], t["xmax"][k - 1]) == (500000.0 + 10.0 * xs.min(), 500000.0 + 10.0 * (xs.max() + 1))
    assert a.attrs["geoseg"]["instances"] == {"method": "components", "classes": ["water"]}
    again = _run(scene, tmp_path / "a.zarr", block_px=256)
    assert again.inputs[0].already, "a finished instance job is complete: nothing runs again"


@pytest.mark.usefixtures("ray_local")
def test_areas_in_a_geographic_crs_are_true_areas(tmp_path: Path) -> None:
    from conftest import write_raster
    from rasterio.transform import Affine

    from geoseg.sinks import read_table

    px = np.full((4, 40, 50), 1000, np.uint16)
    px[1, 10:30, 5:45] = 3000  # B03 > B08: water (NDWI > 0), one rectangle of 20 x 40 pixels
    scene = write_raster(
        tmp_path / "g.tif", px, crs="EPSG:4326", transform=Affine(0.001, 0, 8.0, 0, -0.001, 60.0),
        descriptions=["B02", "B03", "B04", "B08"],
    )  # fmt: skip
    assert _run(scene, tmp_path / "g.zarr").ok
    t = read_table(tmp_path / "g.zarr", "g", "objects")
    assert t["pixels"].tolist() == [800]
    # independent: the zone between two parallels on the WGS 84 ellipsoid, (a^2 / 2) dlon (q(lat1) - q(lat0))
    # with Snyder's q (Map Projections: A Working Manual, 1987, eq. 3-12); the pixels' edges are
    # geodesics, not parallels, which changes 0.001 degree pixels by far less than 1e-6.
    a, f = 6378137.0, 1 / 298.257223563
    e = np.sqrt(f * (2 - f))

    def q(lat: float) -> float:
        s = np.sin(np.radians(lat))
        return float((1 - e * e) * (s / (1 - e * e * s * s) - np.log((1 - e * s) / (1 + e * s)) / (2 * e)))

    zone = a * a / 2 * np.radians(0.040) * (q(59.990) - q(59.970))
    assert abs(t["area_m2"][0] / zone - 1) < 1e-6
    assert abs(t["centroid_y"][0] - 59.980) < 1e-9 and abs(t["centroid_x"][0] - 8.025) < 1e-9


def test_instances_refused_for_mri_and_unknown_class_names(tmp_path: Path) -> None:
    from geoseg.errors import SpecError
    from geoseg.models import resolve_card
    from geoseg.plan import instance_classes
    from geoseg.spec import parse_spec

    spec = parse_spec({"inputs": ["x.tif"], "output": str(tmp_path / "o.zarr"), "model": {"name": "ndwi"},
                       "instance_classes": ["lake"]})  # fmt: skip
    card = resolve_card(spec.model)
    with pytest.raises(SpecError, match=r"instance_classes: 'lake' is not a class of model 'ndwi' \(classes: other, water\)"):
        instance_classes(card, spec)


@pytest.mark.usefixtures("ray_local")
def test_objects_export_as_geoparquet_geojson_and_csv_with_one_polygon_per_id(tmp_path: Path) -> None:
    import geopandas as gpd
    import rasterio
    from conftest import write_raster
    from rasterio.transform import Affine

    from geoseg.cli import main

    px = np.full((4, 300, 260), 1000, np.uint16)
    px[1, 20:280, 30:60] = 3000  # a tall lake crossing two 128 px blocks
    px[1, 100:110, 100:250] = 3000  # a bar crossing blocks to the right
    px[1, 200:240, 150:200] = 3000
    px[1, 210:230, 165:185] = 1000  # with an island: a hole in its polygon
    px[:, :, 250:] = 0  # nodata strip
    scene = write_raster(
        tmp_path / "w.tif", px, nodata=0, descriptions=["B02", "B03", "B04", "B08"],
        transform=Affine(10.0, 0, 500000.0, 0, -10.0, 6000000.0),
    )  # fmt: skip
    assert _run(scene, tmp_path / "o.zarr", block_px=128).ok
    pq, gj, csv = tmp_path / "o.parquet", tmp_path / "o.geojson", tmp_path / "o.csv"
    for fmt, out in (("geoparquet", pq), ("geojson", gj), ("csv", csv)):
        assert main(["export", str(tmp_path / "o.zarr"), "--name", "w", "--format", fmt, "--out", str(out)]) == 0
    frame = gpd.read_parquet(pq)
    assert frame.crs.to_epsg() == 32633
    assert frame["instance_id"].tolist() == [1, 2, 3] and set(frame["class"]) == {"water"}
    assert all(frame.geometry.geom_type == "Polygon"), "each object one polygon across the block faces"
    np.testing.assert_allclose(frame.geometry.area, frame["area_m2"])  # polygon area = pixels x 100 m2
    assert len(frame.geometry[2].interiors) == 1, "the island is a hole"
    assert frame.geometry[1].bounds == (500000.0 + 1000, 6000000.0 - 1100, 500000.0 + 2500, 6000000.0 - 1000)
    wgs = gpd.read_file(gj)
    assert wgs.crs.to_epsg() == 4326 and len(wgs) == 3
    assert csv.read_text().splitlines()[0].split(",")[:3] == ["instance_id", "class_id", "pixels"]
    # the table of a scene: its only table (objects) without --array; a .Parquet suffix in any case is Parquet
    table = tmp_path / "objects.Parquet"
    assert main(["export", str(tmp_path / "o.zarr"), "--name", "w", "--format", "table", "--out", str(table)]) == 0
    import pyarrow.parquet as papq

    assert papq.read_table(table).column("instance_id").to_pylist() == [1, 2, 3]
    assert main(["export", str(tmp_path / "o.zarr"), "--name", "w", "--array", "../../x", "--out", str(tmp_path / "x.tif")]) == 2
    png = tmp_path / "ids.png"
    assert main(["quicklook", str(tmp_path / "o.zarr"), "--name", "w", "--array", "instance_id", "--out", str(png)]) == 0
    from PIL import Image

    picture = np.asarray(Image.open(png).convert("RGB"))
    assert picture.shape[1] == 260 and (picture[25, 35] != picture[5, 5]).any(), "object 1 is coloured, land is not"
    cog = tmp_path / "ids_cog.tif"
    assert main(["export", str(tmp_path / "o.zarr"), "--name", "w", "--array", "instance_id", "--out", str(cog)]) == 0
    with rasterio.open(cog) as src:
        assert src.nodata == 0xFFFFFFFF and src.dtypes[0] == "uint32"
        assert src.read(1)[0, 255] == 0xFFFFFFFF and src.read(1)[25, 35] == 1
