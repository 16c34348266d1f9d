"""Instances from an instance model: one id per object across patch and block seams.

A scripted model (tests/blob_model.py: every blob of one value it sees is an instance, in
torchvision's output format) stands in for a trained Mask R-CNN, so the merge is tested
against a known truth: the whole scene's 4-connected components of equal value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from blob_model import blob_scene, reference_objects, same_partition, write_blob_model
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from geoseg.core.detections import (
    block_edges,
    block_nodes,
    merge_scene,
    node_edges,
    patch_bases,
    patch_record_dtype,
    resolve_patch,
)
from geoseg.core.grid import Tiling, blocks, patch_grid
from geoseg.core.instances import NODATA_ID, block_components, join_blocks
from geoseg.core.stitch import extract_patches
from geoseg.errors import ModelError


def detect(codes: np.ndarray, n_classes: int = 3) -> np.ndarray:
    """The blob model in numpy (scipy.ndimage.label per value): one patch's record."""
    masks, labels, boxes, scores = [], [], [], []
    for c in np.unique(codes[codes > 0]):
        lab, k = ndimage.label(codes == c)
        for j in range(1, k + 1):
            m = lab == j
            ys, xs = np.nonzero(m)
            masks.append(m.astype(np.float32))
            labels.append(1 + (int(c) - 1) % (n_classes - 1))
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            scores.append(0.5 + (int(c) % 50) / 100)
    p = codes.shape
    if not masks:
        return resolve_patch(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 1, *p)), n_classes)
    return resolve_patch(np.array(boxes), np.array(labels), np.array(scores), np.array(masks)[:, None], n_classes, 0.0)


def patch_records(codes: np.ndarray, tiling: Tiling) -> tuple[Any, dict[tuple[int, int], np.ndarray]]:
    """Every patch as the pipeline cuts it (padded where the image is smaller), through :func:`detect`."""
    grid = patch_grid(codes.shape, tiling)
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    patches = extract_patches(codes[None], (0, 0), grid, ids)
    return grid, {ij: detect(p[0]) for ij, p in zip(ids, patches, strict=True)}


def blocked_merge(grid: Any, records: dict, block_px: int, merge_overlap: float) -> np.ndarray:
    """What the pipeline's phases do, block by block in memory: nodes and edges per block,
    one join, then each block relabelled."""
    blks = blocks(grid, block_px, grid.tiling.stride_px)
    parts = []
    for b in blks:
        labels, cls, score, counts = block_nodes(grid, b, records)
        comp = block_components(labels, cls, b.extent[:2], grid.shape_yx[1], None, score)
        parts.append((labels, comp, counts, block_edges(grid, b, records, merge_overlap)))
    base = patch_bases(blks, grid, [p[2] for p in parts])
    edges = node_edges(np.concatenate([p[3] for p in parts]), base)
    luts, _ = join_blocks([p[1] for p in parts], faces=False, edges=edges)
    out = np.zeros(grid.shape_yx, np.uint32)
    for b, (labels, *_), lut in zip(blks, parts, luts, strict=True):
        y0, x0, y1, x1 = b.extent
        out[y0:y1, x0:x1] = lut[labels]
    return out


# -- one patch --------------------------------------------------------------------------------


def test_each_pixel_goes_to_the_best_scored_detection_then_the_top_left_one() -> None:
    m = np.zeros((3, 1, 8, 8), np.float32)
    m[0, 0, 0:4, 0:4] = 0.9  # score 0.6
    m[1, 0, 2:6, 2:6] = 0.9  # score 0.8: wins the shared pixels
    m[2, 0, 2:6, 2:6] = 0.9  # score 0.8 too, same place, later in the model's order: loses every pixel
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 6], [2, 2, 6, 6]], np.float32)
    rec = resolve_patch(boxes, np.array([1, 2, 2]), np.array([0.6, 0.8, 0.8]), m, 3)
    assert int(rec["count"]) == 2, "a detection left without pixels is dropped"
    assert rec["score"][:2].tolist() == pytest.approx([0.8, 0.6]) and rec["label"][:2].tolist() == [2, 1]
    assert (rec["index"][2:6, 2:6] == 1).all() and rec["index"][0, 0] == 2 and rec["index"][7, 7] == 0


def test_thresholds_drop_low_scores_and_low_mask_probabilities() -> None:
    m = np.zeros((2, 1, 8, 8), np.float32)
    m[0, 0, :2] = 0.4
    m[0, 0, 2:4] = 0.6
    m[1, 0] = 1.0
    rec = resolve_patch(np.zeros((2, 4)), np.array([1, 1]), np.array([0.9, 0.2]), m, 2, 0.5, 0.5)
    assert int(rec["count"]) == 1 and (rec["index"] > 0).sum() == 16


def test_a_model_with_no_instances_gives_an_empty_record_and_bad_classes_are_refused() -> None:
    rec = resolve_patch(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 1, 8, 8)), 2)
    assert rec.dtype == patch_record_dtype(8) and int(rec["count"]) == 0 and not rec["index"].any()
    with pytest.raises(ModelError, match=r"returns class 3, its card has classes 1..1 \(0 is the background\)"):
        resolve_patch(np.zeros((1, 4)), np.array([3]), np.array([0.9]), np.ones((1, 1, 8, 8)), 2)
    with pytest.raises(ModelError, match=r"returns 1025 instances in one patch, more than geoseg keeps \(1024\)"):
        masks = np.zeros((1025, 1, 64, 64), np.float32)
        masks.reshape(1025, -1)[np.arange(1025), np.arange(1025)] = 1
        resolve_patch(np.zeros((1025, 4)), np.ones(1025), np.ones(1025), masks, 2)


# -- across patches and blocks -----------------------------------------------------------------


def test_every_object_gets_one_id_across_patch_and_block_seams() -> None:
    codes = blob_scene((1100, 1300), seed=1)
    grid, records = patch_records(codes, Tiling(256, 32))
    truth = reference_objects(codes)
    ids, objects = merge_scene(grid, records, 0.5)
    assert same_partition(ids, truth), "each object exactly one id, no id shared, no stray pixel"
    assert len(objects.pixels) == truth.max() > 20
    assert objects.pixels.tolist() == np.bincount(ids.ravel())[1:].tolist()
    for block_px in (224, 448, 896):
        np.testing.assert_array_equal(blocked_merge(grid, records, block_px, 0.5), ids)
    lake = ids[550, 650 - int(0.3 * 1100)]
    assert objects.pixels[lake - 1] > 448 * 448, "the lake is larger than a block and still one object"
    assert ids[550, 650] != lake and ids[550, 650] > 0, "the island in the lake's hole is an object of its own"


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from([(64, 8), (64, 16), (48, 4)]),
    st.sampled_from([1, 2, 3]),
)
def test_merge_equals_the_whole_scene_truth_for_random_scenes_and_partitions(seed: int, tiling: tuple, k: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(40, 200, size=2)
    codes = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 25))):
        y, x = rng.integers(0, h), rng.integers(0, w)
        codes[y : y + rng.integers(1, 90), x : x + rng.integers(1, 90)] = rng.integers(1, 6)
    t = Tiling(*tiling)
    grid, records = patch_records(codes, t)
    ids, _ = merge_scene(grid, records, 0.01)  # blobs of one code that share a pixel are one object
    assert same_partition(ids, reference_objects(codes))
    np.testing.assert_array_equal(blocked_merge(grid, records, k * t.stride_px, 0.01), ids)


def test_touching_detections_of_one_class_stay_apart() -> None:
    codes = np.zeros((200, 300), np.uint8)
    codes[20:180, 20:150] = 1
    codes[20:180, 150:280] = 3  # the same class (1 + (3 - 1) % 2 = 1), touching across a seam
    grid, records = patch_records(codes, Tiling(64, 16))
    ids, objects = merge_scene(grid, records)
    assert len(objects.pixels) == 2 and ids[100, 149] != ids[100, 150]
    assert objects.class_id.tolist() == [1, 1]


def test_nodata_pixels_get_the_nodata_id() -> None:
    codes = np.zeros((100, 100), np.uint8)
    codes[10:90, 10:90] = 4
    valid = np.ones_like(codes, bool)
    valid[:, 50:] = False
    grid, records = patch_records(codes, Tiling(64, 16))
    ids, objects = merge_scene(grid, records, valid=valid)
    assert (ids[:, 50:] == NODATA_ID).all() and objects.pixels.tolist() == [80 * 40]


# -- in the pipeline -----------------------------------------------------------------------------


def _run(scene: Path, model: Path, out: Path, **kw: object) -> Any:
    from geoseg.pipeline import run_job
    from geoseg.spec import parse_spec

    data = {"inputs": [str(scene)], "output": str(out), "model": {"file": str(model)}, "progress": False}
    data.update(kw)
    return run_job(parse_spec(data))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_pipeline_ids_equal_the_reference_for_1_and_3_workers_and_two_block_sizes(tmp_path: Path) -> None:
    import geopandas as gpd
    import zarr
    from conftest import write_raster
    from rasterio.transform import Affine

    from geoseg.cli import main
    from geoseg.sinks import read_table

    codes = blob_scene((1100, 1300), seed=2)
    codes[:, -40:] = 255  # nodata strip
    scene = write_raster(
        tmp_path / "s.tif", codes[None], nodata=255, descriptions=["code"], transform=Affine(2.0, 0, 300000.0, 0, -2.0, 5000000.0)
    )
    model = write_blob_model(tmp_path / "model")
    r1 = _run(scene, model, tmp_path / "a.zarr", block_px=448, workers=1)
    r2 = _run(scene, model, tmp_path / "b.zarr", block_px=896, workers=3)
    assert r1.ok and r2.ok, (r1, r2)
    for r in (r1, r2):
        assert r.inputs[0].patches_forwarded == r.inputs[0].grid_patches == len(patch_grid(codes.shape)), "exactly once"
    a = zarr.open_group(str(tmp_path / "a.zarr"), path="s", mode="r")
    ids = a["instance_id"][:]
    np.testing.assert_array_equal(ids, zarr.open_group(str(tmp_path / "b.zarr"), path="s", mode="r")["instance_id"][:])
    valid = codes != 255
    truth = reference_objects(np.where(valid, codes, 0))
    assert same_partition(np.where(valid, ids, 0), truth)
    assert (ids[~valid] == NODATA_ID).all()
    grid, records = patch_records(np.where(valid, codes, 0), Tiling(256, 32))
    ref, objects = merge_scene(grid, records, 0.5, valid)
    np.testing.assert_array_equal(ids, ref)
    mask = a["mask"][:]
    assert (mask[valid & (ids == 0)] == 0).all() and set(np.unique(mask[valid & (ids > 0)]).tolist()) == {1, 2}
    t = read_table(tmp_path / "a.zarr", "s", "objects")
    assert list(t)[:3] == ["instance_id", "class_id", "score"]
    np.testing.assert_array_equal(t["pixels"], objects.pixels)
    np.testing.assert_allclose(t["area_m2"], objects.pixels * 4.0)
    np.testing.assert_allclose(t["score"], objects.score)
    assert a.attrs["geoseg"]["instances"] == {"method": "model", "classes": ["c1", "c2"]}
    pq = tmp_path / "o.parquet"
    assert main(["export", str(tmp_path / "a.zarr"), "--name", "s", "--format", "geoparquet", "--out", str(pq)]) == 0
    frame = gpd.read_parquet(pq)
    assert len(frame) == len(objects.pixels) and frame.crs.to_epsg() == 32633
    np.testing.assert_allclose(frame.geometry.area, frame["area_m2"])
    assert _run(scene, model, tmp_path / "a.zarr", block_px=448).inputs[0].already


@pytest.mark.usefixtures("ray_local")
def test_a_model_that_finds_nothing_gives_an_empty_table(tmp_path: Path) -> None:
    from conftest import write_raster

    from geoseg.sinks import read_table

    scene = write_raster(tmp_path / "e.tif", np.zeros((1, 300, 300), np.uint8), descriptions=["code"])
    assert _run(scene, write_blob_model(tmp_path / "m"), tmp_path / "o.zarr").ok
    t = read_table(tmp_path / "o.zarr", "e", "objects")
    assert len(t["instance_id"]) == 0 and "score" in t


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"stitch": "gaussian"}, r"stitch: 'gaussian' blends class scores; instance model 'blobs' .*use --stitch crop"),
        ({"write_probs": True}, r"write_probs: instance model 'blobs' gives instances, not class probabilities"),
        ({"instances": "components"}, r"instances: 'components' labels a semantic mask; model 'blobs' is an instance"),
        ({"model_params": {"merge_overlap": 0}}, r"param merge_overlap=0 must be a number in \(0, 1\]"),
        ({"instance_classes": ["c1"]}, r"instance_classes labels a semantic mask; model 'blobs' is an instance model"),
        ({"tiling": {"overlap_px": 0}}, r"tiling.overlap_px \(--overlap\) 0: instance model 'blobs' joins .* use at least 2"),
        ({"model_params": {"score_threshold": 2}}, r"param score_threshold=2.0 must be a number in \[0, 1\]"),
    ],
)
def test_instance_jobs_refuse_what_does_not_fit_in_one_line(tmp_path: Path, extra: dict, message: str) -> None:
    from geoseg.errors import GeosegError
    from geoseg.models import resolve_card
    from geoseg.plan import plan_job
    from geoseg.spec import parse_spec

    model = write_blob_model(tmp_path / "m")
    params = extra.pop("model_params", {})
    spec = parse_spec({"inputs": ["x.tif"], "output": str(tmp_path / "o.zarr"), "model": {"file": str(model), "params": params},
                       **extra})  # fmt: skip
    with pytest.raises(GeosegError, match=message):
        plan_job(spec, resolve_card(spec.model), "w")


def test_a_semantic_network_under_an_instance_card_is_one_line_not_a_crash() -> None:
    from geoseg.infer import Predictor
    from geoseg.models import ModelCard, build_model

    card = ModelCard("seg", "unet", ("background", "thing"), ("code",), task="instance", params={"base_channels": 4, "depth": 2})
    predictor = Predictor(build_model(card), batch_size=2, card=card)
    with pytest.raises(ModelError, match=r"returns a tensor of shape \(2, 2, 64, 64\), dense class scores, but its card says task: instance"):
        predictor(np.zeros((1, 1, 64, 64), np.float32))


def test_instance_params_on_a_semantic_model_and_instance_classes_without_instances_are_refused(tmp_path: Path) -> None:
    from geoseg.errors import GeosegError
    from geoseg.models import ModelSpec, resolve_card
    from geoseg.plan import plan_job
    from geoseg.spec import parse_spec

    with pytest.raises(ModelError, match=r"model 'ndwi' is a semantic model: params \['score_threshold'\] are for instance"):
        resolve_card(ModelSpec(name="ndwi", params={"score_threshold": 0.3}))
    spec = parse_spec({"inputs": ["x.tif"], "output": str(tmp_path / "o.zarr"), "model": {"name": "ndwi"},
                       "instance_classes": ["water"]})  # fmt: skip
    with pytest.raises(GeosegError, match=r"instance_classes \(--instance-classes\) chooses the classes of --instances"):
        plan_job(spec, resolve_card(spec.model), "w")
