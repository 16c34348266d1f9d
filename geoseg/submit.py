"""Submit a job spec to a Ray cluster with Ray Jobs (``ray job submit``), safely.

What travels to the cluster is the spec alone, with every path made absolute: never the
spec's folder (which may hold old output stores), and never a relative output that the job
would resolve inside Ray's copy of the working directory, out of the user's sight. A remote
cluster cannot see the client's folders, so there relative paths in the spec are refused
with the reason; absolute paths (a shared file system) pass as they are.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from geoseg.errors import SpecError
from geoseg.spec import load_spec, read_yaml

__all__ = ["submit", "job_address", "is_local_address"]


def job_address(address: str | None) -> str:
    """The Ray Jobs address: ``--address``, else ``RAY_API_SERVER_ADDRESS`` or ``RAY_ADDRESS``.

    Raises:
        SpecError: none given, or a GCS address (``host:6379``) where Ray Jobs wants the
            dashboard's ``http://host:8265``.
    """
    value = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not value:
        raise SpecError(
            "submit: no cluster named; give --address http://HEAD:8265 (the Ray dashboard) or set RAY_ADDRESS"
        )
    if "://" not in value:
        raise SpecError(
            f"submit: address {value!r} is not a Ray Jobs address; give the dashboard's http://HOST:8265 "
            "(not the GCS port 6379)"
        )
    return value


def is_local_address(address: str) -> bool:
    """Whether the cluster's head is this machine (its nodes then see this machine's paths)."""
    host = urlparse(address).hostname or ""
    if host in ("localhost", "", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _relative_paths(data: Any) -> list[str]:
    """The spec's paths written relative (inputs, output, model files)."""
    if not isinstance(data, dict):
        return []
    paths: list[str] = []
    inputs = data.get("inputs")
    paths += [str(p) for p in ([inputs] if isinstance(inputs, str) else inputs or [])]
    if data.get("output"):
        paths.append(str(data["output"]))
    model = data.get("model") or {}
    if isinstance(model, dict):
        paths += [str(model[k]) for k in ("checkpoint", "card", "file") if model.get(k)]
    return [p for p in paths if "://" not in p and not os.path.isabs(os.path.expanduser(p))]


def _staged_spec(spec_path: Path) -> dict[str, Any]:
    """The spec as the cluster must see it: validated, every path absolute, globs kept."""
    raw = read_yaml(spec_path, "spec")
    load_spec(spec_path)  # validates every field, and that globs match, before anything is sent
    base = spec_path.resolve().parent
    data = dict(raw)

    def fix(p: str) -> str:
        return p if "://" in p or os.path.isabs(os.path.expanduser(p)) else str(base / p)

    inputs = data.get("inputs") or []
    data["inputs"] = [fix(str(p)) for p in ([inputs] if isinstance(inputs, str) else inputs)]
    data["output"] = fix(str(data["output"]))
    model = dict(data.get("model") or {})
    for key in ("checkpoint", "card", "file"):
        if model.get(key):
            model[key] = fix(str(model[key]))
    data["model"] = model
    return data


def _cluster_python(address: str) -> str:
    """The interpreter the job runs with: ``GEOSEG_CLUSTER_PYTHON``, else this one for a cluster
    on this machine (its nodes need not have the venv on PATH), else ``python`` on the head."""
    return os.environ.get("GEOSEG_CLUSTER_PYTHON") or (sys.executable if is_local_address(address) else "python")


def submit(spec_path: str | os.PathLike[str], address: str | None = None, run_args: Sequence[str] = ()) -> int:
    """``ray job submit`` of ``geoseg run SPEC`` to the cluster at ``address``; returns its exit code.

    Only a copy of the spec (paths made absolute) is uploaded as the job's working directory.

    Raises:
        SpecError: a bad spec, no address, or relative paths for a remote cluster.
    """
    spec = Path(spec_path)
    target = job_address(address)
    raw = read_yaml(spec, "spec")
    relative = _relative_paths(raw)
    if relative and not is_local_address(target):
        raise SpecError(
            f"{spec}: relative paths {relative[:3]} cannot be submitted to the remote cluster at {target}: the job "
            "would resolve them in Ray's copy of the working directory and its output would stay there; give "
            "absolute paths that every node can read and write (a shared file system)"
        )
    data = _staged_spec(spec)
    with tempfile.TemporaryDirectory(prefix="geoseg-submit-") as staging:
        (Path(staging) / "job.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        cmd = [
            sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", target,
            "--working-dir", staging, "--", _cluster_python(target), "-m", "geoseg.cli", "run", "job.yaml", "--no-progress",
            *run_args,
        ]  # fmt: skip
        print(f"geoseg: submitting {spec} to {target}: output {data['output']}", file=sys.stderr, flush=True)
        return subprocess.run(cmd).returncode
