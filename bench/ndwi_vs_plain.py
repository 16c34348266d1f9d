"""geoseg's NDWI job against the plain single-process way: rasterio read + NDWI + Zarr write.

The baseline is what a user would write without geoseg: one process, windows of the same
1792 px blocks, ``src.read`` of green and NIR (bands found by description), NDWI in numpy
(water where NDWI > 0; 255 where either band is nodata), written to a Zarr v3 array with the
same chunks (448 px) and codecs as geoseg's mask. Timed from open to the last chunk written.

geoseg runs the same scene with ``--model ndwi``:

- while running: ``run_job``'s ``run_seconds`` in a process whose Ray and model actor are up
  (a warm run), and its whole ``seconds`` (planning, store creation and finishing included);
- end to end: the CLI in a fresh process, Ray's start and the actor's included.

Ratios are baseline seconds / geoseg seconds (above 1: geoseg is faster), measured in one run.
The masks are compared pixel for pixel. Nothing here asserts a time.

    python bench/ndwi_vs_plain.py --size 20000 --repeat 2      # 3.5 min to write the scene once
    python bench/ndwi_vs_plain.py --size 8192 --profile          # per-task breakdown of a warm run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import git_state, scene_path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BLOCK = 1792
CHUNK = 448


def plain(scene: Path, out: Path) -> float:
    """The baseline: read, NDWI, write, block by block, in this process; seconds."""
    import rasterio
    import zarr
    from rasterio.windows import Window

    from geoseg.models import resolve_bands

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    with rasterio.open(scene) as src:
        green, nir = (b + 1 for b in resolve_bands(("green", "nir"), src.descriptions, src.count, str(scene)))
        h, w = src.height, src.width
        mask = zarr.create_array(str(out), shape=(h, w), chunks=(CHUNK, CHUNK), dtype="uint8", fill_value=255)
        for y0 in range(0, h, BLOCK):
            for x0 in range(0, w, BLOCK):
                win = Window(x0, y0, min(BLOCK, w - x0), min(BLOCK, h - y0))
                g, n = src.read([green, nir], window=win).astype(np.float32)
                valid = np.all(src.read_masks([green, nir], window=win) > 0, axis=0)
                total = g + n
                ndwi = np.divide(g - n, total, out=np.zeros_like(total), where=total != 0)
                labels = (ndwi > 0).astype(np.uint8)
                labels[~valid] = 255
                mask[y0 : y0 + win.height, x0 : x0 + win.width] = labels
    return time.perf_counter() - t0


def geoseg_warm(scene: Path, out: Path) -> tuple[float, float, Any]:
    """One ``run_job`` in this process (Ray and the actor already up): (run seconds, all seconds, report)."""
    from geoseg.pipeline import run_job
    from geoseg.spec import parse_spec

    shutil.rmtree(out, ignore_errors=True)
    spec = parse_spec({"inputs": [str(scene)], "output": str(out), "model": {"name": "ndwi"}, "progress": False})
    report = run_job(spec)
    if not report.ok:
        raise SystemExit(report.summary())
    return report.run_seconds, report.seconds, report


def geoseg_cli(scene: Path, out: Path) -> float:
    """``geoseg run`` in a fresh process: Ray's start, the actor, planning and finishing included."""
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "-i", str(scene), "-m", "ndwi", "-o", str(out), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    dt = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"geoseg run failed: {proc.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20000, help="scene edge in px (default 20000)")
    ap.add_argument("--repeat", type=int, default=2, help="baseline and warm geoseg runs, alternating (default 2)")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI run")
    ap.add_argument("--profile", action="store_true", help="one more warm run, broken down by Ray task")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average at start {load[0]:.2f}; geoseg at {git_state()}", flush=True)
    scene = scene_path(args.workdir, args.size)
    base_out, geo_out = args.workdir / "ndwi-plain.zarr", args.workdir / "ndwi-geoseg.zarr"
    res: dict[str, Any] = {"size": args.size, "plain_s": [], "run_s": [], "job_s": []}
    if not args.no_cli:
        res["cli_s"] = geoseg_cli(scene, geo_out)
        print(f"geoseg CLI, fresh process: {res['cli_s']:.1f} s", flush=True)
    from geoseg.pipeline import _local_cpus, connect
    from geoseg.spec import parse_spec

    spec = parse_spec({"inputs": [str(scene)], "output": str(geo_out), "model": {"name": "ndwi"}})
    connect(spec, _local_cpus(spec))  # the private Ray `geoseg run` starts, sized the same way
    first = geoseg_warm(scene, geo_out)
    print(f"geoseg first run in this process (actor start included): {first[1]:.1f} s", flush=True)
    for _ in range(args.repeat):
        res["plain_s"].append(plain(scene, base_out))
        run_s, job_s, report = geoseg_warm(scene, geo_out)
        res["run_s"].append(run_s)
        res["job_s"].append(job_s)
        print(f"plain {res['plain_s'][-1]:.1f} s; geoseg running {run_s:.1f} s, job {job_s:.1f} s", flush=True)
    import zarr

    a = zarr.open_array(str(base_out), mode="r")[:]
    b = zarr.open_group(str(geo_out), mode="r")[scene.stem]["mask"][:]
    res["pixels_differ"] = int((a != b).sum())
    plain_s = min(res["plain_s"])
    pairs = [p / r for p, r in zip(res["plain_s"], res["run_s"], strict=True)]
    print(f"\nNDWI on {args.size}x{args.size} (4 bands uint16, deflate), {report.scenes[0].grid_patches} patches")
    print(f"  paired ratios plain / geoseg running (each geoseg run against the plain run before it): "
          f"{', '.join(f'{x:.2f}' for x in pairs)}")  # fmt: skip
    print(f"  plain rasterio + numpy + zarr, best of {args.repeat}: {plain_s:.1f} s")
    print(f"  geoseg while running, best: {min(res['run_s']):.1f} s  -> ratio {plain_s / min(res['run_s']):.2f}")
    print(f"  geoseg whole job (warm Ray), best: {min(res['job_s']):.1f} s  -> ratio {plain_s / min(res['job_s']):.2f}")
    if "cli_s" in res:
        print(f"  geoseg end to end (fresh process, Ray start): {res['cli_s']:.1f} s -> ratio {plain_s / res['cli_s']:.2f}")
    print(f"  pixels that differ between the two masks: {res['pixels_differ']} of {a.size}")
    if args.profile:
        sys.path.insert(0, str(REPO / "bench"))
        from throughput import timeline_breakdown

        t0 = time.time()
        run_s, job_s, _ = geoseg_warm(scene, geo_out)
        prof = timeline_breakdown(t0, t0 + job_s)
        print(f"profile of one warm run ({run_s:.1f} s running):")
        for name, d in sorted(prof.items(), key=lambda kv: -kv[1]["sum_s"]):
            print(f"    {name:32s} n={d['count']:5d} sum {d['sum_s']:8.2f} s  busy {d['covered_s']:7.2f} s")
        res["profile"] = prof
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
