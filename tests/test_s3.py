"""Object storage against a real S3 API on localhost (moto's server mode, as s3fs and zarr test
themselves): inputs and outputs as s3:// URLs give the same bytes as a local run, a killed run
resumes on the object store, exports read from and write to URLs, and each bad URL is one line
naming it and the fix, with nothing marked complete."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr

from geoseg.cli import main
from geoseg.core.grid import blocks, patch_grid
from geoseg.pipeline import run_job
from geoseg.sinks import Store, done_blocks, export_cog, export_nifti, group_status
from geoseg.spec import parse_spec
from tests.conftest import water_scene, write_raster
from tests.test_volume_pipeline import _direct_threshold, _write_case, threshold_model  # noqa: F401  (a fixture)

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

S2 = ["B02", "B03", "B04", "B08"]
_CLEAR = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free localhost port, and the standard AWS variables pointing at it
    (every geoseg process and Ray worker started after this reads them)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    saved = {k: os.environ.get(k) for k in (*env, *_CLEAR)}
    for k in _CLEAR:
        os.environ.pop(k, None)
    os.environ.update(env)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="module")
def ray_s3(s3_endpoint: str, ray_local: None) -> None:
    """The shared local Ray, restarted once so its workers inherit the S3 variables (a Ray
    started before them would not see the endpoint: on a cluster, every node's environment
    carries them)."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR", log_to_driver=False)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import s3fs

    name = f"geoseg-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return name


def _fs() -> Any:
    """A plain s3fs client for the test's own setup (uploads, deletes, downloads)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def _chunks(store: str | Path, group: str, array: str = "mask") -> dict[str, bytes]:
    """Every stored chunk of ``group/array``, key -> bytes, wherever the store lies."""
    st = Store(store)
    return {k: st.get(k) or b"" for k in st.list_prefix(f"{group}/{array}/c/")}


def _scene(tmp: Path, shape: tuple[int, int] = (600, 500), seed: int = 3) -> Path:
    return write_raster(tmp / "scene.tif", water_scene(shape, seed=seed, nodata=True), nodata=0, descriptions=S2)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_s3")
def test_geotiff_on_s3_to_zarr_on_s3_gives_the_bytes_of_a_local_run(tmp_path: Path, bucket: str) -> None:
    src = _scene(tmp_path)
    _fs().put_file(str(src), f"{bucket}/in/scene.tif")
    base = {"model": {"name": "ndwi"}, "progress": False, "block_px": 64, "write_probs": True, "stitch": "gaussian"}
    local = tmp_path / "local.zarr"
    remote = f"s3://{bucket}/runs/out.zarr"
    assert run_job(parse_spec({**base, "inputs": [str(src)], "output": str(local)})).ok
    report = run_job(parse_spec({**base, "inputs": [f"s3://{bucket}/in/scene.tif"], "output": remote}))
    assert report.ok, report.summary()
    (res,) = report.scenes
    assert res.patches_forwarded == res.grid_patches  # exactly once on S3 too
    for array in ("mask", "probs"):
        here, there = _chunks(local, "scene", array), _chunks(remote, "scene", array)
        assert here and here == there, f"{array}: chunks on S3 differ from the local run"
    assert group_status(remote, "scene") == group_status(local, "scene"), "the same fingerprint, complete"
    g = zarr.open_group(Store(remote).zarr, path="scene", mode="r")
    assert g.attrs["geoseg"]["source"] == f"s3://{bucket}/in/scene.tif"
    assert done_blocks(remote, "scene") == done_blocks(local, "scene") and len(done_blocks(local, "scene")) > 1

    # a rerun of the finished job on S3 does nothing, and never starts Ray's work
    again = run_job(parse_spec({**base, "inputs": [f"s3://{bucket}/in/scene.tif"], "output": remote}))
    assert again.ok and again.scenes[0].already


@pytest.mark.slow
@pytest.mark.usefixtures("ray_s3")
def test_resume_on_s3_redoes_only_the_missing_blocks(tmp_path: Path, bucket: str) -> None:
    src = _scene(tmp_path, (1100, 1030), seed=9)
    remote = f"s3://{bucket}/o.zarr"
    spec = parse_spec({"inputs": [str(src)], "output": remote, "model": {"name": "ndwi"}, "progress": False, "block_px": 512})
    assert run_job(spec).ok
    before = _chunks(remote, "scene")
    st = Store(remote)
    markers = st.list_prefix(".geoseg/scene/done/")
    assert len(markers) >= 4
    lost = markers[::3]  # as if the run died before these blocks finished: no marker, no chunks
    step = zarr.open_group(st.zarr, path="scene", mode="r")["mask"].chunks[0]
    fs = _fs()
    for key in lost:
        y0, x0, y1, x1 = (int(v) for v in key.rsplit("/", 1)[1].split("_")[1:])
        fs.rm_file(f"{bucket}/o.zarr/{key}")
        for cy in range(y0 // step, -(-y1 // step)):
            for cx in range(x0 // step, -(-x1 // step)):
                fs.rm_file(f"{bucket}/o.zarr/scene/mask/c/{cy}/{cx}")
    assert len(_chunks(remote, "scene")) < len(before)
    meta = json.loads(st.get("scene/zarr.json") or b"{}")
    meta["attributes"]["geoseg"]["status"] = "running"
    st.set("scene/zarr.json", json.dumps(meta).encode())
    report = run_job(spec)
    assert report.ok, report.summary()
    assert report.scenes[0].blocks_run == len(lost)
    assert _chunks(remote, "scene") == before
    assert group_status(remote, "scene")[1] == "complete"  # type: ignore[index]


@pytest.mark.slow
def test_killed_run_on_s3_resumes_and_equals_an_undisturbed_run(tmp_path: Path, bucket: str, s3_endpoint: str) -> None:
    src = write_raster(tmp_path / "big.tif", water_scene((1344, 1344), seed=5), descriptions=S2)
    local = tmp_path / "ref.zarr"
    remote = f"s3://{bucket}/killed.zarr"
    n_blocks = len(blocks(patch_grid((1344, 1344)), 448, 448))
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "--input", str(src), "--model", "ndwi", "--output", remote,
           "--block-size", "448", "--no-progress"]  # fmt: skip
    env = {**os.environ, "GEOSEG_MAX_BLOCKS_IN_FLIGHT": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(done_blocks(remote, "big")) >= 2:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray: a crash
            break
        time.sleep(0.05)
    out = proc.communicate()[0].decode()
    done_before = done_blocks(remote, "big")
    for _ in range(20):  # a write task that outlived its driver may still add its marker: let it settle
        time.sleep(1.5)
        now = done_blocks(remote, "big")
        if now == done_before:
            break
        done_before = now
    assert 2 <= len(done_before) < n_blocks, f"kill came too late or never: {len(done_before)}/{n_blocks}\n{out[-2000:]}"
    assert group_status(remote, "big")[1] == "running", "a killed run is never marked complete"  # type: ignore[index]

    args = ["--input", str(src), "--model", "ndwi", "--block-size", "448", "--no-progress"]
    rerun = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", *args, "--output", remote], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"output: {remote}" in rerun.stdout
    ref = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", *args, "--output", str(local)], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert f"{n_blocks - len(done_before)}/{n_blocks} blocks run" in rerun.stdout, rerun.stdout  # only the missing ones
    assert group_status(remote, "big")[1] == "complete"  # type: ignore[index]
    assert _chunks(remote, "big") == _chunks(local, "big")


@pytest.mark.slow
@pytest.mark.usefixtures("ray_s3")
def test_nifti_case_from_s3(tmp_path: Path, bucket: str, threshold_model: Path) -> None:  # noqa: F811
    folder = _write_case(tmp_path / "case1", np.diag([-1.0, -1.0, 2.0, 1.0]), (40, 44, 20), seed=4)
    four_d = _write_case(tmp_path / "c4", np.diag([1.0, 1.0, 1.0, 1.0]), (30, 30, 12), seed=6, four_d=True)
    fs = _fs()
    for f in folder.iterdir():
        fs.put_file(str(f), f"{bucket}/cases/case1/{f.name}")
    fs.put_file(str(four_d), f"{bucket}/cases/case.nii.gz")
    out = f"s3://{bucket}/mri.zarr"
    spec = {"model": {"file": str(threshold_model)}, "progress": False}
    inputs = [f"s3://{bucket}/cases/case1/", f"s3://{bucket}/cases/case.nii.gz"]
    report = run_job(parse_spec({**spec, "inputs": inputs, "output": out}))
    assert report.ok, report.summary()
    g = zarr.open_group(Store(out).zarr, path="case1", mode="r")
    assert np.array_equal(g["mask"][:], _direct_threshold(folder))
    assert np.array_equal(zarr.open_group(Store(out).zarr, path="case", mode="r")["mask"][:], _direct_threshold(four_d))
    local = tmp_path / "mri.zarr"
    assert run_job(parse_spec({**spec, "inputs": [str(folder), str(four_d)], "output": str(local)})).ok
    for name in ("case1", "case"):
        assert group_status(out, name) == group_status(local, name), "the same content gives the same fingerprint"
    # the NIfTI export takes its header from the input on S3, and may itself go to S3
    nii = export_nifti(out, "case1", f"s3://{bucket}/exports/case1.nii.gz")
    assert nii == f"s3://{bucket}/exports/case1.nii.gz"
    fs.get_file(f"{bucket}/exports/case1.nii.gz", str(tmp_path / "back.nii.gz"))
    import nibabel as nib

    back, src = nib.load(tmp_path / "back.nii.gz"), nib.load(next(folder.glob("*FLAIR*")))
    assert np.array_equal(back.affine, src.affine) and np.array_equal(np.asarray(back.dataobj), _direct_threshold(folder))


@pytest.mark.slow
@pytest.mark.usefixtures("ray_s3")
def test_export_from_s3_to_local_and_s3_cog(tmp_path: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = _scene(tmp_path, (300, 260))
    store = f"s3://{bucket}/exp.zarr"
    assert run_job(parse_spec({"inputs": [str(src)], "output": store, "model": {"name": "ndwi"}, "progress": False})).ok
    local = export_cog(store, "scene", tmp_path / "scene.tif")
    assert main(["export", store, "--name", "scene", "--out", f"s3://{bucket}/cogs/scene.tif"]) == 0
    assert f"wrote s3://{bucket}/cogs/scene.tif" in capsys.readouterr().out
    _fs().get_file(f"{bucket}/cogs/scene.tif", str(tmp_path / "back.tif"))
    with rasterio.open(local) as a, rasterio.open(tmp_path / "back.tif") as b, rasterio.open(src) as s:
        assert np.array_equal(a.read(), b.read())
        assert a.transform == b.transform == s.transform and a.crs == b.crs == s.crs
        mask = zarr.open_group(Store(store).zarr, path="scene", mode="r")["mask"][:]
        assert np.array_equal(a.read(1), mask)


# --- bad input: one line naming the URL and the fix, a non-zero exit, nothing marked complete --


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _run(tmp: Path, inp: str, out: str) -> list[str]:
    return ["run", "--input", inp, "--model", "ndwi", "--output", out, "--no-progress", "--on-error", "fail"]


def test_unreachable_endpoint(tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    src = _scene(tmp_path, (64, 64))
    t0 = time.monotonic()
    err = _one_line(capsys, _run(tmp_path, str(src), "s3://anybucket/o.zarr"))
    assert "s3://anybucket/o.zarr" in err and "cannot reach endpoint http://127.0.0.1:9" in err and "AWS_ENDPOINT_URL" in err
    err = _one_line(capsys, _run(tmp_path, "s3://anybucket/in.tif", str(tmp_path / "o.zarr")))
    assert "s3://anybucket/in.tif" in err and "cannot reach endpoint" in err
    assert time.monotonic() - t0 < 60, "an unreachable endpoint fails in seconds, not minutes"
    assert not (tmp_path / "o.zarr").exists()


def test_missing_credentials(tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    src = _scene(tmp_path, (64, 64))
    err = _one_line(capsys, _run(tmp_path, str(src), f"s3://{bucket}/o.zarr"))
    assert f"s3://{bucket}/o.zarr" in err and "no credentials" in err and "AWS_ACCESS_KEY_ID" in err
    err = _one_line(capsys, _run(tmp_path, f"s3://{bucket}/in.tif", str(tmp_path / "o.zarr")))
    assert f"s3://{bucket}/in.tif" in err and "no credentials" in err


def test_bucket_that_does_not_exist(tmp_path: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = _scene(tmp_path, (64, 64))
    err = _one_line(capsys, _run(tmp_path, str(src), "s3://no-such-bucket-geoseg/o.zarr"))
    assert "s3://no-such-bucket-geoseg/o.zarr" in err and "bucket 'no-such-bucket-geoseg' does not exist" in err
    assert "aws s3 mb" in err
    err = _one_line(capsys, _run(tmp_path, "s3://no-such-bucket-geoseg/in.tif", str(tmp_path / "o.zarr")))
    assert "does not exist" in err
    err = _one_line(capsys, _run(tmp_path, f"s3://{bucket}/missing.tif", str(tmp_path / "o.zarr")))
    assert f"s3://{bucket}/missing.tif: no such object" in err
    err = _one_line(capsys, ["export", f"s3://{bucket}/nothing.zarr", "--name", "x", "--out", str(tmp_path / "x.tif")])
    assert f"s3://{bucket}/nothing.zarr" in err and "no Zarr store there" in err


@pytest.mark.parametrize(("scheme", "package"), [("gs", "gcsfs"), ("az", "adlfs")])
def test_scheme_whose_library_is_missing(tmp_path: Path, scheme: str, package: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    src = _scene(tmp_path, (64, 64))
    err = _one_line(capsys, _run(tmp_path, str(src), f"{scheme}://bucket/o.zarr"))
    assert f"{scheme}://bucket/o.zarr" in err and f"pip install {package}" in err
    err = _one_line(capsys, _run(tmp_path, f"{scheme}://bucket/in.tif", str(tmp_path / "o.zarr")))
    assert f"{scheme}://bucket/in.tif" in err and f"pip install {package}" in err


@pytest.mark.parametrize("url", ["memory://o.zarr", "http://example.com/o.zarr", "ftp://host/o.zarr"])
def test_store_url_the_tasks_cannot_use(tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = _scene(tmp_path, (64, 64))
    err = _one_line(capsys, _run(tmp_path, str(src), url))
    assert err.startswith(f"geoseg: error: {url}:") and "s3://" in err and "local path" in err


def test_credentials_in_a_url_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _scene(tmp_path, (64, 64))
    err = _one_line(capsys, _run(tmp_path, str(src), "s3://KEY:SECRET@bucket/o.zarr"))
    assert "credentials in the URL" in err and "AWS_ACCESS_KEY_ID" in err


def test_input_globs_expand_in_the_bucket(tmp_path: Path, bucket: str) -> None:
    from geoseg.errors import SpecError

    src = _scene(tmp_path, (32, 32))
    fs = _fs()
    for name in ("b.tif", "a.tif", "notes.txt"):
        fs.put_file(str(src), f"{bucket}/in/{name}")
    spec = parse_spec({"inputs": [f"s3://{bucket}/in/*.tif"], "output": f"s3://{bucket}/o.zarr", "model": {"name": "ndwi"}})
    assert spec.inputs == (f"s3://{bucket}/in/a.tif", f"s3://{bucket}/in/b.tif") and spec.output == f"s3://{bucket}/o.zarr"
    with pytest.raises(SpecError, match=r"pattern 's3://.*/in/\*\.jp2' matches no object"):
        parse_spec({"inputs": [f"s3://{bucket}/in/*.jp2"], "output": str(tmp_path / "o.zarr"), "model": {"name": "ndwi"}})
