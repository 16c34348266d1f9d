"""The same job to local disk and to an S3 object store, in one run: the cost of object storage.

Three ways of one NDWI job on a generated scene, in one process whose Ray is started once:

- ``local``: GeoTIFF on local disk, Zarr store on local disk;
- ``s3-out``: GeoTIFF on local disk, Zarr store on S3 (chunks, markers and status as objects);
- ``s3``: GeoTIFF on S3 (read through GDAL's /vsis3/), Zarr store on S3.

S3 is moto's server on localhost unless ``--endpoint`` names another (credentials then come
from the usual AWS_* variables). moto keeps objects in memory in this process and serves them
over HTTP on localhost, so the ratio measures what the object-store path costs geoseg (HTTP
requests, no rename, listings for markers), not a network. Each way runs ``--repeat`` times,
interleaved; the best of each is shown. Ratios are S3 seconds / local seconds (above 1: S3 is
slower). The stores' chunks are compared byte for byte. Nothing here asserts a time.

    python bench/object_store.py --size 4096 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _common import git_state, scene_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _start_moto() -> Any:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_EC2_METADATA_DISABLED="true",
    )  # fmt: skip
    return server


def _local_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _s3_bytes(fs: Any, url: str) -> tuple[int, int]:
    sizes = fs.du(url, total=False)
    return len(sizes), sum(sizes.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4096, help="scene edge in px (default 4096)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--block-px", type=int, default=None, help="block edge (default: geoseg's, 4 chunks)")
    ap.add_argument("--endpoint", help="an S3 endpoint to use instead of moto (AWS_* credentials from the environment)")
    ap.add_argument("--bucket", help="an existing bucket at --endpoint (default: a new one)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    args = ap.parse_args()

    print(f"geoseg {git_state()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    server = None
    if args.endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    else:
        server = _start_moto()
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    bucket = args.bucket or f"geoseg-bench-{uuid.uuid4().hex[:8]}"
    if not args.bucket:
        fs.mkdir(bucket)
    args.workdir.mkdir(parents=True, exist_ok=True)
    scene = scene_path(args.workdir, args.size)
    remote_scene = f"s3://{bucket}/scenes/{scene.name}"
    fs.put_file(str(scene), remote_scene)
    print(f"scene {scene} ({scene.stat().st_size / 1e6:.1f} MB), also at {remote_scene}; S3 at {os.environ['AWS_ENDPOINT_URL']}")

    from geoseg.pipeline import run_job
    from geoseg.sinks import Store
    from geoseg.spec import parse_spec

    ways = {"local": (str(scene), "local"), "s3-out": (str(scene), "s3"), "s3": (remote_scene, "s3")}
    best: dict[str, tuple[float, float]] = {}
    written: dict[str, tuple[int, int]] = {}
    chunks: dict[str, dict[str, bytes]] = {}
    for rep in range(args.repeat + 1):  # run 0 warms up Ray, GDAL and the connection pools: not counted
        for way, (inp, where) in ways.items():
            tag = f"{way}-{rep}"
            out = str(args.workdir / f"object_store_{tag}.zarr") if where == "local" else f"s3://{bucket}/runs/{tag}.zarr"
            if where == "local":
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            data = {"inputs": [inp], "output": out, "model": {"name": "ndwi"}, "progress": False, "workers": 1}
            if args.block_px:
                data["block_px"] = args.block_px
            t0 = time.perf_counter()
            report = run_job(parse_spec(data))
            wall = time.perf_counter() - t0
            if not report.ok:
                raise SystemExit(f"{way}: {report.summary()}")
            if rep == 0:
                continue
            print(f"  {way:7s} run {rep}: {wall:6.2f} s whole, {report.run_seconds:6.2f} s running", flush=True)
            prev = best.get(way)
            if prev is None or wall < prev[0]:
                best[way] = (wall, report.run_seconds)
            if rep == 1:
                name = scene.stem
                st = Store(out)
                chunks[way] = {k: st.get(k) or b"" for k in st.list_prefix(f"{name}/mask/c/")}
                written[way] = _local_bytes(Path(out)) if where == "local" else _s3_bytes(fs, out)
    same = all(chunks[w] == chunks["local"] for w in ways)
    base_wall, base_run = best["local"]
    print()
    print(f"{'way':8s} {'whole s':>8s} {'running s':>10s} {'ratio (whole)':>14s} {'ratio (running)':>16s} {'objects':>8s} {'MB written':>11s}")
    for way in ways:
        wall, run = best[way]
        n, size = written[way]
        print(f"{way:8s} {wall:8.2f} {run:10.2f} {wall / base_wall:14.2f} {run / base_run:16.2f} {n:8d} {size / 1e6:11.2f}")
    print(f"\nmask chunks identical on local disk and S3: {same}")
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
