"""Invariants 2, 3, 4, 7 on Ray: exactly-once inference, partition invariance, reference equality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr

from geoseg.core.grid import Tiling, patch_grid
from geoseg.core.stitch import labels_from_scores, reference
from geoseg.infer import Predictor
from geoseg.models import ModelCard, ModelSpec, Normalisation, build_model, save_checkpoint
from geoseg.pipeline import run_job
from geoseg.spec import parse_spec
from tests.conftest import water_scene, write_raster

pytestmark = pytest.mark.usefixtures("ray_local")


def run(inputs: list[Path], out: Path, **kw: Any) -> Any:
    # The tiling pinned to 256/32 (ndwi's card says 0 overlap: it is pointwise), so that patches
    # overlap and gaussian stitching fans in across blocks.
    data = {"inputs": [str(p) for p in inputs], "output": str(out), "model": {"name": "ndwi"}, "progress": False,
            "tiling": {"overlap_px": 32}}  # fmt: skip
    data.update(kw)
    return run_job(parse_spec(data))


def expected(path: Path, spec: ModelSpec, bands: list[int], mode: str, overlap: int = 32) -> np.ndarray:
    """Single-process reference: whole image in memory, same predictor, no Ray."""
    with rasterio.open(path) as src:
        img = src.read([b + 1 for b in bands])
        valid = np.all(src.read_masks([b + 1 for b in bands]) > 0, axis=0)
    predictor = Predictor(spec, batch_size=16)
    grid = patch_grid(img.shape[1:], Tiling(predictor.card.patch_px, overlap))
    scores = reference(img, predictor, grid, mode, predictor.card.n_classes)  # type: ignore[arg-type]
    return labels_from_scores(scores, valid)


def mask_of(out: Path, name: str) -> np.ndarray:
    return zarr.open_group(str(out), path=name, mode="r")["mask"][:]


@pytest.mark.parametrize("shape", [(100, 70), (256, 256), (1000, 777)])
@pytest.mark.parametrize("nodata", [False, True], ids=["full", "nodata"])
def test_distributed_equals_reference_bit_for_bit(tmp_path: Path, shape: tuple[int, int], nodata: bool) -> None:
    src = write_raster(
        tmp_path / "scene.tif",
        water_scene(shape, seed=sum(shape), nodata=nodata),
        nodata=0 if nodata else None,
        descriptions=["B02", "B03", "B04", "B08"],
    )
    grid_patches = len(patch_grid(shape))
    refs = {mode: expected(src, ModelSpec(name="ndwi"), [1, 3], mode) for mode in ("crop", "gaussian")}
    assert 0 < (refs["crop"] == 1).mean() < 1, "test scene must hold water and land"
    if nodata:
        assert (refs["crop"] == 255).any()
    for k, (workers, block_px, mode) in enumerate([(1, 448, "crop"), (3, 896, "crop"), (3, 448, "gaussian"), (1, 896, "gaussian")]):
        out = tmp_path / f"out{k}.zarr"
        report = run([src], out, workers=workers, block_px=block_px, stitch=mode)
        assert report.ok, report.summary()
        (scene,) = report.scenes
        assert scene.patches_forwarded == scene.patches_needed == grid_patches, "exactly-once inference"
        assert np.array_equal(mask_of(out, "scene"), refs[mode]), f"{workers} workers, block {block_px}, {mode}"


def _tiny_unet(tmp_path: Path) -> ModelSpec:
    import torch

    card = ModelCard(
        name="tiny-unet", architecture="unet", classes=("a", "b", "c"), bands=("B02", "B03", "B04", "B08"),
        normalisation=Normalisation("affine", (1000.0,) * 4, (1000.0,) * 4), params={"base_channels": 4, "depth": 2},
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(card)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # away from init symmetry: more than one class occurs
    return ModelSpec(checkpoint=save_checkpoint(tmp_path / "tiny.pt", model.eval(), card))


def test_conv_model_is_partition_invariant(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", water_scene((700, 530), seed=3), descriptions=["B02", "B03", "B04", "B08"])
    spec = _tiny_unet(tmp_path)
    ref = expected(src, spec, [0, 1, 2, 3], "gaussian")
    assert len(np.unique(ref)) >= 2, "a constant mask would prove nothing"
    for k, (workers, block_px) in enumerate([(1, 448), (3, 896)]):
        out = tmp_path / f"o{k}.zarr"
        report = run([src], out, model={"checkpoint": str(spec.checkpoint)}, workers=workers, block_px=block_px, stitch="gaussian", write_probs=True)
        assert report.ok, report.summary()
        assert np.array_equal(mask_of(out, "s"), ref)
        probs = zarr.open_group(str(out), path="s", mode="r")["probs"][:]
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)


def test_many_scenes_one_job_and_a_bad_one_is_skipped(tmp_path: Path) -> None:
    good = [
        write_raster(tmp_path / f"g{i}.tif", water_scene((300, 260), seed=i), descriptions=["B02", "B03", "B04", "B08"])
        for i in range(3)
    ]
    bad = tmp_path / "broken.tif"
    bad.write_text("not a raster")
    out = tmp_path / "o.zarr"
    report = run([good[0], bad, good[1], good[2]], out, workers=2)
    assert not report.ok
    status = {Path(s.path).name: s.status for s in report.scenes}
    assert status == {"g0.tif": "complete", "broken.tif": "failed", "g1.tif": "complete", "g2.tif": "complete"}
    assert "broken.tif" in report.scenes[1].error and "not a readable raster" in report.scenes[1].error
    for i in range(3):
        g = zarr.open_group(str(out), path=f"g{i}", mode="r")
        assert g.attrs["geoseg"]["status"] == "complete"
        assert np.array_equal(g["mask"][:], expected(good[i], ModelSpec(name="ndwi"), [1, 3], "crop"))


def test_rerun_of_a_complete_store_does_no_work(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", water_scene((300, 300)), descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "o.zarr"
    assert run([src], out).ok
    again = run([src], out)
    assert again.ok and again.scenes[0].blocks_run == 0 and again.patches_forwarded == 0
