"""The scheduler: whole batches across blocks, later phases after the model phase, a killed
model actor, and more workers than CPUs. Outputs equal the single-process reference."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import zarr

from geoseg.models import ModelSpec, resolve_card, weights_identity
from geoseg.pipeline import run_job, run_plan
from geoseg.plan import TaskJob, plan_job
from geoseg.sinks import Store, done_blocks, group_meta, open_group
from geoseg.spec import parse_spec
from tests.conftest import water_scene, write_raster
from tests.test_pipeline import _tiny_unet, expected

S2 = ["B02", "B03", "B04", "B08"]
pytestmark = pytest.mark.usefixtures("ray_local")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/


def _spec(src: Path, out: Path, **kw: Any) -> Any:
    return parse_spec({"inputs": [str(src)], "output": str(out), "model": {"name": "ndwi"}, "progress": False, **kw})


def test_blocks_and_inputs_share_batches_only_the_last_is_padded(tmp_path: Path) -> None:
    """Patches of consecutive blocks and inputs are packed into whole batches: the model computes
    exactly the grid's patches plus less than one batch of padding, for the whole job."""
    scenes = [
        write_raster(tmp_path / f"s{i}.tif", water_scene(shape, seed=i), descriptions=S2)
        for i, shape in enumerate([(700, 530), (300, 900), (260, 260)])
    ]
    spec = parse_spec({"inputs": [str(s) for s in scenes], "output": str(tmp_path / "o.zarr"), "model": {"name": "ndwi"},
                       "progress": False, "block_px": 448, "batch_size": 16, "workers": 2})  # fmt: skip
    report = run_job(spec)
    assert report.ok, report.summary()
    per_block_padding = sum(-(-j.n_patches // 16) * 16 - j.n_patches for s in scenes for j in _jobs(spec, s))
    assert per_block_padding >= 16, "the test needs blocks that do not fill whole batches on their own"
    assert report.patches_padded < 16, f"{report.patches_padded} padded rows: more than the job's last batch"
    for s, res in zip(scenes, report.scenes, strict=True):
        assert res.patches_forwarded == res.grid_patches
        assert np.array_equal(zarr.open_group(str(tmp_path / "o.zarr"), path=s.stem)["mask"][:],
                              expected(s, ModelSpec(name="ndwi"), [1, 3], "crop"))  # fmt: skip


def _jobs(spec: Any, scene: Path) -> Any:
    card = resolve_card(spec.model)
    one = spec.model_copy(update={"inputs": (scene,)})
    return plan_job(one, card, weights_identity(spec.model)).groups[0].jobs


@dataclasses.dataclass(frozen=True)
class _CountWater:
    """A later-phase job: counts the water pixels of a row band of the mask (reads the store)."""

    group: str
    rows: tuple[int, int]

    def run(self, store: Store) -> dict[str, Any]:
        mask = open_group(store, self.group)["mask"][self.rows[0] : self.rows[1]]
        return {"water": int((mask == 1).sum()), "unwritten": int((mask == 255).sum())}


def test_later_phases_run_after_the_model_phase_and_before_completion(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", water_scene((900, 700), seed=4), descriptions=S2)
    spec = _spec(src, tmp_path / "o.zarr", block_px=448, workers=2)
    plan = plan_job(spec, resolve_card(spec.model), weights_identity(spec.model))
    (g,) = plan.groups
    bands = [(0, 300), (300, 600), (600, 900)]
    phase2 = tuple(TaskJob(f"count_{a}", _CountWater(g.name, (a, b))) for a, b in bands)
    phase3 = (TaskJob("total", _CountWater(g.name, (0, 900))),)
    plan = dataclasses.replace(plan, groups=(dataclasses.replace(g, later=(phase2, phase3)),))
    report = run_plan(plan, spec)
    assert report.ok, report.summary()
    markers = {k: v for k, v in _markers(tmp_path / "o.zarr", g.name).items() if not k.startswith("b_")}
    ref = expected(src, ModelSpec(name="ndwi"), [1, 3], "crop")
    assert all(m["unwritten"] == 0 for m in markers.values()), "a later phase saw an unwritten chunk"
    assert markers["total"]["water"] == int((ref == 1).sum()) == sum(markers[f"count_{a}"]["water"] for a, _ in bands)
    assert group_meta(tmp_path / "o.zarr", g.name)["status"] == "complete"


def _markers(store: Path, name: str) -> dict[str, Any]:
    from geoseg.sinks import read_markers

    return read_markers(store, name)


def test_a_killed_model_actor_costs_retries_not_results(tmp_path: Path) -> None:
    """ray.kill of the model actor mid-job: the calls it held go again to a new actor; the
    report counts them apart, forwarded / grid stays 1.00, and the output equals the reference."""
    import geoseg.pipeline as pipeline

    src = write_raster(tmp_path / "big.tif", water_scene((1800, 1800), seed=5), descriptions=S2)
    out = tmp_path / "o.zarr"
    spec = _pipeline_spec(src, out)
    model = _tiny_unet(tmp_path)
    spec = spec.model_copy(update={"model": model})
    killed: dict[str, Any] = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pool = pipeline._POOL["pool"]
            if pool is not None and pool.actors and len(done_blocks(out, "big")) >= 2:
                killed["done_before"] = len(done_blocks(out, "big"))
                ray.kill(pool.actors[0], no_restart=False)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = run_job(spec)
    thread.join()
    assert report.ok, report.summary()
    (res,) = report.scenes
    assert "done_before" in killed and killed["done_before"] < res.blocks_total, "the kill came after the job"
    assert res.patches_forwarded == res.grid_patches, "forwarded / grid = 1.00: failed calls counted apart"
    assert res.patches_retried > 0 and res.actor_failures >= 1 and report.actors_restarted >= 1
    assert "sent again" in report.summary()
    assert np.array_equal(zarr.open_group(str(out), path="big")["mask"][:], expected(src, model, [0, 1, 2, 3], "crop"))


def _pipeline_spec(src: Path, out: Path) -> Any:
    return parse_spec({"inputs": [str(src)], "output": str(out), "model": {"name": "ndwi"}, "progress": False,
                       "block_px": 448, "max_blocks_in_flight": 2})  # fmt: skip


def test_more_workers_than_cpus_share_the_cores_and_equal_one_worker(tmp_path: Path) -> None:
    """geoseg run --workers 3 --block-size 512 on a machine of 2 CPUs completes (the actors share
    the cores, said in one line) and writes bit for bit what 1 worker writes. Fresh processes:
    each CLI starts its own private Ray sized from the machine."""
    src = write_raster(tmp_path / "s.tif", water_scene((1000, 900), seed=7), descriptions=S2)
    masks = {}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for workers in (3, 1):
        out = tmp_path / f"w{workers}.zarr"
        cmd = [sys.executable, "-m", "geoseg.cli", "run", "--input", str(src), "--model", "ndwi", "--output", str(out),
               "--workers", str(workers), "--block-size", "512", "--no-progress"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert f"on {workers} cpu worker(s)" in proc.stdout
        notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("geoseg: note:")]
        if workers > (os.cpu_count() or 1) - 1:
            assert any("share the cores" in n for n in notes), proc.stderr
        masks[workers] = zarr.open_group(str(out), path="s")["mask"][:]
    assert np.array_equal(masks[3], masks[1])


def test_a_block_size_off_the_chunk_grid_is_rounded_and_said(tmp_path: Path) -> None:
    from geoseg.plan import JobTiling

    src = write_raster(tmp_path / "s.tif", water_scene((64, 64)), descriptions=S2)
    card = resolve_card(ModelSpec(name="ndwi"))
    assert card.overlap_px == 0, "ndwi is pointwise: its card asks for no overlap"
    for block, overlap, want, note in [(600, None, 1024, True), (512, None, 512, False), (1000, 32, 1344, True), (None, 32, 1792, False)]:
        spec = _spec(src, tmp_path / "o.zarr", block_px=block, tiling={"overlap_px": overlap} if overlap is not None else {})
        tiles, text = JobTiling.of(spec, card)
        assert tiles.block_px == want and bool(text) == note, (block, overlap, text)
        if note:
            assert f"block_px {block} rounded up to {want} px" in text


def test_more_workers_than_gpus_share_the_gpus_instead_of_waiting_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    """On 2 GPUs, 3 workers each reserve 0.66 GPU: all 3 fit (a whole GPU each never would)."""
    import ray

    from geoseg import pipeline
    from geoseg.spec import parse_spec

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"GPU": 2.0, "CPU": 16.0})
    spec = parse_spec({"inputs": ["x.tif"], "output": "o.zarr", "model": {"name": "ndwi"}, "workers": 3})
    res = pipeline._resources(spec)
    assert res.use_gpu and res.workers == 3 and res.actor_options["num_gpus"] == 0.66
    assert 3 * res.actor_options["num_gpus"] <= 2
    spec = parse_spec({"inputs": ["x.tif"], "output": "o.zarr", "model": {"name": "ndwi"}, "workers": 2})
    assert pipeline._resources(spec).actor_options["num_gpus"] == 1
