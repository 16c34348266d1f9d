"""Invariant 8: a run killed mid-job resumes, redoing only unfinished blocks, never half-marked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from geoseg.core.grid import blocks, patch_grid
from geoseg.models import ModelSpec
from geoseg.pipeline import run_job
from geoseg.sinks import done_blocks
from geoseg.spec import parse_spec
from tests.conftest import water_scene, write_raster
from tests.test_pipeline import expected

pytestmark = pytest.mark.usefixtures("ray_local")


def test_killed_run_resumes_only_unfinished_blocks(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "big.tif", water_scene((1800, 1800), seed=5), descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "o.zarr"
    n_blocks = len(blocks(patch_grid((1800, 1800)), 448, 448))
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "--input", str(src), "--model", "ndwi", "--output", str(out),
           "--block-size", "448", "--overlap", "32", "--no-progress"]  # fmt: skip
    env = {**os.environ, "GEOSEG_MAX_BLOCKS_IN_FLIGHT": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(done_blocks(out, "big")) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started: a crash
            break
        time.sleep(0.02)
    proc.wait()
    done_before = done_blocks(out, "big")
    assert 3 <= len(done_before) < n_blocks, f"kill came too late or never: {len(done_before)}/{n_blocks}"
    g = zarr.open_group(str(out), path="big", mode="r")
    assert g.attrs["geoseg"]["status"] == "running", "a killed run must not be marked complete"

    spec = parse_spec({"inputs": [str(src)], "output": str(out), "model": {"name": "ndwi"}, "block_px": 448, "progress": False,
                       "tiling": {"overlap_px": 32}})  # fmt: skip
    report = run_job(spec)
    assert report.ok, report.summary()
    (scene,) = report.scenes
    assert scene.blocks_run == n_blocks - len(done_before)
    assert scene.patches_forwarded == scene.patches_needed < len(patch_grid((1800, 1800)))
    g = zarr.open_group(str(out), path="big", mode="r")
    assert g.attrs["geoseg"]["status"] == "complete"
    assert np.array_equal(g["mask"][:], expected(src, ModelSpec(name="ndwi"), [1, 3], "crop"))


def test_store_of_another_job_is_refused(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", water_scene((300, 300)), descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "o.zarr"
    base = {"inputs": [str(src)], "output": str(out), "model": {"name": "ndwi"}, "progress": False}
    assert run_job(parse_spec(base)).ok
    other = {**base, "model": {"name": "ndwi", "params": {"threshold": 0.2}}}
    report = run_job(parse_spec(other))
    assert not report.ok
    assert "written by a different job" in report.scenes[0].error and "--overwrite" in report.scenes[0].error
    assert run_job(parse_spec({**other, "overwrite": True})).ok
