"""Scaling out and the cost of fault tolerance, on a simulated multi-node cluster, in one run.

A ``ray.cluster_utils.Cluster``: a head that takes no work (``num_cpus=0``, as in cluster/)
and two worker nodes of ``--node-cpus`` logical CPUs each, all on this machine. One generated
4-band scene, a random-weight U-Net (``bench/_common.unet_bench_card``) for the scaling part
and ``ndwi`` (where per-block overheads show most) for the costs.

1. Throughput with 1, 2 and 4 CPU model actors: patches/s while the scheduler runs
   (``report.run_seconds``), after a first run that starts the actors and loads the weights;
   printed as ratios to 1 actor. On a machine with fewer real cores than actors, the ratios
   say how much sharing costs, not how a real cluster scales.
2. Object store: the peak of Ray's object store use (all nodes, polled every 0.1 s) with the
   scheduler's bounded window of blocks in flight, and with the bound lifted
   (``max_blocks_in_flight`` = every block), as MiB and as a ratio.
3. Markers: a block's done-marker is one small whole-object write after its chunks; the time
   of writing this job's markers (measured in-process on the same store kind, median of 5)
   against the job's run time.
4. Retries: the job with one read and one write fault injected (``geoseg._faults``, each
   redone once) against the same job without, same actors; ratio of run seconds.

    python bench/scaling.py                     # 2048 px scene, U-Net for scaling
    python bench/scaling.py --size 1536 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import git_state, scene_path, unet_bench_card  # noqa: E402  (bench/ is sys.path[0])


def _peak_store(address: str, stop: threading.Event, out: list[int]) -> None:
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = None
    while not stop.is_set():
        try:
            state = state or get_state_from_address(address)
            reply = get_memory_info_reply(state)
            out.append(int(reply.store_stats.object_store_bytes_used))
        except Exception:  # noqa: BLE001  (a poll that fails is a missing sample, not a failed bench)
            pass
        stop.wait(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="scene edge in px (default 2048)")
    ap.add_argument("--node-cpus", type=int, default=3, help="logical CPUs of each of the 2 worker nodes (default 3)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per setting, after the warm-up (default 2)")
    ap.add_argument("--ndwi-size", type=int, default=2048, help="scene edge for parts 3 and 4, 512 px blocks (default 2048)")
    ap.add_argument("--parts", default="1234", help="which parts to run (default 1234)")
    args = ap.parse_args()

    import ray
    import torch
    from ray.cluster_utils import Cluster

    from geoseg._faults import ENV
    from geoseg.models import build_model, save_checkpoint
    from geoseg.pipeline import release_workers, run_job
    from geoseg.spec import parse_spec

    work = Path(tempfile.mkdtemp(prefix="geoseg-scaling-"))
    src = scene_path(Path(tempfile.gettempdir()), args.size)
    ckpt = work / "unet-bench.pt"
    torch.manual_seed(0)
    card = unet_bench_card()
    save_checkpoint(ckpt, build_model(card), card)
    rules = work / "faults.json"
    rules.write_text("[]")
    os.environ[ENV] = str(rules)
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # the injected faults are handled by geoseg

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=args.node_cpus)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    print(f"{git_state()}; {os.cpu_count()} cores (shared with other sessions); Ray {ray.__version__}; "
          f"cluster: head (0 CPU) + 2 nodes x {args.node_cpus} CPU; scene {args.size}x{args.size} px", flush=True)  # fmt: skip
    runs = 0

    def run(model: dict[str, Any], **kw: Any) -> tuple[Any, int]:
        nonlocal runs
        runs += 1
        spec = parse_spec({"inputs": [str(src)], "output": str(work / f"o{runs}.zarr"), "model": model,
                           "progress": False, **kw})  # fmt: skip
        samples: list[int] = []
        stop = threading.Event()
        t = threading.Thread(target=_peak_store, args=(cluster.address, stop, samples), daemon=True)
        t.start()
        try:
            report = run_job(spec)
        finally:
            stop.set()
            t.join()
        assert report.ok, report.summary()
        return report, max(samples, default=0)

    unet = {"checkpoint": str(ckpt)}
    if "1" in args.parts:
        scaling(run, unet, args.repeat, cluster)
    ndwi = {"name": "ndwi"}
    if "2" in args.parts:
        print(f"\n2. object store peak, U-Net, 2 actors, {args.size} px scene in 448 px blocks")
        run(unet, workers=2, block_px=448)
        bounded, peak_b = run(unet, workers=2, block_px=448, max_blocks_in_flight=2)
        blocks = bounded.scenes[0].blocks_total
        unbounded, peak_u = run(unet, workers=2, block_px=448, max_blocks_in_flight=blocks)
        print(f"   bounded ({bounded.blocks_in_flight} blocks in flight, peak held {bounded.peak_blocks_in_flight}): "
              f"{peak_b / 2**20:.1f} MiB; unbounded ({blocks} blocks allowed, peak held {unbounded.peak_blocks_in_flight}): "
              f"{peak_u / 2**20:.1f} MiB; bounded/unbounded = {peak_b / max(peak_u, 1):.2f}"
              + ("" if peak_b and peak_u else " (no samples: Ray's memory RPC did not answer)"), flush=True)  # fmt: skip
    src = scene_path(Path(tempfile.gettempdir()), args.ndwi_size)  # `run` reads `src`: parts 3 and 4 use this one
    if "3" in args.parts or "4" in args.parts:
        costs(run, ndwi, args.repeat, work, rules, src)
    release_workers()
    ray.shutdown()
    cluster.shutdown()
    return 0


def scaling(run: Any, unet: dict[str, Any], repeat: int, cluster: Any) -> None:
    from geoseg.pipeline import release_workers

    print("\n1. throughput, U-Net on CPU model actors spread over 2 nodes")
    rates: dict[int, float] = {}
    for workers in (1, 2, 4):
        run(unet, workers=workers)  # actors start, weights load
        got = [run(unet, workers=workers)[0] for _ in range(repeat)]
        rates[workers] = statistics.median(r.patches_forwarded / r.run_seconds for r in got)
        nodes = len({id(_node_of(cluster, pid)) for pid in _actor_pids()})
        print(f"   {workers} actor(s) on {nodes} node(s): {rates[workers]:.2f} patches/s = "
              f"{rates[workers] / rates[1]:.2f} x 1 actor", flush=True)  # fmt: skip
    release_workers()


def costs(run: Any, ndwi: dict[str, Any], repeat: int, work: Path, rules: Path, src: Path) -> None:
    from geoseg.sinks import mark_block_done

    first, _ = run(ndwi, workers=2, block_px=512)
    blocks = first.scenes[0].blocks_total
    print(f"\n3. markers, ndwi, {blocks} blocks of 512 px")
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        for b in range(blocks):
            mark_block_done(work / "markers.zarr", f"g{i}", f"b_{b}", {"pixels": 123456, "water": 789})
        times.append(time.perf_counter() - t0)
    clean = [run(ndwi, workers=2, block_px=512)[0].run_seconds for _ in range(repeat)]
    share = statistics.median(times) / statistics.median(clean)
    print(f"   {blocks} markers: {statistics.median(times) * 1e3:.1f} ms written in-process, the job runs "
          f"{statistics.median(clean):.2f} s: markers = {100 * share:.2f} % of the run "
          f"(run with markers / without = {1 / (1 - share):.3f})", flush=True)  # fmt: skip

    print(f"\n4. retries, ndwi, {blocks} blocks: one read and one write fault injected, each redone once")
    faulty = []
    for _ in range(repeat):
        for slot in work.glob("faults.json.*"):
            slot.unlink()
        rules.write_text(json.dumps([{"point": "read", "match": src.stem, "times": 1},
                                     {"point": "write", "match": src.stem, "times": 1}]))  # fmt: skip
        r, _ = run(ndwi, workers=2, block_px=512)
        assert r.blocks_retried == 2, r.summary()
        faulty.append(r.run_seconds)
    rules.write_text("[]")
    print(f"   clean {statistics.median(clean):.2f} s, with 2 retried block tasks {statistics.median(faulty):.2f} s: "
          f"ratio {statistics.median(faulty) / statistics.median(clean):.3f}", flush=True)  # fmt: skip


def _actor_pids() -> list[int]:
    from geoseg.pipeline import _POOL

    pool = _POOL["pool"]
    return [int(d["pid"]) for d in pool.info] if pool is not None else []


def _node_of(cluster: Any, pid: int) -> Any:
    """The node whose raylet started ``pid`` (Ray's state API needs the dashboard: not here)."""
    import psutil

    ancestors = {p.pid for p in psutil.Process(pid).parents()}
    return next((n for n in cluster.list_all_nodes()
                 if any(k == "raylet" and p.pid in ancestors for k, p in n.live_processes())), None)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
