"""A simulated multi-node cluster with a GPU per worker node: one actor per GPU, spread over nodes.

Named to run last: it replaces the session's local Ray with a ``ray.cluster_utils.Cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
import zarr
from ray.cluster_utils import Cluster

from geoseg.models import ModelSpec
from geoseg.pipeline import release_workers, run_job
from geoseg.spec import parse_spec
from tests.conftest import water_scene, write_raster
from tests.test_pipeline import expected


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    release_workers()
    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        c.add_node(num_cpus=2, num_gpus=1)  # logical GPUs: the actors run torch on the CPU here
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    yield c
    release_workers()
    ray.shutdown()
    c.shutdown()


def test_one_actor_per_gpu_across_nodes_equals_reference(tmp_path: Path, cluster: Cluster) -> None:
    from ray.util.state import list_actors

    src = write_raster(tmp_path / "s.tif", water_scene((900, 700), seed=9), descriptions=["B02", "B03", "B04", "B08"])
    out = tmp_path / "o.zarr"
    report = run_job(parse_spec({"inputs": [str(src)], "output": str(out), "model": {"name": "ndwi"},
                                 "block_px": 448, "progress": False, "ray_address": cluster.address}))  # fmt: skip
    assert report.ok, report.summary()
    assert report.workers == 2, "one actor per (logical) GPU"
    assert report.device == "cpu", "no CUDA behind the logical GPUs: the report names the device really used"
    actors = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if a.class_name == "ModelActor"]
    assert len({a.node_id for a in actors}) == 2, "the two model actors must sit on two nodes"
    (scene,) = report.scenes
    assert scene.inference_ratio == 1.0
    mask = zarr.open_group(str(out), path="s", mode="r")["mask"][:]
    assert np.array_equal(mask, expected(src, ModelSpec(name="ndwi"), [1, 3], "crop"))
