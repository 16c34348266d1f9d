"""Run a job on Ray: the only module that imports Ray, and where every Ray option is set.

``run_job`` plans without Ray (:mod:`geoseg.plan`), returns at once when nothing is left to do,
and otherwise starts or joins Ray, starts the model actors and runs the plan's block jobs:

    read task (block patches) ─► model actor (batched forward) ─► write task (stitch, chunks, marker)

The scheduler knows block jobs, not rasters or volumes. It packs the patches of consecutive
blocks (and inputs) into calls of whole batches, so only the job's very last batch is padded;
a patch's answer never depends on its batch neighbours (:class:`geoseg.infer.Predictor`). It
keeps a bounded window of blocks in flight, ships descriptors and ObjectRefs (never pixels
through the driver), counts what each call answered from the call's own result, and retries a
failed read, model call or write a bounded number of times, counting the redone work apart.
An input is finished (:mod:`geoseg.finish`) as soon as its last block is written.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ObjectLostError,
    OwnerDiedError,
    RayError,
    RayTaskError,
)

from geoseg._actor import ModelActor
from geoseg._instances import pixel_area
from geoseg._tasks import BlockResult, read_block_task, run_task, write_block_task
from geoseg.errors import GeosegError, ModelError, SpecError, first_line
from geoseg.finish import finish_group
from geoseg.models import ModelCard, resolve_card, weights_identity
from geoseg.plan import BlockJob, GroupPlan, JobPlan, TaskJob, min_lesion_ml, plan_job
from geoseg.report import InputReport, JobReport
from geoseg.sinks import (
    REPORT_KEY,
    SceneLayout,
    Store,
    VolumeLayout,
    consolidate_root,
    group_meta,
    prepare_group,
    unconsolidate_root,
)
from geoseg.spec import JobSpec

__all__ = ["run_job", "run_plan", "release_workers", "connect", "RayConnectError"]

log = logging.getLogger("geoseg")

CONNECT_TIMEOUT_S = float(os.environ.get("GEOSEG_CONNECT_TIMEOUT", "30"))
"""How long joining a Ray cluster may take before geoseg gives up with one line."""


class RayConnectError(GeosegError, ConnectionError):
    """Ray could not be started or reached."""


# ---------------------------------------------------------------------------------------------
# Ray: start a private one, or join the cluster the user named, in bounded time


class _HasAddress(Protocol):
    """What :func:`connect` reads of a job: the cluster it names (``--address``), if any."""

    @property
    def ray_address(self) -> str | None: ...


def _cluster_address(spec: _HasAddress) -> str | None:
    return spec.ray_address or os.environ.get("RAY_ADDRESS") or None


def _probe(address: str) -> None:
    """Fail fast where nothing listens at ``host:port`` (Ray would retry for minutes)."""
    if address in ("auto", "local") or "://" in address and not address.startswith("ray://"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayConnectError(
            f"--address {address!r}: not HOST:PORT; give the Ray head's GCS address, e.g. 10.0.0.5:6379"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=min(5.0, CONNECT_TIMEOUT_S)):
            pass
    except OSError as e:
        raise RayConnectError(
            f"--address {address}: nothing answers there ({e.strerror or e}); start the cluster "
            "(ray start --head, cluster/local-multinode.sh start) or fix the address / RAY_ADDRESS"
        ) from None


_PREFLIGHT = """
import os, ray
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
print("GEOSEG-OK", flush=True)
"""


def _preflight(address: str) -> None:
    """Join ``address`` once in a child process, killed after :data:`CONNECT_TIMEOUT_S`: a
    cluster that hangs or refuses the connection costs a bounded time and one line, not a
    hang or 20 lines of Ray's warnings."""
    cmd = [sys.executable, "-c", _PREFLIGHT.format(address=address)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise RayConnectError(
            f"--address {address}: no Ray cluster answered within {CONNECT_TIMEOUT_S:g} s; check the address "
            "and that the head is up (ray status), or raise GEOSEG_CONNECT_TIMEOUT"
        ) from None
    if "GEOSEG-OK" in proc.stdout:
        return
    text = proc.stderr
    low = text.lower()
    if "auth" in low or "token" in low or "unauthenticated" in low:
        raise RayConnectError(
            f"--address {address}: the cluster requires token authentication; export RAY_AUTH_MODE=token "
            "(the token is in ~/.ray/auth_token on the head node, or set RAY_AUTH_TOKEN) and run again"
        )
    if "version mismatch" in low or "python" in low and "mismatch" in low:
        raise RayConnectError(
            f"--address {address}: the cluster runs another Ray or Python version than this driver "
            f"(Ray {ray.__version__}, Python {sys.version_info.major}.{sys.version_info.minor}); use the same on both"
        )
    last = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "no output")
    raise RayConnectError(f"--address {address}: cannot join the Ray cluster ({last.strip()[:200]}); check the address")


def connect(spec: _HasAddress, local_cpus: int | None = None, log_to_driver: bool = True) -> bool:
    """Start a private local Ray, or join the cluster ``spec.ray_address`` / ``RAY_ADDRESS``
    names; returns True when this call started or joined Ray (False: already up in-process).

    A cluster is joined only when named: a Ray that ``ray start`` left on this machine is not
    used by a plain run. ``log_to_driver=False`` keeps the workers' output off this terminal
    (training reports its epochs itself).

    Raises:
        RayConnectError: one line naming the address and the fix, within :data:`CONNECT_TIMEOUT_S`.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")  # geoseg handles every task error itself
    address = _cluster_address(spec)
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address:
            _probe(address)
            _preflight(address)
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=log_to_driver, include_dashboard=False)
        else:
            ray.init(
                address="local",
                num_cpus=local_cpus,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=log_to_driver,
                configure_logging=True,
            )
    except RayConnectError as e:
        if address and not spec.ray_address:  # the address came from the environment, not the flag
            raise RayConnectError(str(e).replace("--address ", "RAY_ADDRESS=", 1)) from None
        raise
    except Exception as e:  # Ray raises bare Exception too (e.g. "node timed out during startup")
        if address:
            raise RayConnectError(
                f"--address {address}: cannot join the Ray cluster ({first_line(e)}); check `ray status`"
            ) from None
        raise RayConnectError(
            f"cannot start a local Ray ({first_line(e)}); the machine may be overloaded: "
            "run again when it is less busy, or join a running cluster with --address"
        ) from None
    finally:
        if main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)  # Ray replaces it; the caller's handler stays in charge
    return True


# ---------------------------------------------------------------------------------------------
# Resources: how many model actors, with how many CPUs and threads


@dataclass(frozen=True)
class _Resources:
    workers: int
    use_gpu: bool
    cpus_per_worker: float
    threads: int | None  # the spec's threads_per_worker: None lets the actor choose
    max_threads: int | None  # a CPU actor's share of the cores
    task_options: dict[str, Any]
    actor_options: dict[str, Any]


def _local_cpus(spec: JobSpec) -> int:
    """Logical CPUs for a private local Ray: every core for read and write tasks, plus what the
    model workers reserve, on top. A CPU model actor computes only while a call is in, and a
    light model (ndwi) leaves the cores to the reads; a heavy one keeps its threads busy and
    the reads are a small share. On a GPU machine the actors mostly wait for the GPU."""
    cores = os.cpu_count() or 1
    workers = spec.workers or 1
    if workers > max(1, cores - 1):
        log.info("%d model workers on a machine with %d cores: they share the cores", workers, cores)
    return cores + math.ceil(workers * (spec.cpus_per_worker or 1.0))


def _cpu_nodes() -> int:
    """The model actors of a CPU job by default: one per live node that has CPUs to give (a
    laptop: 1; a cluster: one per worker node, so one scene spreads over every node)."""
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    return max(1, len(nodes))


def _resources(spec: JobSpec) -> _Resources:
    """Every Ray option in one place, from what the cluster reports."""
    total = ray.cluster_resources()
    gpus, cpus = int(total.get("GPU", 0)), float(total.get("CPU", 0))
    use_gpu = spec.device == "cuda" or (spec.device == "auto" and gpus > 0)
    if spec.device == "cuda" and gpus == 0:
        raise SpecError("device: cuda, but the Ray cluster has no GPU; use device: auto or cpu")
    per_gpu = spec.actors_per_gpu
    workers = spec.workers or (gpus * per_gpu if use_gpu else _cpu_nodes())
    per = spec.cpus_per_worker or 1.0
    if workers * per > cpus - 1:
        if spec.cpus_per_worker is not None or cpus <= 1:
            raise SpecError(
                f"workers: {workers} actors x {per:g} CPUs leave fewer than 1 of the cluster's {cpus:g} CPUs for "
                "read and write tasks, so nothing would run; use fewer workers or a smaller cpus_per_worker"
            )
        per = math.floor(100 * (cpus - 1) / workers) / 100
        log.info(
            "%d model workers on a cluster of %g CPUs: each reserves %.2f CPU (not 1), they share the cores",
            workers, cpus, per,
        )  # fmt: skip
    cores = os.cpu_count() or 1
    max_threads = None if use_gpu else max(1, cores // workers)
    gpu_share = 1.0 / per_gpu if per_gpu > 1 else 1
    if use_gpu and gpus and workers * gpu_share > gpus:
        # more workers asked for than whole GPU shares: they share the GPUs, or the extra actors
        # could never be placed and the run would wait for them for ever
        gpu_share = math.floor(100 * gpus / workers) / 100
        log.info("%d model workers on %d GPU(s): each reserves %.2f GPU, they share them", workers, gpus, gpu_share)
    actor: dict[str, Any] = {
        "num_cpus": per, "num_gpus": gpu_share if use_gpu else 0, "max_restarts": 0, "max_task_retries": 0,
        "scheduling_strategy": "SPREAD",  # one actor per node before two on one: a scene spreads over the nodes
    }  # fmt: skip
    task: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}  # the scheduler retries, and counts it
    return _Resources(workers, use_gpu, per, spec.threads_per_worker, max_threads, task, actor)


# ---------------------------------------------------------------------------------------------
# The model actors, reused between the jobs of one driver process


class _Pool:
    """The model actors of a job: started once, replaced when one dies."""

    def __init__(self, key: str, make: Callable[[], Any], n: int) -> None:
        self.key = key
        self.make = make
        self.actors = [make() for _ in range(n)]
        self.busy = [0] * n
        self.turn = 0
        self.info: list[dict[str, Any]] = []

    def describe(self) -> list[dict[str, Any]]:
        """What each actor computes on; raises :class:`ModelError` where the model did not load."""
        refs = [a.describe.remote() for a in self.actors]
        t0 = time.monotonic()
        waited = False
        while True:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=10.0)
            if len(ready) == len(refs):
                break
            if not waited:
                log.info("waiting for %d model actor(s) to start (the cluster may be scaling up)", len(refs) - len(ready))
                waited = True
            if time.monotonic() - t0 > 3600:
                raise ModelError("no model actor started within an hour; check the cluster's resources (ray status)")
        self.info = ray.get(refs)
        for d in self.info:
            if d.get("error"):
                raise ModelError(d["error"])
        return self.info

    def pick(self) -> int:
        """An actor with the fewest calls outstanding, taking turns among those: calls that
        come one at a time (a fast model) still spread over every actor of every node."""
        n = len(self.actors)
        least = min(self.busy)
        for k in range(n):
            i = (self.turn + k) % n
            if self.busy[i] == least:
                self.turn = i + 1
                return i
        raise AssertionError("unreachable: some actor has the fewest calls")

    def replace(self, i: int) -> None:
        try:
            ray.kill(self.actors[i], no_restart=True)
        except (RayError, ValueError):
            pass
        self.actors[i] = self.make()

    def kill(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except (RayError, ValueError):
                pass  # a handle of an earlier Ray session: that actor is gone already
        self.actors = []


_POOL: dict[str, _Pool | None] = {"pool": None}


def _actor_pool(spec: JobSpec, res: _Resources) -> _Pool:
    """Model actors for this job, reused from the previous job of this driver when identical
    (same model, settings and Ray session), so weights load once per driver."""
    ctx = ray.get_runtime_context()
    key = repr((ctx.gcs_address, ctx.get_job_id(), spec.model, spec.batch_size, spec.device, spec.precision,
                res.threads, res.max_threads, sorted(res.actor_options.items()), res.workers))  # fmt: skip
    pool = _POOL["pool"]
    if pool is not None and pool.key == key and pool.actors:
        return pool
    release_workers()
    cls = ray.remote(ModelActor).options(**res.actor_options)
    args = (spec.model, spec.batch_size, spec.device, spec.precision, res.threads, res.max_threads)
    pool = _Pool(key, lambda: cls.remote(*args), res.workers)
    _POOL["pool"] = pool
    return pool


def release_workers() -> None:
    """Stop the model actors this driver keeps between jobs."""
    pool, _POOL["pool"] = _POOL["pool"], None
    if pool is not None and ray.is_initialized():
        pool.kill()


# ---------------------------------------------------------------------------------------------
# Errors: which are worth another attempt


def _cause(err: BaseException) -> BaseException:
    """The user-level exception inside Ray's wrapping, if any."""
    seen = 0
    while isinstance(err, RayTaskError) and seen < 8:
        inner = getattr(err, "cause", None)
        if inner is None or inner is err:
            break
        err = inner
        seen += 1
    return err


def _raised_in(err: BaseException, function: str) -> bool:
    """Whether ``err`` was raised by the task ``function`` (also as the failed argument of a
    call: Ray then names that task in the error's text, its only trace in a wrapped error)."""
    return f"ray::{function}(" in str(err)


def _permanent(err: BaseException) -> bool:
    """A geoseg error is about the data or the model and would fail again; anything else (a
    dead worker or actor, a lost object, an I/O hiccup) is worth another attempt."""
    return isinstance(_cause(err), GeosegError)


def _message(err: BaseException) -> str:
    cause = _cause(err)
    if isinstance(cause, GeosegError):
        return str(cause)
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".strip()


def _lost(err: BaseException) -> bool:
    return isinstance(_cause(err), (ObjectLostError, OwnerDiedError))


def _actor_died(err: BaseException) -> bool:
    return isinstance(_cause(err), (ActorDiedError, ActorUnavailableError))


# ---------------------------------------------------------------------------------------------
# The scheduler


@dataclass(eq=False)
class _Block:
    """Run-time state of one block job."""

    group: _Group
    job: BlockJob
    write_due: bool  # pending: its write is to be done (else read for its neighbours only)
    users: int = 0  # writes still to come that take this block's predictions
    patches: Any = None  # ObjectRef of (N, C, P, P) patches
    valid: Any = None  # ObjectRef of the validity mask (or None)
    live: Any = None  # (N,) bool: not all-zero (these fill batches), once the read is done
    reads: int = 0
    redo: list[tuple[int, int]] = field(default_factory=list)  # ranges to send again after a re-read
    pieces: list[tuple[int, _Call, int, int]] = field(default_factory=list)  # (start in block, call, rows)
    answered: int = 0
    held: bool = False
    write_ref: Any = None
    writes: int = 0
    written: bool = False

    @property
    def predicted(self) -> bool:
        return self.answered == self.job.n_patches


@dataclass(eq=False)
class _Call:
    """One model call: segments ``(block, start, stop)`` of blocks' patches, in order."""

    segments: list[tuple[_Block, int, int]]
    actor: int = -1
    handle: Any = None  # the actor it went to: a replaced actor is not replaced again
    out: Any = None
    stats: Any = None
    attempts: int = 0
    live: int = 0  # blocks holding pieces of this call


@dataclass(eq=False)
class _Group:
    plan: GroupPlan
    res: InputReport
    blocks: dict[int, _Block] = field(default_factory=dict)
    users_of: dict[int, list[_Block]] = field(default_factory=dict)  # block index -> writes taking it
    writes_left: int = 0
    phase: int = 0
    before: int = -1  # the earlier phase running (-1: none, or all done)
    waiting: list[_Block] = field(default_factory=list)  # blocks held back until the earlier phases end
    tasks: dict[Any, TaskJob] = field(default_factory=dict)
    task_attempts: dict[str, int] = field(default_factory=dict)
    failed: bool = False
    done: bool = False
    t0: float = 0.0


class _Scheduler:
    """Runs the model phase and the later phases of every group of a job on Ray.

    A block goes: read task -> (its zero mask back) -> pending patches -> model calls of whole
    batches of live patches -> (every block it needs answered) -> write task -> released once
    no write needs it. At most ``limit`` blocks are held (read and not released).
    """

    def __init__(
        self,
        store: Store,
        groups: list[_Group],
        pool: _Pool,
        res: _Resources,
        spec: JobSpec,
        plan: JobPlan,
        report: JobReport,
        progress: Any,
    ) -> None:
        self.store, self.groups, self.pool, self.spec, self.plan = store, groups, pool, spec, plan
        self.report, self.bar = report, progress
        self.read = ray.remote(read_block_task).options(num_returns=3, **res.task_options)
        self.write = ray.remote(write_block_task).options(**res.task_options)
        self.run_task = ray.remote(run_task).options(**res.task_options)
        self.batch = spec.batch_size
        self.call_max = 4 * self.batch
        span = max((max(j.needs) - min(j.needs) for g in groups for j in g.plan.jobs), default=0)
        base = spec.max_blocks_in_flight or int(os.environ.get("GEOSEG_MAX_BLOCKS_IN_FLIGHT", 2 * res.workers + 2))
        self.limit = max(base, span + 2)  # gaussian: a block's write waits for its lower neighbours
        report.blocks_in_flight, report.batch_size = self.limit, self.batch
        report.calls_per_worker = [0] * len(pool.actors)
        self.blocks_total = sum(len(g.plan.pending) for g in groups)
        self.blocks_written = 0
        self.queue: deque[_Block] = deque()
        self.pending: deque[tuple[_Block, int, int]] = deque()
        self.pending_live = 0
        self.reading: dict[Any, _Block] = {}  # zero-mask ref -> block being read
        self.calls: dict[Any, _Call] = {}  # stats ref -> call in flight
        self.writes: dict[Any, _Block] = {}  # write ref -> block
        self.tasks: dict[Any, _Group] = {}  # later-phase task ref -> group
        self.held = 0
        self.ready = False
        for g in groups:
            pending = {j.index for j in g.plan.pending}
            for job in g.plan.predict:
                g.blocks[job.index] = _Block(g, job, job.index in pending)
            for j in g.plan.pending:
                for k in j.needs:
                    g.blocks[k].users += 1
                    g.users_of.setdefault(k, []).append(g.blocks[j.index])
            g.writes_left = len(pending)
            queued = [g.blocks[j.index] for j in g.plan.predict]
            if any(g.plan.before_pending):
                g.before, g.waiting = 0, queued
            else:
                self.queue.extend(queued)

    # -- the loop --------------------------------------------------------------------------

    def _ensure_ready(self) -> None:
        """Before anything is written: the actors' model loaded (else its one-line error), what
        they compute on recorded, and each group created (or a resumed one checked)."""
        if self.ready:
            return
        self.ready = True
        info = self.pool.describe()
        self.report.device = info[0]["device"].split(":")[0]
        self.report.numerics = info[0]["numerics"]
        _prepare(self.store, self.groups, self.report.numerics, self.spec.overwrite)
        for g in self.groups:
            if g.failed:
                for b in g.blocks.values():
                    self._release(b)
                if self.spec.on_error == "fail":
                    raise GeosegError(f"{g.plan.path}: {g.res.error}")

    def run(self) -> None:
        self._postfix()
        for g in self.groups:
            if g.before >= 0:
                self._before_model_phase(g)
            elif not g.plan.pending:
                self._after_model_phase(g)
        while True:
            while self.queue and self.held < self.limit:
                b = self.queue.popleft()
                if not b.group.failed:
                    self._read(b)
            outstanding = [*self.reading, *self.calls, *self.writes, *self.tasks]
            if not outstanding:
                if self.pending:
                    self._emit(flush=True)  # nothing else can move: the tail goes as it is
                    continue
                if self.queue:
                    raise RuntimeError("geoseg scheduler: blocks left but nothing in flight (window too small)")
                break
            ready, _ = ray.wait(outstanding, num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in self.reading:
                    self._read_done(ref)
                elif ref in self.calls:
                    self._call_done(ref)
                elif ref in self.writes:
                    self._write_done(ref)
                else:
                    self._task_done(ref)

    # -- reading and packing -----------------------------------------------------------------

    def _read(self, b: _Block) -> None:
        b.reads += 1
        refs: Any = self.read.remote(b.job.read)
        b.patches, b.valid, zero = refs
        self.reading[zero] = b
        if not b.held:
            b.held = True
            self.held += 1
            self.report.peak_blocks_in_flight = max(self.report.peak_blocks_in_flight, self.held)
        if b.group.t0 == 0.0:
            b.group.t0 = time.perf_counter()

    def _read_done(self, ref: Any) -> None:
        b = self.reading.pop(ref)
        g = b.group
        if g.failed:
            return
        try:
            zero = ray.get(ref)
        except RayError as e:
            if _permanent(e) or b.reads > self.spec.retries:
                self._fail(g, _message(e), b.reads)
            else:
                g.res.blocks_retried += 1
                self._read(b)
            return
        b.live = ~zero
        ranges = b.redo or [(0, b.job.n_patches)]
        b.redo = []
        for lo, hi in ranges:
            self.pending.append((b, lo, hi))
            self.pending_live += int(b.live[lo:hi].sum())
        self._emit(flush=False)

    def _emit(self, flush: bool) -> None:
        """Cut the pending patches into calls holding whole batches of live (not all-zero)
        patches, up to ``call_max``; with ``flush``, also the rest: the job's last, padded batch
        (or a window that cannot grow). All-zero patches ride along: they cost no model work."""
        while self.pending and (self.pending_live >= self.batch or flush):
            want = min(self.call_max, self.pending_live - self.pending_live % self.batch) or self.pending_live
            segments: list[tuple[_Block, int, int]] = []
            while self.pending:
                b, lo, hi = self.pending[0]
                where = np.flatnonzero(b.live[lo:hi])
                if want == 0:  # the call is full: only leading all-zero patches ride along
                    take_hi = hi if where.size == 0 else lo + int(where[0])
                    n_live = 0
                    if take_hi == lo:
                        break
                elif where.size <= want:
                    take_hi, n_live = hi, int(where.size)
                else:  # stop right after the want-th live patch
                    take_hi, n_live = lo + int(where[want - 1]) + 1, want
                segments.append((b, lo, take_hi))
                want -= n_live
                self.pending_live -= n_live
                if take_hi == hi:
                    self.pending.popleft()
                else:
                    self.pending[0] = (b, take_hi, hi)
            self._submit_call(_Call(segments))

    def _submit_call(self, call: _Call) -> None:
        call.segments = [s for s in call.segments if not s[0].group.failed]
        if not call.segments:
            return
        call.attempts += 1
        arrays: list[Any] = []
        index: dict[int, int] = {}
        bounds = []
        for b, lo, hi in call.segments:
            if id(b) not in index:
                index[id(b)] = len(arrays)
                arrays.append(b.patches)
            bounds.append((index[id(b)], lo, hi))
        call.actor = self.pool.pick()
        self.pool.busy[call.actor] += 1
        actor = call.handle = self.pool.actors[call.actor]
        call.out, call.stats = actor.predict.options(num_returns=2).remote(bounds, self.plan.output == "labels", *arrays)
        self.calls[call.stats] = call

    def _call_done(self, ref: Any) -> None:
        call = self.calls.pop(ref)
        self.pool.busy[call.actor] -= 1
        try:
            stats = ray.get(ref)
        except RayError as e:
            self._call_failed(call, e)
            return
        self.report.patches_padded += stats["padded"]
        self.report.calls_per_worker[call.actor] += 1
        offset = 0
        for (b, lo, _), (n, zero) in zip(call.segments, stats["segments"], strict=True):
            g = b.group
            if not g.failed:
                b.pieces.append((lo, call, offset, offset + n))
                call.live += 1
                b.answered += n
                g.res.patches_forwarded += n
                g.res.patches_zero += zero
                self.bar.update(n)
            offset += n
        for b in {id(s[0]): s[0] for s in call.segments}.values():
            if b.predicted and not b.group.failed:
                b.pieces.sort(key=lambda p: p[0])
                self._write_users(b)

    def _call_failed(self, call: _Call, err: RayError) -> None:
        """A model call failed. An error of the model (a geoseg error) fails its inputs; a lost
        patches object (a node went away) is read again; a dead or unreachable actor is
        replaced. Either way the call's patches go again, within the retry bound, counted."""
        self._ensure_ready()  # a model that did not load is the job's one-line error
        groups = {id(b.group): b.group for b, _, _ in call.segments if not b.group.failed}.values()
        if _permanent(err):
            for g in groups:
                self._fail(g, _message(err), call.attempts)
            return
        if call.attempts > self.spec.retries:
            for g in groups:
                self._fail(g, f"model call failed {call.attempts} times ({_message(err)})", call.attempts)
            return
        for b, lo, hi in call.segments:
            if not b.group.failed:
                b.group.res.patches_retried += hi - lo
        if _lost(err) or _raised_in(err, "read_block_task"):
            for b, lo, hi in call.segments:
                if b.group.failed:
                    continue
                if not b.redo:
                    b.group.res.blocks_retried += 1
                    self._read(b)
                b.redo.append((lo, hi))
            return
        for g in groups:
            g.res.actor_failures += 1
        if _actor_died(err) and self.pool.actors[call.actor] is call.handle:  # the first of its calls to fail
            self.pool.replace(call.actor)
            self.report.actors_restarted += 1
            for g in groups:
                g.res.restarts += 1
            log.info("a model actor died (%s); started a new one, its patches go again", _message(err))
        self._submit_call(_Call(call.segments, attempts=call.attempts))

    # -- writing ------------------------------------------------------------------------------

    def _write_users(self, b: _Block) -> None:
        """Submit the write of every block that takes ``b``'s predictions and has all it needs."""
        g = b.group
        for u in g.users_of.get(b.job.index, ()):
            if u.write_ref is None and not u.written and all(g.blocks[k].predicted for k in u.job.needs):
                self._submit_write(u)

    def _submit_write(self, b: _Block) -> None:
        self._ensure_ready()
        g = b.group
        if g.failed:
            return
        b.writes += 1
        calls: list[Any] = []
        index: dict[int, int] = {}
        layout = []
        for k in b.job.needs:
            pieces = []
            for _, call, lo, hi in g.blocks[k].pieces:
                if id(call) not in index:
                    index[id(call)] = len(calls)
                    calls.append(call.out)
                pieces.append((index[id(call)], lo, hi))
            layout.append(pieces)
        b.write_ref = self.write.remote(self.store.url, g.plan.name, b.job.key, b.job.write, b.valid, layout, *calls)
        self.writes[b.write_ref] = b

    def _write_done(self, ref: Any) -> None:
        b = self.writes.pop(ref)
        b.write_ref = None
        g = b.group
        try:
            result: BlockResult = ray.get(ref)
        except RayError as e:
            if g.failed:
                return
            if _permanent(e) or b.writes > self.spec.retries:
                self._fail(g, _message(e), b.writes)
                return
            g.res.blocks_retried += 1
            if _lost(e):
                self._repredict(b)
            else:
                self._submit_write(b)
            return
        if g.failed:
            return
        assert result.key == b.job.key
        b.written = True
        g.res.blocks_run += 1
        self.blocks_written += 1
        self._postfix()
        g.writes_left -= 1
        for k in b.job.needs:
            d = g.blocks[k]
            d.users -= 1
            if d.users == 0:
                self._release(d)
        if g.writes_left == 0:
            self._after_model_phase(g)

    def _repredict(self, b: _Block) -> None:
        """The predictions a write needed are lost (a node went away): read and predict them
        again; the write follows when they are answered."""
        g = b.group
        for k in b.job.needs:
            d = g.blocks[k]
            if d.predicted:
                g.res.patches_retried += d.job.n_patches
                d.pieces, d.answered = [], 0
                d.redo = [(0, d.job.n_patches)]
                self._read(d)

    def _release(self, b: _Block) -> None:
        """Drop a block's references: its patches, validity and (once no block holds it) calls."""
        if b.held:
            b.held = False
            self.held -= 1
        for _, call, _, _ in b.pieces:
            call.live -= 1
            if call.live == 0:
                call.out = None
        b.patches = b.valid = None
        b.pieces = []

    # -- earlier and later phases, finishing -----------------------------------------------------

    def _before_model_phase(self, g: _Group) -> None:
        """Submit the group's next earlier phase; after the last, queue its blocks."""
        phases = g.plan.before_pending
        while g.before < len(phases) and not phases[g.before]:
            g.before += 1
        if g.before < len(phases):
            for t in phases[g.before]:
                self._submit_task(g, t)
            return
        g.before = -1
        self.queue.extend(g.waiting)
        g.waiting = []
        if not g.plan.pending:
            self._after_model_phase(g)

    def _after_model_phase(self, g: _Group) -> None:
        phases = g.plan.later_pending
        while g.phase < len(phases) and not phases[g.phase]:
            g.phase += 1
        if g.phase < len(phases):
            for t in phases[g.phase]:
                self._submit_task(g, t)
            return
        self._finish(g)

    def _submit_task(self, g: _Group, t: TaskJob) -> None:
        self._ensure_ready()
        if g.failed:
            return
        g.task_attempts[t.key] = g.task_attempts.get(t.key, 0) + 1
        ref = self.run_task.remote(self.store.url, g.plan.name, t.key, t.task)
        g.tasks[ref] = t
        self.tasks[ref] = g

    def _task_done(self, ref: Any) -> None:
        g = self.tasks.pop(ref)
        t = g.tasks.pop(ref)
        try:
            ray.get(ref)
        except RayError as e:
            if g.failed:
                return
            if _permanent(e) or g.task_attempts[t.key] > self.spec.retries:
                self._fail(g, _message(e), g.task_attempts[t.key])
            else:
                g.res.blocks_retried += 1
                self._submit_task(g, t)
            return
        if g.failed or g.tasks:
            return
        if g.before >= 0:
            g.before += 1
            self._before_model_phase(g)
            return
        g.phase += 1
        self._after_model_phase(g)

    def _finish(self, g: _Group) -> None:
        self._ensure_ready()
        if g.failed or g.done:
            return
        extra = {
            "grid_patches": g.plan.grid_patches,
            "patches_forwarded": g.res.patches_forwarded,
            "patches_zero": g.res.patches_zero,
            "numerics": self.report.numerics,
        }
        why = finish_group(self.store, g.plan, extra)
        g.done = True
        if g.plan.before and not why:
            chosen = group_meta(self.store, g.plan.name).get("threshold")
            g.res.threshold = float(chosen["value"]) if isinstance(chosen, dict) else None
        g.res.seconds = time.perf_counter() - g.t0 if g.t0 else 0.0
        if why:
            g.res.status, g.res.error = "failed", why
        else:
            g.res.status = "complete"
        self._postfix()

    def _postfix(self) -> None:
        """Progress beside the bar's patches/s: inputs finished and blocks written."""
        done = sum(g.done or g.failed for g in self.groups)
        self.bar.set_postfix_str(f"inputs {done}/{len(self.groups)}, blocks {self.blocks_written}/{self.blocks_total}")

    def _fail(self, g: _Group, error: str, attempts: int) -> None:
        if g.failed:
            return
        g.failed = True
        g.res.status = "failed"
        g.res.error = error if attempts <= 1 else f"{error} (after {attempts} attempts)"
        g.res.seconds = time.perf_counter() - g.t0 if g.t0 else 0.0
        self._postfix()
        for b in g.blocks.values():
            self._release(b)
        self.pending = deque(s for s in self.pending if s[0].group is not g)
        self.pending_live = sum(int(b.live[lo:hi].sum()) for b, lo, hi in self.pending)
        if self.spec.on_error == "fail":
            raise GeosegError(f"{g.plan.path}: {g.res.error}")


# ---------------------------------------------------------------------------------------------
# The job


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, unit="patch", desc="geoseg", disable=not enabled, smoothing=0.1, dynamic_ncols=True)


def _prepare(store: Store, groups: list[_Group], numerics: str, overwrite: bool) -> None:
    """Create each group's arrays and metadata (or check a resumed one computes the same way)."""
    for g in groups:
        try:
            if g.plan.resumed:
                was = str(group_meta(store, g.plan.name).get("numerics", ""))
                if was and was != numerics:
                    raise ModelError(
                        f"group {g.plan.name!r} was started computing {was}, this run computes {numerics}: its "
                        "blocks would mix two numerics; rerun on the hardware it started on, or pass --overwrite"
                    )
            else:
                prepare_group(store, g.plan.layout, g.plan.fingerprint, {**g.plan.meta, "numerics": numerics}, overwrite)
        except GeosegError as e:
            g.failed = True
            g.res.status, g.res.error = "failed", str(e)


@contextmanager
def _interruptible() -> Iterator[None]:
    """On any exit by error or interrupt, stop the actors: queued calls must not linger."""
    try:
        yield
    except BaseException:
        release_workers()
        raise


def resolve(spec: JobSpec) -> tuple[ModelCard, str]:
    """The job's card and weights identity, checked before any output exists."""
    card = resolve_card(spec.model)
    min_lesion_ml(card)
    spec.tiling.resolve(card)  # a tiling that does not fit the patch fails the spec, once
    return card, weights_identity(spec.model)


def run_job(spec: JobSpec) -> JobReport:
    """Run every input of ``spec``; bad inputs are reported (or raise, with ``on_error: fail``).

    Ray is started (or joined) only when some block is left to do: a rerun of a finished job,
    or a job whose inputs all fail, returns without it.

    Raises:
        GeosegError: a bad model, spec or store (one line), or the first bad input with
            ``on_error: fail``.
    """
    t0 = time.perf_counter()
    card, weights = resolve(spec)
    return run_plan(plan_job(spec, card, weights), spec, t0)


def run_plan(plan: JobPlan, spec: JobSpec, t0: float | None = None) -> JobReport:
    """Run a plan of ``spec`` (as :func:`geoseg.plan.plan_job` makes it, or extended with later
    phases); what :func:`run_job` does after planning."""
    t0 = time.perf_counter() if t0 is None else t0
    report = JobReport(notes=list(plan.notes))
    for note in plan.notes:
        log.info("%s", note)
    results: dict[str, InputReport] = {}
    for f in plan.failures:
        results[f.path] = InputReport(path=f.path, error=f.error)
    groups: list[_Group] = []
    for gp in plan.groups:
        res = InputReport(
            path=gp.path, name=gp.name, grid_patches=gp.grid_patches, blocks_total=len(gp.jobs),
            patches_needed=gp.patches_needed, kind=_kind(gp), area_km2=_area_km2(gp),
        )  # fmt: skip
        results[gp.path] = res
        if gp.complete:
            res.status, res.already = "complete", True  # nothing to do: its blocks may be of another block size
        else:
            groups.append(_Group(gp, res))
    report.scenes = [results[p] for p in plan.order if p in results]
    if groups:
        store = plan.store
        connect(spec, _local_cpus(spec) if not _cluster_address(spec) else None)
        with _interruptible():
            resources = _resources(spec)
            pool = _actor_pool(spec, resources)  # the actors load the model while the first blocks are read
            report.workers = resources.workers
            unconsolidate_root(store)
            try:
                bar = _progress(sum(g.plan.patches_needed for g in groups), spec.progress)
                t_run = time.perf_counter()
                try:
                    _Scheduler(store, groups, pool, resources, spec, plan, report, bar).run()
                finally:
                    bar.close()
                report.run_seconds = time.perf_counter() - t_run
            finally:
                consolidate_root(store)  # also after an interrupt: the groups finished so far
    report.seconds = time.perf_counter() - t0
    if groups:
        write_report(plan.store, report)
    return report


def write_report(store: Store, report: JobReport) -> None:
    """The run's report as JSON at :data:`geoseg.sinks.REPORT_KEY`, through the store's key
    write (any store); a store that refuses it costs a note, not the finished run."""
    try:
        store.set(REPORT_KEY, report.to_json().encode())
    except GeosegError as e:
        log.warning("the run report was not written: %s", e)


def _kind(gp: GroupPlan) -> str:
    return "volume" if isinstance(gp.layout, VolumeLayout) else "raster"


def _area_km2(gp: GroupPlan) -> float | None:
    """A raster's ground area (true area in a geographic CRS), None without a CRS or a volume."""
    layout = gp.layout
    if not isinstance(layout, SceneLayout):
        return None
    h, w = layout.shape_yx
    try:
        px = pixel_area(layout.crs_wkt, layout.transform, 0, h)
    except Exception:  # noqa: BLE001  (a CRS pyproj cannot read: the rate is unknown, the run is fine)
        return None
    if px is None:
        return None
    total = float(np.sum(px)) * w if isinstance(px, np.ndarray) else float(px) * h * w
    return total / 1e6
