"""Peak memory of every geoseg and Ray process while the ndwi job runs on a small and a large scene.

Each scene size runs in a fresh subprocess that starts its own Ray (nothing carries over), with
the same settings (the default block: 4 x 4 Zarr chunks, 2048 px for ndwi). A background thread samples, every 0.25 s, the
driver and all its descendants (gcs_server, raylet, dashboard/runtime-env agents, task
workers, the model actor): the sum of PSS (``psutil.Process.memory_full_info().pss``, shared
pages such as the Ray object store split among the processes that map them), the sum of RSS,
and the driver's own RSS. It prints the peaks, the ratio large/small and the per-process peaks.
Nothing here asserts: it prints what it measured.

    python bench/memory.py                       # 4096 and 20000 px (the 20000 px scene: 2.3 GB on disk)
    python bench/memory.py --sizes 4096 20000 --top 12
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from _common import git_state, scene_path  # noqa: E402  (bench/ is sys.path[0] when run as a script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 1024 * 1024


def label(p: psutil.Process) -> str:
    """A readable name: Ray workers retitle themselves (ray::ModelActor, ray::IDLE, ...)."""
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    if not cmd:
        return p.name()
    first = cmd[0]
    if first.startswith("ray::"):
        return first.split()[0]
    base = os.path.basename(first)
    if base.startswith("python"):
        for arg in cmd[1:]:
            if arg.endswith(".py"):
                return f"python {os.path.basename(arg)}"
        return "python " + " ".join(cmd[1:3])
    return base


class Sampler(threading.Thread):
    """Every ``period`` s: PSS and RSS of this process and all its descendants."""

    def __init__(self, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.stop = threading.Event()
        self.me = psutil.Process()
        self.peak_pss = self.peak_rss = self.peak_driver_rss = 0
        self.peak_pss_at = 0.0
        self.peak_procs = 0
        self.samples = 0
        self.per_proc: dict[int, dict[str, Any]] = {}  # pid -> peak pss, rss, label at that peak
        self.t0 = time.perf_counter()
        self.sample_cost = 0.0
        self.series: list[tuple[float, int]] = []  # (seconds since start, PSS sum)

    def sample(self) -> None:
        t = time.perf_counter()
        procs = [self.me]
        try:
            procs += self.me.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        pss = rss = 0
        for p in procs:
            try:
                mi = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            pss += mi.pss
            rss += mi.rss
            if p.pid == self.me.pid:
                self.peak_driver_rss = max(self.peak_driver_rss, mi.rss)
            d = self.per_proc.setdefault(p.pid, {"pss": 0, "rss": 0, "label": ""})
            if mi.pss >= d["pss"]:
                d["pss"], d["label"] = mi.pss, label(p)
            d["rss"] = max(d["rss"], mi.rss)
        self.series.append((t - self.t0, pss))
        if pss > self.peak_pss:
            self.peak_pss, self.peak_pss_at = pss, t - self.t0
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_procs = max(self.peak_procs, len(procs))
        self.samples += 1
        self.sample_cost += time.perf_counter() - t

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.period)


def child(size: int, workdir: Path, block_px: int | None) -> dict[str, Any]:
    """One measurement: start Ray, run the ndwi job on one scene, report the peaks (as JSON)."""
    import ray  # noqa: PLC0415

    from geoseg.pipeline import _local_cpus, connect, release_workers, run_job  # noqa: PLC0415
    from geoseg.spec import parse_spec  # noqa: PLC0415

    scene = workdir / f"scene_{size}.tif"
    out = workdir / f"out-mem-{size}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    sampler = Sampler()
    sampler.sample()
    base_pss = sampler.peak_pss  # the driver alone, before Ray starts
    sampler.start()
    spec: dict[str, Any] = {
        "inputs": [str(scene)],
        "output": str(out),
        "model": {"name": "ndwi"},
        "progress": False,
    }
    if block_px:
        spec["block_px"] = block_px
    job = parse_spec(spec)
    t0 = time.perf_counter()
    connect(job, _local_cpus(job))  # the private Ray `geoseg run` starts, sized the same way
    ray_start = time.perf_counter() - t0
    t_job = time.perf_counter() - sampler.t0
    t0 = time.perf_counter()
    report = run_job(job)
    seconds = time.perf_counter() - t0
    time.sleep(0.5)  # one more sample or two after the last block
    sampler.stop.set()
    sampler.join()
    release_workers()
    ray.shutdown()
    shutil.rmtree(out, ignore_errors=True)
    n = report.scenes[0].grid_patches
    # the PSS sum over the job, in tenths of its duration: max of each tenth (flat = bounded)
    t_end = t_job + seconds
    tenths = [0] * 10
    for t, v in sampler.series:
        if t >= t_job:
            k = min(9, int(10 * (t - t_job) / max(seconds, 1e-9)))
            tenths[k] = max(tenths[k], v)
    return {
        "size": size,
        "ok": report.ok,
        "grid_patches": n,
        "forwarded": report.patches_forwarded,
        "seconds": seconds,
        "patches_per_s": n / seconds,
        "ray_start_s": ray_start,
        "peak_pss": sampler.peak_pss,
        "peak_pss_at_s": sampler.peak_pss_at,
        "peak_rss": sampler.peak_rss,
        "peak_driver_rss": sampler.peak_driver_rss,
        "peak_procs": sampler.peak_procs,
        "samples": sampler.samples,
        "sample_ms": 1000 * sampler.sample_cost / max(1, sampler.samples),
        "start_pss": base_pss,
        "job_tenths_pss": tenths,
        "job_window_s": [t_job, t_end],
        "per_proc": {str(k): v for k, v in sampler.per_proc.items()},
    }


def run_child(size: int, workdir: Path, block_px: int | None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(size), "--workdir", str(workdir)]
    if block_px:
        cmd += ["--block-px", str(block_px)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"size {size}: child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"size {size}: child printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[4096, 20000], help="scene edges in px, small first"
    )
    ap.add_argument("--block-px", type=int, help="spec block_px (default: 4 x 4 Zarr chunks)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"), help="scenes and outputs")
    ap.add_argument("--top", type=int, default=10, help="per-process peaks to list per size")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.block_px)), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.1f} GiB, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\ngeoseg at {git_state()}",
        flush=True,
    )
    for size in args.sizes:
        scene_path(args.workdir, size)
    results = []
    for size in args.sizes:
        print(f"running ndwi on {size}x{size} in a fresh process ...", flush=True)
        results.append(run_child(size, args.workdir, args.block_px))

    print(f"\n{'scene':>12s} {'patches':>8s} {'run s':>7s} {'patches/s':>9s} {'peak PSS sum':>13s} "
          f"{'peak RSS sum':>13s} {'driver RSS':>11s} {'procs':>6s}")  # fmt: skip
    for r in results:
        if not r["ok"] or r["forwarded"] != r["grid_patches"]:
            print(
                f"  warning: {r['size']} px run not complete or not exactly-once: {r['forwarded']}/{r['grid_patches']}"
            )
        print(
            f"{r['size']:>5d}x{r['size']:<6d} {r['grid_patches']:8d} {r['seconds']:7.1f} {r['patches_per_s']:9.1f} "
            f"{r['peak_pss'] / MiB:9.0f} MiB {r['peak_rss'] / MiB:9.0f} MiB {r['peak_driver_rss'] / MiB:7.0f} MiB "
            f"{r['peak_procs']:6d}"
        )
    print("driver alone before Ray: PSS " + ", ".join(f"{r['start_pss'] / MiB:.0f} MiB" for r in results))
    small, large = results[0], results[-1]
    print(
        f"ratio {large['size']}/{small['size']} px: peak PSS sum {large['peak_pss'] / small['peak_pss']:.3f}, "
        f"peak RSS sum {large['peak_rss'] / small['peak_rss']:.3f}, "
        f"peak driver RSS {large['peak_driver_rss'] / small['peak_driver_rss']:.3f} "
        f"(scene pixels x{(large['size'] / small['size']) ** 2:.1f})"
    )
    print("\nPSS sum during the job, max of each tenth of its duration (MiB):")
    for r in results:
        print(f"{r['size']:>6d} px: " + " ".join(f"{v / MiB:5.0f}" for v in r["job_tenths_pss"]))
    for r in results:
        print(f"\nper-process peaks, {r['size']} px ({r['samples']} samples, {r['sample_ms']:.0f} ms each):")
        procs = sorted(r["per_proc"].items(), key=lambda kv: -kv[1]["pss"])
        for pid, d in procs[: args.top]:
            print(
                f"    {pid:>8s} {d['label'][:36]:36s} PSS {d['pss'] / MiB:7.1f} MiB  RSS {d['rss'] / MiB:7.1f} MiB"
            )
        rest = procs[args.top :]
        if rest:
            print(
                f"    {'':8s} {len(rest)} more, together PSS <= {sum(d['pss'] for _, d in rest) / MiB:.1f} MiB"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
