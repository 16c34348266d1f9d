"""Fault tolerance, proven on a simulated 3-node cluster (``ray.cluster_utils.Cluster``).

Each fault ends with the output bit-identical to an undisturbed run (and the single-process
reference), the report counting the redone work, and the redone work bounded by the blocks the
scheduler holds in flight. Faults: a model actor killed (SIGKILL of its process), a worker
node removed, a read or write task that raises once (``geoseg._faults``, test-only), a block
that fails every retry (its scene fails in one line, the other finishes) and the driver killed
and the job rerun.

Named to run last, with test_zz_multinode: it replaces the session's local Ray with a cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import zarr
from ray.cluster_utils import Cluster

import geoseg.pipeline as pipeline
from geoseg._faults import ENV
from geoseg._tasks import n_cores
from geoseg.core.grid import blocks, patch_grid
from geoseg.models import ModelSpec
from geoseg.pipeline import release_workers, run_job
from geoseg.report import JobReport
from geoseg.sinks import REPORT_KEY, Store, done_blocks
from geoseg.spec import parse_spec
from tests.conftest import water_scene, write_raster
from tests.test_pipeline import expected

pytestmark = pytest.mark.slow

S2 = ["B02", "B03", "B04", "B08"]
SHAPE = (1400, 1400)
BLOCK = 448


class _Faults:
    """The cluster and the rules file its workers read (``$GEOSEG_TEST_FAULTS``)."""

    def __init__(self, cluster: Cluster, rules: Path) -> None:
        self.cluster, self.rules = cluster, rules

    def set(self, *rules: dict[str, Any]) -> None:
        for slot in self.rules.parent.glob(f"{self.rules.name}.*"):
            slot.unlink()
        self.rules.write_text(json.dumps(list(rules)))

    def fired(self) -> int:
        return len(list(self.rules.parent.glob(f"{self.rules.name}.*")))


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Faults]:
    release_workers()
    ray.shutdown()
    rules = tmp_path_factory.mktemp("faults") / "rules.json"
    rules.write_text("[]")
    os.environ[ENV] = str(rules)  # the nodes' workers inherit it; the rules change per test
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head plans, as in cluster/
    for _ in range(3):
        c.add_node(num_cpus=2)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    f = _Faults(c, rules)
    yield f
    f.set()
    release_workers()
    ray.shutdown()
    c.shutdown()
    os.environ.pop(ENV, None)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_raster(tmp_path_factory.mktemp("src") / "scene_q7.tif", water_scene(SHAPE, seed=11), descriptions=S2)


@pytest.fixture(scope="module")
def undisturbed(faults: _Faults, scene: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The mask of an undisturbed run on the cluster, checked against the reference once."""
    faults.set()
    out = tmp_path_factory.mktemp("clean") / "o.zarr"
    report = run_job(_spec([scene], out))
    assert report.ok, report.summary()
    assert report.workers == 3, "a CPU job: one model actor per worker node"
    assert report.blocks_retried == report.patches_retried == report.actors_restarted == 0
    assert len(report.calls_per_worker) == 3 and min(report.calls_per_worker) > 0, (
        f"one scene's calls must reach every actor: {report.calls_per_worker}"
    )
    pool = pipeline._POOL["pool"]
    assert pool is not None
    nodes = {id(node_of(faults.cluster, int(d["pid"]))) for d in pool.info}
    assert len(nodes) == 3, "the three actors sit on the three worker nodes"
    mask = _mask(out, scene)
    assert np.array_equal(mask, expected(scene, ModelSpec(name="ndwi"), [1, 3], "crop"))
    return mask


def _spec(inputs: list[Path], out: Path, **kw: Any) -> Any:
    return parse_spec({"inputs": [str(p) for p in inputs], "output": str(out), "model": {"name": "ndwi"},
                       "block_px": BLOCK, "tiling": {"overlap_px": 32}, "progress": False,
                       "max_blocks_in_flight": 3, **kw})  # fmt: skip


def _mask(out: Path, src: Path) -> np.ndarray:
    return zarr.open_group(str(out), path=src.stem, mode="r")["mask"][:]


def _n_blocks() -> int:
    return len(blocks(patch_grid(SHAPE), BLOCK, BLOCK))


def _stored_report(out: Path) -> dict[str, Any]:
    data = Store(out).get(REPORT_KEY)
    assert data is not None, "the run report is a key of the output store"
    return dict(json.loads(data))


def _assert_bounded(report: JobReport) -> None:
    """Redone work is at most the blocks in flight per failure, and exactly-once holds for the
    results. A removed node can fail more than one actor (its own, and a replacement Ray placed
    there before the node was gone): each failure redoes at most the patches in flight."""
    (res,) = report.scenes
    per_block = max(n_cores(b) for b in blocks(patch_grid(SHAPE), BLOCK, BLOCK))
    failures = max(1, res.actor_failures)
    assert report.peak_blocks_in_flight <= report.blocks_in_flight
    assert res.blocks_retried <= report.blocks_in_flight * failures, res
    assert res.patches_retried <= report.blocks_in_flight * per_block * failures, res
    assert res.patches_forwarded == res.grid_patches, "forwarded / grid = 1.00: redone patches counted apart"
    assert res.blocks_run == res.blocks_total == _n_blocks()


def node_of(cluster: Any, pid: int) -> Any:
    """The ``Cluster`` node whose raylet started process ``pid`` (no state API: it goes
    through the dashboard, which a loaded machine may not have up in time)."""
    import psutil

    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    for node in cluster.list_all_nodes():
        if any(kind == "raylet" and proc.pid in ancestors for kind, proc in node.live_processes()):
            return node
    return None


def _during(out: Path, name: str, action: Callable[[], None], after_blocks: int = 2) -> dict[str, Any]:
    """Run ``action`` once ``after_blocks`` blocks are written (in a thread, while the job runs)."""
    seen: dict[str, Any] = {}

    def watch() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pool = pipeline._POOL["pool"]
            if pool is not None and pool.info and len(done_blocks(out, name)) >= after_blocks:
                seen["done_before"] = len(done_blocks(out, name))
                action()
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    seen["thread"] = t
    return seen


def test_a_model_actor_killed_mid_run(faults: _Faults, scene: Path, undisturbed: np.ndarray, tmp_path: Path) -> None:
    """SIGKILL of a model actor's process: its calls go to a new actor, counted apart."""
    faults.set()
    out = tmp_path / "o.zarr"

    def kill() -> None:
        pool = pipeline._POOL["pool"]
        assert pool is not None
        os.kill(int(pool.info[0]["pid"]), signal.SIGKILL)

    seen = _during(out, scene.stem, kill)
    report = run_job(_spec([scene], out))
    seen["thread"].join()
    assert report.ok, report.summary()
    assert seen.get("done_before", _n_blocks()) < _n_blocks(), "the kill came after the job"
    (res,) = report.scenes
    assert report.actors_restarted >= 1 and res.restarts >= 1 and res.patches_retried > 0, res
    _assert_bounded(report)
    assert np.array_equal(_mask(out, scene), undisturbed)
    stored = _stored_report(out)
    assert stored["actors_restarted"] == report.actors_restarted
    assert stored["inputs"][0]["restarts"] == res.restarts and stored["inputs"][0]["patches_retried"] == res.patches_retried


def test_a_worker_node_removed_mid_run(faults: _Faults, scene: Path, undisturbed: np.ndarray, tmp_path: Path) -> None:
    """A worker node (with a model actor, tasks and objects on it) goes away: its actor is
    replaced on another node, lost patches and predictions are read and answered again."""
    faults.set()
    out = tmp_path / "o.zarr"
    removed: list[str] = []

    def remove() -> None:
        pool = pipeline._POOL["pool"]
        assert pool is not None
        node = node_of(faults.cluster, int(pool.info[0]["pid"]))
        assert node is not None and node is not faults.cluster.head_node
        faults.cluster.remove_node(node, allow_graceful=False)
        removed.append(node.node_id)

    seen = _during(out, scene.stem, remove)
    try:
        report = run_job(_spec([scene], out))
    finally:
        seen["thread"].join()
        faults.cluster.add_node(num_cpus=2)  # as an autoscaler would: the next tests have 3 nodes again
        faults.cluster.wait_for_nodes()
    assert removed and seen["done_before"] < _n_blocks(), "the node went after the job"
    assert report.ok, report.summary()
    (res,) = report.scenes
    assert report.actors_restarted >= 1 and res.patches_retried > 0, res
    _assert_bounded(report)
    assert np.array_equal(_mask(out, scene), undisturbed)


@pytest.mark.parametrize("point", ["read", "write"])
def test_a_task_that_raises_once_is_retried(
    faults: _Faults, scene: Path, undisturbed: np.ndarray, tmp_path: Path, point: str
) -> None:
    faults.set({"point": point, "match": scene.stem, "times": 1})
    out = tmp_path / "o.zarr"
    report = run_job(_spec([scene], out))
    assert report.ok, report.summary()
    assert faults.fired() == 1, "the fault fired once"
    (res,) = report.scenes
    assert res.blocks_retried == 1 and report.actors_restarted == 0, res
    _assert_bounded(report)
    assert np.array_equal(_mask(out, scene), undisturbed)
    assert _stored_report(out)["inputs"][0]["blocks_retried"] == 1
    assert "1 block tasks redone" in report.summary()


def test_a_block_failing_every_retry_fails_its_scene_not_the_job(
    faults: _Faults, scene: Path, undisturbed: np.ndarray, tmp_path: Path
) -> None:
    """`geoseg run --address CLUSTER --retries 1`: the scene whose block write always fails is
    reported in one line after 2 attempts; the other scene completes; exit status 1."""
    bad = write_raster(tmp_path / "bad_q7.tif", water_scene((500, 500), seed=3), descriptions=S2)
    faults.set({"point": "write", "match": "bad_q7/", "times": 1000})
    out = tmp_path / "o.zarr"
    cmd = [sys.executable, "-m", "geoseg", "run", "--input", str(scene), "--input", str(bad), "--model", "ndwi",
           "--output", str(out), "--block-size", str(BLOCK), "--overlap", "32", "--retries", "1", "--no-progress",
           "--address", faults.cluster.address]  # fmt: skip
    release_workers()  # this process's actors would take the CPUs the CLI's driver needs
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("geoseg: error:")]
    assert len(errors) == 1, proc.stderr
    assert "bad_q7.tif" in errors[0] and "injected write fault" in errors[0] and "after 2 attempts" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "1/2 inputs complete" in proc.stdout
    assert np.array_equal(_mask(out, scene), undisturbed)
    stored = _stored_report(out)
    assert [i["status"] for i in stored["inputs"]] == ["complete", "failed"] and not stored["ok"]
    assert zarr.open_group(str(out), path="bad_q7", mode="r").attrs["geoseg"]["status"] != "complete"


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(Path(__file__).parents[1])}


def test_the_driver_killed_and_the_job_rerun(faults: _Faults, scene: Path, undisturbed: np.ndarray, tmp_path: Path) -> None:
    """The driver (`geoseg run --address`) is killed mid-run; its actors and tasks die with it.
    A rerun skips the blocks marked done and redoes only the rest."""
    faults.set()
    out = tmp_path / "o.zarr"
    cmd = [sys.executable, "-m", "geoseg", "run", "--input", str(scene), "--model", "ndwi", "--output", str(out),
           "--block-size", str(BLOCK), "--overlap", "32", "--no-progress", "--address", faults.cluster.address]  # fmt: skip
    env = {**_env(), "GEOSEG_MAX_BLOCKS_IN_FLIGHT": "1"}
    release_workers()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(done_blocks(out, scene.stem)) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    done_before = done_blocks(out, scene.stem)
    assert 2 <= len(done_before) < _n_blocks(), f"the kill came too late or never: {len(done_before)}/{_n_blocks()}"
    assert zarr.open_group(str(out), path=scene.stem, mode="r").attrs["geoseg"]["status"] == "running"
    report = run_job(_spec([scene], out))
    assert report.ok, report.summary()
    (res,) = report.scenes
    assert res.blocks_run == _n_blocks() - len(done_before), "only the unfinished blocks are redone"
    assert res.patches_forwarded == res.patches_needed < res.grid_patches
    assert np.array_equal(_mask(out, scene), undisturbed)
