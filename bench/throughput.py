"""End-to-end patches/s of geoseg against the bare model on the same patches, in one process.

For each model (``ndwi``, a random-weight U-Net, or both) and one generated 4-band scene:

- bare model: the whole scene read into memory, exactly the grid's patches cut out
  (``patch_grid(shape)``, default ``Tiling(256, 32)``), normalised as the card says; then ONLY
  the forward passes ``model(x)`` are timed, in batches of 16, under ``torch.inference_mode``
  with ``torch.set_num_threads(os.cpu_count())``. By default the bare model is optimised for the
  CPU as geoseg's Predictor does it (``geoseg.infer.optimise_for_cpu``: BatchNorm folded,
  ``channels_last``), so the ratio is the pipeline's cost alone; ``--bare as-loaded`` times the
  model as ``load_model`` returns it instead. The other kind is timed once too, for reference.
- cold CLI: ``python -m geoseg.cli run ...`` in a subprocess, once (Ray start, actor start and
  weight loading included).
- geoseg: ``ray.init(num_cpus=os.cpu_count())`` (timed apart, as "Ray start"), then
  ``run_job`` timed: the first run (actor start + weight loading included), then warm runs
  with the same actors. Every run writes a fresh output store.

Patches/s is always grid patches / seconds, and the ratios geoseg/bare come from this one run.
Warm geoseg runs and bare passes alternate; the headline ratio pairs each warm run with the bare
pass right after it (median over the pairs), so that a change in background load between
variants does not masquerade as a difference. The table also gives the cores that other
processes used in each phase. Nothing here asserts a time: it prints what it measured.

    python bench/throughput.py --model both --repeat 5
    python bench/throughput.py --model unet --variant batch_size=20 --variant block_px=1792 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import git_state, scene_path, unet_bench_card  # noqa: E402  (bench/ is sys.path[0] when run as a script)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geoseg.core.grid import Tiling, patch_grid  # noqa: E402
from geoseg.core.stitch import extract_patches  # noqa: E402
from geoseg.infer import optimise_for_cpu  # noqa: E402
from geoseg.models import (  # noqa: E402
    ModelSpec,
    build_model,
    load_model,
    resolve_bands,
    save_checkpoint,  # noqa: E402
)
from geoseg.sources import open_raster, read_window  # noqa: E402

UNET_CARD = unet_bench_card()
DEFAULT_SIZE = {"ndwi": 4096, "unet": 2048}
BARE_BATCH = 16
SPEC_KEYS = {  # spec fields a --variant may set, and how to read their values
    "batch_size": int,
    "block_px": int,
    "workers": int,
    "threads_per_worker": int,
    "cpus_per_worker": float,
    "max_blocks_in_flight": int,
}


# ---------------------------------------------------------------------------------------------
# Inputs


def model_section(model: str, workdir: Path) -> dict[str, Any]:
    if model == "ndwi":
        return {"name": "ndwi"}
    ckpt = workdir / "unet-bench.pt"
    if not ckpt.exists():
        torch.manual_seed(0)
        save_checkpoint(ckpt, build_model(UNET_CARD), UNET_CARD)
    return {"checkpoint": str(ckpt)}


# ---------------------------------------------------------------------------------------------
# What else used the CPU while we measured


class OtherLoad:
    """Cores that everything outside this benchmark's process tree kept busy between ``start()``
    and ``stop()``, on average: the whole machine's busy CPU time (``/proc/stat``: user, nice,
    system, irq, softirq, steal) less this process tree's own (its live processes, the ones it
    started meanwhile, and the children it waited for, such as the cold CLI). Short-lived
    processes of other jobs count too, since the machine-wide figure sees them."""

    def __init__(self) -> None:
        import psutil  # noqa: PLC0415

        self.psutil = psutil
        self.me = psutil.Process()
        self.before: dict[int, float] = {}
        self.t0 = self.busy0 = self.reaped0 = 0.0

    def _busy(self) -> float:
        ct = self.psutil.cpu_times()
        return sum(getattr(ct, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))

    def _reaped(self) -> float:
        import resource  # noqa: PLC0415

        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def _ours(self) -> dict[int, float]:
        out = {}
        try:
            procs = [self.me, *self.me.children(recursive=True)]
        except self.psutil.NoSuchProcess:
            procs = [self.me]
        for p in procs:
            try:
                ct = p.cpu_times()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                continue
            out[p.pid] = ct.user + ct.system
        return out

    def start(self) -> None:
        self.before, self.reaped0 = self._ours(), self._reaped()
        self.busy0, self.t0 = self._busy(), time.perf_counter()

    def stop(self) -> float:
        busy, wall = self._busy() - self.busy0, time.perf_counter() - self.t0
        after = self._ours()
        ours = sum(t - self.before.get(pid, 0.0) for pid, t in after.items())
        ours += self._reaped() - self.reaped0
        return max(0.0, busy - ours) / wall if wall > 0 else 0.0


LOAD = OtherLoad()


def measured(fn: Any, *a: Any) -> tuple[Any, float]:
    """``fn(*a)`` and the average cores other processes used meanwhile."""
    LOAD.start()
    out = fn(*a)
    return out, LOAD.stop()


# ---------------------------------------------------------------------------------------------
# Bare model


class Bare:
    """The model alone on the scene's grid patches, already in memory and normalised."""

    def __init__(self, model: str, scene: Path, workdir: Path, optimised: bool) -> None:
        torch.set_num_threads(os.cpu_count() or 1)
        section = model_section(model, workdir)
        spec = ModelSpec(name=section.get("name"), checkpoint=section.get("checkpoint"))
        self.model, card = load_model(spec)
        self.model.eval()
        self.channels_last = optimised and optimise_for_cpu(self.model)
        self.kind = "optimised as geoseg does" if optimised else "as loaded"
        info = open_raster(scene)
        bands = resolve_bands(card.bands, info.descriptions, info.count, info.path)
        h, w = info.shape_yx
        pixels, _ = read_window(info, (0, 0, h, w), bands)
        grid = patch_grid(info.shape_yx, Tiling(256, 32))
        ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
        patches = extract_patches(pixels, (0, 0), grid, ids).astype(np.float32)
        del pixels
        norm = card.normalisation
        if norm.kind == "affine":
            off = np.asarray(norm.offset, np.float32).reshape(1, -1, 1, 1)
            scl = np.asarray(norm.scale, np.float32).reshape(1, -1, 1, 1)
            patches = (patches - off) / scl
        self.x = torch.from_numpy(np.ascontiguousarray(patches))
        if self.channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.n = len(ids)
        self.threads = torch.get_num_threads()

    @torch.inference_mode()
    def run(self) -> float:
        """Seconds for the forward passes over every patch, in batches of 16."""
        t0 = time.perf_counter()
        for k in range(0, self.n, BARE_BATCH):
            self.model(self.x[k : k + BARE_BATCH])
        return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# geoseg


def base_spec(model: str, scene: Path, out: Path, workdir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": [str(scene)],
        "output": str(out),
        "model": model_section(model, workdir),
        "progress": False,
        **overrides,
    }


def forward_work(report: Any) -> tuple[int, int]:
    """(patches the actors really pushed through the model, grid patches), from the run's report:
    the scheduler packs blocks into whole batches, so only the job's last batch is padded."""
    grid_n = sum(s.grid_patches for s in report.scenes)
    return report.patches_forwarded - sum(s.patches_zero for s in report.scenes) + report.patches_padded, grid_n


def run_geoseg(
    model: str, scene: Path, workdir: Path, overrides: dict[str, Any], tag: str
) -> tuple[float, Any]:
    from geoseg.pipeline import run_job  # noqa: PLC0415
    from geoseg.spec import parse_spec  # noqa: PLC0415

    out = workdir / f"out-{tag}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    spec = parse_spec(base_spec(model, scene, out, workdir, overrides))
    t0 = time.perf_counter()
    report = run_job(spec)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if not report.ok:
        raise SystemExit(f"geoseg run failed: {report.summary()}")
    return dt, report


def cold_cli(model: str, scene: Path, workdir: Path) -> float:
    """Wall time of ``python -m geoseg.cli run`` in a fresh process that starts its own Ray."""
    out = workdir / "out-cli.zarr"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "geoseg.cli",
        "run",
        "--input",
        str(scene),
        "--output",
        str(out),
        "--no-progress",
    ]
    m = model_section(model, workdir)
    cmd += ["--model", m["name"]] if "name" in m else ["--checkpoint", m["checkpoint"]]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"cold CLI failed ({proc.returncode}): {proc.stderr.strip()}")
    return dt


# ---------------------------------------------------------------------------------------------
# Profile: where a warm run spends its time, from Ray's task events


def timeline_breakdown(t_start: float, t_end: float) -> dict[str, dict[str, float]]:
    """Per task/method name, over tasks that started in [t_start, t_end] (epoch seconds):
    count, summed execution seconds, and seconds of the run's wall time at least one ran."""
    import ray  # noqa: PLC0415

    events = ray.timeline()
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for ev in events:
        if ev.get("ph") != "X" or "dur" not in ev:
            continue
        name = str(ev.get("name", ""))
        if name.startswith("task::") or ":" in name:
            continue  # the sub-phases (task::x, task:deserialize_arguments ...) ride inside the span
        start = ev["ts"] / 1e6
        if t_start <= start <= t_end:
            spans[name].append((start, start + ev["dur"] / 1e6))
    out: dict[str, dict[str, float]] = {}
    for name, iv in spans.items():
        iv.sort()
        busy, cur_s, cur_e = 0.0, iv[0][0], iv[0][1]
        for s, e in iv[1:]:
            if s > cur_e:
                busy += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        busy += cur_e - cur_s
        out[name] = {
            "count": len(iv),
            "sum_s": sum(e - s for s, e in iv),
            "covered_s": busy,
            "first_start": iv[0][0] - t_start,
            "last_end": max(e for _, e in iv) - t_start,
        }
    return out


class PySpy:
    """``py-spy record`` of the model actor (the pool's first actor) while one run goes on."""

    def __init__(self, out: Path) -> None:
        import ray  # noqa: PLC0415

        from geoseg.pipeline import _POOL  # noqa: PLC0415

        self.out, self.proc = out, None
        exe = Path(sys.executable).with_name("py-spy")
        pool = _POOL["pool"]
        if not exe.exists() or pool is None or not pool.actors:
            return
        pid = ray.get(pool.actors[0].describe.remote())["pid"]
        out.unlink(missing_ok=True)
        cmd = [
            str(exe),
            "record",
            "-p",
            str(pid),
            "-r",
            "100",
            "--format",
            "raw",
            "-o",
            str(out),
            "--nonblocking",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach before the run starts

    def finish(self, top: int = 12) -> list[tuple[int, str]] | None:
        """Samples per source line of geoseg (innermost geoseg frame of each stack), most first."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        self.proc.communicate(timeout=60)
        if not self.out.exists():
            return None
        counts: dict[str, int] = defaultdict(int)
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            total += int(n)
            frames = stack.split(";")
            ours = [f for f in frames if "geoseg/" in f and "_actor.py" not in f]
            where = ours[-1] if ours else frames[-1]
            counts[where] += int(n)
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(total, "all samples")] + [(n, w) for w, n in ranked]


# ---------------------------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    if text in ("", "default"):
        return "default", {}
    overrides: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in SPEC_KEYS:
            raise SystemExit(
                f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE] with KEY in {sorted(SPEC_KEYS)}"
            )
        overrides[key] = SPEC_KEYS[key](value)
    return text, overrides


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_model(
    model: str, size: int, args: argparse.Namespace, variants: list[tuple[str, dict[str, Any]]]
) -> dict:
    import ray  # noqa: PLC0415

    from geoseg.pipeline import release_workers  # noqa: PLC0415

    workdir = args.workdir
    scene = scene_path(workdir, size)
    print(f"\n=== {model}: {size}x{size} scene {scene}", flush=True)
    other = Bare(model, scene, workdir, optimised=args.bare != "optimised")
    other.run()  # warm-up: first-touch allocations, oneDNN primitive caches
    other_s = other.run()
    print(f"bare model {other.kind} (reference, once): {other_s:.2f} s", flush=True)
    del other
    bare = Bare(model, scene, workdir, optimised=args.bare == "optimised")
    bare.run()
    print(f"bare model {bare.kind}: {bare.n} grid patches, torch threads {bare.threads}", flush=True)
    loads: dict[str, list[float]] = defaultdict(list)  # phase -> cores other processes used
    s, ld = measured(bare.run)
    bare_s: list[float] = [s]
    loads["bare"].append(ld)

    cli_s = None
    if not args.no_cli:
        if ray.is_initialized():
            ray.shutdown()  # the CLI must start its own Ray, not join ours
        cli_s, ld = measured(cold_cli, model, scene, workdir)
        loads["cli"].append(ld)
        print(f"cold CLI: {cli_s:.2f} s", flush=True)

    ray_start = None
    if not ray.is_initialized():
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t0
        print(f"Ray start: {ray_start:.2f} s", flush=True)

    rows = []
    for label, overrides in variants:
        release_workers()  # each variant starts its actors afresh: its first run is a cold one
        (first_s, report), ld = measured(run_geoseg, model, scene, workdir, overrides, f"{model}-first")
        padded, grid_n = forward_work(report)
        loads[f"first {label}"].append(ld)
        assert report.patches_forwarded == grid_n, (report.patches_forwarded, grid_n)
        warm_s: list[float] = []
        paired_bare: list[float] = []  # the bare pass right after each warm run
        for _ in range(args.repeat):
            (s, _r), ld = measured(run_geoseg, model, scene, workdir, overrides, f"{model}-warm")
            warm_s.append(s)
            loads[f"warm {label}"].append(ld)
            s, ld = measured(bare.run)
            bare_s.append(s)
            paired_bare.append(s)
            loads["bare"].append(ld)
            loads[f"bare {label}"].append(ld)
        prof = None
        if args.profile:
            spy = PySpy(workdir / f"pyspy-{model}-{label.replace('=', '').replace(',', '_')}.txt")
            t0 = time.time()
            dt, _ = run_geoseg(model, scene, workdir, overrides, f"{model}-prof")
            prof = {"wall_s": dt, "tasks": timeline_breakdown(t0, t0 + dt), "pyspy": spy.finish()}
        rows.append(
            {
                "variant": label,
                "first_s": first_s,
                "warm_s": warm_s,
                "paired_bare_s": paired_bare,
                "forward_padded": padded,
                "grid_patches": grid_n,
                "profile": prof,
            }
        )
        print(f"  {label}: first {first_s:.2f} s, warm {', '.join(f'{s:.2f}' for s in warm_s)} s", flush=True)
    release_workers()
    return {
        "model": model,
        "size": size,
        "patches": bare.n,
        "bare_kind": bare.kind,
        "bare_s": bare_s,
        "other_bare_kind": "as loaded" if args.bare == "optimised" else "optimised as geoseg does",
        "other_bare_s": other_s,
        "cli_s": cli_s,
        "ray_start_s": ray_start,
        "rows": rows,
        "other_load": dict(loads),
        "worker_niceness": os.environ.get("RAY_worker_niceness", "15 (Ray default)"),
    }


def print_result(res: dict) -> None:
    n = res["patches"]
    bare_med, bare_best = med(res["bare_s"]), min(res["bare_s"])
    bare_rate = n / bare_med
    print(f"\n{res['model']} on {res['size']}x{res['size']}: {n} grid patches")
    print(f"{'what':44s} {'seconds':>9s} {'patches/s':>10s} {'/ bare':>7s}")

    loads = res["other_load"]

    def line(what: str, sec: float, phase: str | None = None) -> None:
        rate = n / sec
        ld = f"{med(loads[phase]):9.2f}" if phase in loads else ""
        print(f"{what:44s} {sec:9.3f} {rate:10.1f} {rate / bare_rate:7.3f}{ld}")

    print(f"{'':63s} other load (cores, median; Ray workers at nice {res['worker_niceness']})")
    print(f"bare = the model {res['bare_kind']}")
    line(f"bare model, median of {len(res['bare_s'])}", bare_med, "bare")
    line("bare model, best", bare_best)
    line(f"bare model {res['other_bare_kind']}, once", res["other_bare_s"])
    if res["ray_start_s"] is not None:
        print(f"{'Ray start (ray.init, not in any rate)':44s} {res['ray_start_s']:9.3f}")
    if res["cli_s"] is not None:
        # no load figure here: the CLI's own Ray processes outlive it unreaped, so they would
        # count as "other" processes
        line("cold CLI (Ray start + actor + weights)", res["cli_s"])
    for row in res["rows"]:
        v = row["variant"]
        line(f"geoseg [{v}] first run", row["first_s"], f"first {v}")
        line(f"geoseg [{v}] warm, median of {len(row['warm_s'])}", med(row["warm_s"]), f"warm {v}")
        line(f"geoseg [{v}] warm, best", min(row["warm_s"]))
        line("  bare passes paired with these, median", med(row["paired_bare_s"]), f"bare {v}")
        print(
            f"{'':4s}model work: {row['forward_padded']} patches forwarded (with padding) for "
            f"{row['grid_patches']} grid patches = {row['forward_padded'] / row['grid_patches']:.3f}"
        )
    print("ratio geoseg warm / bare model, patches/s:")
    for r in res["rows"]:
        pairs = [b / w for w, b in zip(r["warm_s"], r["paired_bare_s"], strict=True)]
        print(
            f"    [{r['variant']}] paired (each warm run / the bare pass right after it): median "
            f"{med(pairs):.3f} (each: {', '.join(f'{x:.3f}' for x in pairs)}); "
            f"medians over the whole run: {(n / med(r['warm_s'])) / bare_rate:.3f}"
        )
    for row in res["rows"]:
        prof = row["profile"]
        if not prof:
            continue
        wall = prof["wall_s"]
        print(f"profile [{row['variant']}] one warm run, {wall:.2f} s wall (Ray task events):")
        print(
            f"    {'task':28s} {'n':>4s} {'sum s':>8s} {'busy s':>8s} {'busy %':>7s} {'first':>7s} {'last':>7s}"
        )
        for name, d in sorted(prof["tasks"].items(), key=lambda kv: -kv[1]["sum_s"]):
            print(
                f"    {name:28s} {d['count']:4d} {d['sum_s']:8.3f} {d['covered_s']:8.3f} "
                f"{100 * d['covered_s'] / wall:6.1f}% {d['first_start']:7.3f} {d['last_end']:7.3f}"
            )
        if prof.get("pyspy"):
            (total, _), *lines = prof["pyspy"]
            print(
                f"  py-spy on the model actor during that run ({total} samples at 100 Hz; innermost geoseg line):"
            )
            for n_s, where in lines:
                print(f"    {100 * n_s / max(1, total):5.1f}%  {where[:110]}")


def machine() -> str:
    cpu = "?"
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), python {platform.python_version()}, "
        f"torch {torch.__version__}, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
        f"geoseg at {git_state()}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["ndwi", "unet", "both"], default="both")
    ap.add_argument("--size", type=int, help="scene edge in px (default 2048 for unet, 4096 for ndwi)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="warm runs (and bare passes) per variant (default 3)"
    )
    ap.add_argument(
        "--variant", action="append", default=[],
        help="spec overrides to compare, e.g. batch_size=20,block_px=1792 (repeatable; "
        "'default' is the plain spec; default: only 'default')",
    )  # fmt: skip
    ap.add_argument(
        "--profile", action="store_true", help="one more warm run per variant, broken down by Ray task"
    )
    ap.add_argument("--no-cli", action="store_true", help="skip the cold CLI run")
    ap.add_argument(
        "--bare",
        choices=["optimised", "as-loaded"],
        default="optimised",
        help="the baseline: the model optimised for the CPU as geoseg does (default), or as loaded",
    )
    ap.add_argument(
        "--worker-niceness", type=int,
        help="set RAY_worker_niceness for the Ray this benchmark starts (Ray's default is 15: workers "
        "and actors run at nice 15, the bare model in this process at nice 0)",
    )  # fmt: skip
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"), help="scenes and outputs")
    ap.add_argument("--json", type=Path, help="also write the raw timings here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    variants = [parse_variant(v) for v in (args.variant or ["default"])]
    if args.worker_niceness is not None:
        os.environ["RAY_worker_niceness"] = str(args.worker_niceness)  # read by the raylet Ray starts
    print(machine(), flush=True)
    models = ["ndwi", "unet"] if args.model == "both" else [args.model]
    results = [bench_model(m, args.size or DEFAULT_SIZE[m], args, variants) for m in models]
    for res in results:
        print_result(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
