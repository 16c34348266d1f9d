"""The cluster recipes in cluster/ parse and carry what makes them start and stay safe: a CPU
head and autoscaled GPU workers, token authentication on, the dashboard on localhost only,
the RayJob's teardown and retry bound, the runtime_env's pins equal to what geoseg is tested
with. ``kubectl apply --dry-run=client`` where kubectl and an API server are there."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
KUBE = ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml"]


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def _one(name: str, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(name) if d["kind"] == kind]
    return doc


def _check_raycluster_spec(spec: dict[str, Any]) -> None:
    assert spec["authOptions"]["mode"] == "token", "Ray token authentication must be on"
    assert spec["rayVersion"] == version("ray"), "the image's Ray must be the Ray geoseg is tested with"
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head plans and coordinates: no work on it"
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1", "the dashboard must not listen on the network"
    (head_c,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_c["resources"].get("limits", {}), "a CPU head"
    (gpu,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == "gpu"]
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    (worker_c,) = gpu["template"]["spec"]["containers"]
    assert worker_c["resources"]["limits"]["nvidia.com/gpu"] == 1, "one GPU per worker pod: one actor each"
    assert worker_c["image"] == head_c["image"], "every node runs the same image"


def test_kuberay_raycluster() -> None:
    rc = _one("kuberay-raycluster.yaml", "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    _check_raycluster_spec(rc["spec"])
    assert rc["spec"]["enableInTreeAutoscaling"] is True


def test_kuberay_rayjob() -> None:
    job = _one("kuberay-rayjob.yaml", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1
    assert spec["submissionMode"] == "SidecarMode", "the submitter must reach a localhost-only dashboard"
    assert spec["entrypoint"].startswith("python -m geoseg run /spec/")
    _check_raycluster_spec(spec["rayClusterSpec"])
    cm = _one("kuberay-rayjob.yaml", "ConfigMap")
    from geoseg.spec import JobSpec

    data = yaml.safe_load(cm["data"]["job.yaml"])
    assert set(data) <= set(JobSpec.model_fields), "the job spec it ships names only spec fields"
    volumes = {v["name"]: v for v in spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == cm["metadata"]["name"]


def test_cluster_launcher() -> None:
    cfg = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "a CPU head that takes no work"
    (gpu,) = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= cfg["max_workers"], "autoscaling bounds"
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "RAY_AUTH_MODE=token" in start
    assert all("RAY_AUTH_MODE=token" in c for c in cfg["worker_start_ray_commands"] if c.startswith(("ray start", "RAY")))
    assert "~/.ray/auth_token" in cfg["file_mounts"], "every node needs the cluster's token"


def test_runtime_env_pins_what_geoseg_is_tested_with() -> None:
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    pins = dict(p.split(" ")[0].split("==") for p in env["pip"]["packages"])
    text = (CLUSTER.parent / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    deps = [re.split(r"[<>=\[ ]", d.strip().strip('",'))[0] for d in block.splitlines() if d.strip().strip('",')]
    for dist in deps:
        if dist == "ray":
            assert "ray" not in pins, "Ray is the cluster's own: a per-job Ray would not match the cluster"
            continue
        assert dist in pins or dist.lower() in {k.lower() for k in pins}, f"runtime_env.yaml does not pin {dist}"
    for dist, pinned in pins.items():
        if dist != "geoseg":
            assert version(dist) == pinned, f"{dist}: runtime_env pins {pinned}, geoseg is tested with {version(dist)}"


def test_local_multinode_recipe_is_token_auth_on_localhost() -> None:
    text = (CLUSTER / "local-multinode.sh").read_text()
    assert "export RAY_AUTH_MODE=token" in text
    assert "--dashboard-host 127.0.0.1" in text
    proc = subprocess.run(["bash", "-n", str(CLUSTER / "local-multinode.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", KUBE)
def test_kubectl_dry_run(name: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "apply", "--dry-run=client", "--validate=false", "--request-timeout=5s",
                           "-f", str(CLUSTER / name)], capture_output=True, text=True, timeout=60)  # fmt: skip
    if proc.returncode != 0 and ("connection refused" in proc.stderr or "unable to recognize" in proc.stderr
                                 or "no matches for kind" in proc.stderr):  # fmt: skip
        pytest.skip(f"kubectl needs an API server with the KubeRay CRDs to resolve RayCluster/RayJob: {proc.stderr.splitlines()[-1][:160]}")
    assert proc.returncode == 0, proc.stderr
