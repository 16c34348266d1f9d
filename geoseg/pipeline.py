"""Run a job on Ray: plan on the driver, read/predict/stitch/write as tasks and actors.

This is the only module that imports Ray, and every Ray option is set here (``_ray_options``).
The driver ships descriptors (raster info, blocks) and ObjectRefs, never pixels.

    plan ─► read task (block + its patches) ─► model actor (batched forward) ─► stitch+write task
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import zarr
from ray.exceptions import RayError, RayTaskError

from geoseg import __version__
from geoseg.errors import GeosegError, SpecError, StoreError
from geoseg._actor import ModelActor
from geoseg._tasks import CASE_BLOCK, n_cores, read_block, read_case, stitch_write, stitch_write_case
from geoseg.core.grid import Block, PatchGrid, blocks, patch_grid
from geoseg.models import ModelCard, load_model, resolve_bands
from geoseg.sinks import (
    SceneLayout,
    VolumeLayout,
    complete_group,
    done_blocks,
    group_status,
    prepare_group,
    prepare_volume_group,
    write_table,
)
from geoseg.sources import CaseInfo, RasterInfo, open_case, open_raster
from geoseg.spec import JobSpec
from geoseg.core.stitch import StitchMode

__all__ = ["run_job", "release_workers", "init_ray", "JobReport", "SceneResult", "ScenePlan", "plan_scene", "fingerprint"]


# ---------------------------------------------------------------------------------------------
# Plain values the driver builds and ships


@dataclass(frozen=True)
class ScenePlan:
    """One input, ready to run: its grid, blocks, and which blocks are still to do."""

    name: str
    info: RasterInfo
    bands: tuple[int, ...]
    grid: PatchGrid
    blocks: tuple[Block, ...]
    pending: tuple[int, ...]
    fingerprint: str
    complete: bool = False  # complete already, from an earlier run of the same job

    @property
    def pending_patches(self) -> int:
        return sum(n_cores(self.blocks[j]) for j in self.pending)


@dataclass(frozen=True)
class CasePlan:
    """One MRI case: one block (the whole case), ``n_slices`` axial slices of ``grid`` patches."""

    name: str
    info: CaseInfo
    grid: PatchGrid
    n_slices: int
    context: int
    pending: bool
    fingerprint: str
    complete: bool = False

    @property
    def pending_patches(self) -> int:
        return self.n_slices * len(self.grid) if self.pending else 0

    @property
    def total_patches(self) -> int:
        return self.n_slices * len(self.grid)


@dataclass
class SceneResult:
    path: str
    name: str = ""
    status: str = "failed"  # complete | failed | skipped
    error: str = ""
    grid_patches: int = 0
    patches_needed: int = 0
    patches_forwarded: int = 0  # answered by the model, each grid patch once
    patches_zero: int = 0  # of those, all-zero patches answered from the actor's one cached pass
    blocks_total: int = 0
    blocks_run: int = 0
    seconds: float = 0.0

    @property
    def inference_ratio(self) -> float:
        return self.patches_forwarded / self.patches_needed if self.patches_needed else 1.0


@dataclass
class JobReport:
    scenes: list[SceneResult] = field(default_factory=list)
    seconds: float = 0.0
    run_seconds: float = 0.0
    workers: int = 0
    device: str = ""

    @property
    def ok(self) -> bool:
        return all(s.status == "complete" for s in self.scenes)

    @property
    def patches_forwarded(self) -> int:
        return sum(s.patches_forwarded for s in self.scenes)

    def summary(self) -> str:
        lines = []
        for s in self.scenes:
            if s.status == "complete":
                lines.append(
                    f"{s.name}: complete, {s.blocks_run}/{s.blocks_total} blocks run, inference "
                    f"{s.patches_forwarded}/{s.patches_needed} patches = {s.inference_ratio:.2f}"
                    + (f" ({s.patches_zero} all-zero, from one cached pass)" if s.patches_zero else "")
                )
            else:
                lines.append(f"{s.path}: {s.status}: {s.error}")
        rate = self.patches_forwarded / self.run_seconds if self.run_seconds else 0.0
        if not self.workers:
            lines.append(f"{sum(s.status == 'complete' for s in self.scenes)}/{len(self.scenes)} inputs complete, nothing to run")
            return "\n".join(lines)
        lines.append(
            f"{sum(s.status == 'complete' for s in self.scenes)}/{len(self.scenes)} inputs complete, "
            f"{self.patches_forwarded} patches in {self.seconds:.1f} s wall (Ray start and model load "
            f"included), {rate:.1f} patches/s while running, on {self.workers} {self.device} worker(s)"
        )
        return "\n".join(lines)


def model_digest(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer: the weights actually loaded, wherever they came from
    (a checkpoint, a model file, or weights packaged with geoseg)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(identity: str, bands: Any, card: ModelCard, spec: JobSpec, model_key: str, probs: bool) -> str:
    """Hash of everything that decides the output values (never workers or block size).

    ``model_key`` holds the weights' digest and how they run (``cpu-fp32`` or the GPU
    precision), so a store is never resumed on hardware that computes other values.
    """
    tiling = spec.tiling.resolve(card.patch_px)
    key = {
        "input": identity,
        "bands": bands,
        "model": card.to_dict(),
        "weights": model_key,
        "params": spec.model.params,
        "patch_px": tiling.patch_px,
        "overlap_px": tiling.overlap_px,
        "stitch": spec.stitch,
        "probs": probs,
        "geoseg": __version__.rsplit(".", 1)[0],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def plan_scene(path: Path, card: ModelCard, spec: JobSpec, weights: str, names: set[str]) -> ScenePlan:
    """Open one input, check it fits the model, and lay out its output group (driver only)."""
    info = open_raster(path)
    bands = resolve_bands(card.bands, info.descriptions, info.count, info.path)
    tiling = spec.tiling.resolve(card.patch_px)
    grid = patch_grid(info.shape_yx, tiling)
    chunk_px = tiling.chunk_px()
    blks = blocks(grid, spec.block_px, chunk_px)
    name = info.stem
    if name in names:
        raise SpecError(f"{path}: another input is also named {name!r}; output groups are named by file stem")
    fp = fingerprint(info.identity, bands, card, spec, weights, spec.write_probs)
    layout = SceneLayout(name, info.shape_yx, chunk_px, card.classes, info.crs_wkt, info.transform, spec.write_probs)
    status = group_status(spec.output, name)
    if status is not None and status == (fp, "complete") and not spec.overwrite:
        return ScenePlan(name, info, bands, grid, blks, (), fp, complete=True)
    meta = {
        "source": info.path,
        "model": card.to_dict(),
        "stitch": spec.stitch,
        "patch_px": tiling.patch_px,
        "overlap_px": tiling.overlap_px,
        "bands": list(bands),
        "version": __version__,
    }
    resumed = prepare_group(spec.output, layout, fp, meta, overwrite=spec.overwrite)
    done = done_blocks(spec.output, name) if resumed else frozenset()
    pending = tuple(b.index for b in blks if b.name not in done)
    return ScenePlan(name, info, bands, grid, blks, pending, fp)


def plan_case(path: Path, card: ModelCard, spec: JobSpec, weights: str, names: set[str]) -> CasePlan:
    """Open one MRI case (a folder of modalities or a 4-D file) and lay out its group (driver only)."""
    info = open_case(path, card.bands, spec.modality_patterns)
    ras = info.orientation.ras_shape(info.shape_xyz)
    tiling = spec.tiling.resolve(card.patch_px)
    grid = patch_grid((ras[0], ras[1]), tiling)
    context = int(card.params.get("context_slices", 0))
    if info.name in names:
        raise SpecError(f"{path}: another input is also named {info.name!r}; output groups are named by case")
    fp = fingerprint(info.identity, list(info.modalities), card, spec, weights, False)
    status = group_status(spec.output, info.name)
    if status is not None and status == (fp, "complete") and not spec.overwrite:
        return CasePlan(info.name, info, grid, ras[2], context, False, fp, complete=True)
    meta = {
        "source": info.path,
        "files": list(info.files),
        "modalities": list(info.modalities),
        "model": card.to_dict(),
        "stitch": spec.stitch,
        "patch_px": tiling.patch_px,
        "overlap_px": tiling.overlap_px,
        "version": __version__,
    }
    layout = VolumeLayout(info.name, info.shape_xyz, info.affine, info.voxel_mm, card.classes)
    resumed = prepare_volume_group(spec.output, layout, fp, meta, overwrite=spec.overwrite)
    pending = not (resumed and CASE_BLOCK in done_blocks(spec.output, info.name))
    return CasePlan(info.name, info, grid, ras[2], context, pending, fp)


def _min_lesion_ml(card: ModelCard) -> float:
    """The card's ``min_lesion_ml`` param: volume lesions smaller than this are removed (0: none)."""
    value = card.params.get("min_lesion_ml", 0.0)
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if not out >= 0:
        raise SpecError(f"model {card.name!r}: param min_lesion_ml={value!r} must be a number >= 0 (mL)")
    return out


def _finish_case(store: Path, plan: CasePlan) -> int:
    """Driver, after the case's block: write its lesion table (kept in the marker for resumes)."""
    stats = json.loads((Path(store) / ".geoseg" / plan.name / "done" / CASE_BLOCK).read_text())
    dtypes = {"lesion_id": np.uint32, "voxels": np.int64}
    write_table(store, plan.name, "lesions", {k: np.asarray(v, dtypes.get(k, np.float64)) for k, v in stats["lesions"].items()})
    return len(stats["lesions"]["lesion_id"])


# ---------------------------------------------------------------------------------------------
# Ray: tasks and the model actor


def _ray_options(spec: JobSpec) -> tuple[dict[str, Any], dict[str, Any], int, str]:
    """All Ray options in one place: (task options, actor options, workers, device kind)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = spec.device == "cuda" or (spec.device == "auto" and gpus > 0)
    if spec.device == "cuda" and gpus == 0:
        raise SpecError("device: cuda, but the Ray cluster has no GPU; use device: auto or cpu")
    workers = spec.workers or (gpus if use_gpu else 1)
    cpus = ray.cluster_resources().get("CPU", 0)
    if workers * spec.cpus_per_worker > cpus - 1:
        raise SpecError(
            f"workers: {workers} actors x {spec.cpus_per_worker} CPUs leave fewer than 1 of the cluster's "
            f"{cpus:g} CPUs for read and write tasks, so nothing would run; use fewer workers or a smaller cpus_per_worker"
        )
    actor: dict[str, Any] = {"max_restarts": 2, "max_task_retries": 2}
    if use_gpu:
        actor.update(num_gpus=1, num_cpus=spec.cpus_per_worker)
    else:
        actor.update(num_gpus=0, num_cpus=spec.cpus_per_worker)
    task: dict[str, Any] = {"num_cpus": 1, "max_retries": 2}
    return task, actor, workers, "cuda" if use_gpu else "cpu"


def init_ray(address: str | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray on demand."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS"),
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=True,
        configure_logging=True,
    )


def _dependencies(plan: ScenePlan, mode: StitchMode) -> dict[int, tuple[int, ...]]:
    """For each pending block, the blocks whose patch predictions its stitch needs."""
    if mode == "crop":
        return {j: (j,) for j in plan.pending}
    where: dict[tuple[int, int], int] = {}
    for b in plan.blocks:
        for p in b.core_patches():
            where[p] = b.index
    return {j: tuple(sorted({where[p] for p in plan.blocks[j].halo_patches()})) for j in plan.pending}


def _unwrap(err: BaseException) -> str:
    cause = err.cause if isinstance(err, RayTaskError) else None  # type: ignore[attr-defined]
    if isinstance(cause, GeosegError):
        return str(cause)
    text = str(cause or err).strip().splitlines()
    return text[-1] if text else type(err).__name__


_POOL: dict[str, Any] = {"key": None, "actors": []}


def _actor_pool(spec: JobSpec, options: dict[str, Any], workers: int, threads: int | None, weights: str) -> list[Any]:
    """Model actors for this job, reused from the previous job of this driver when identical
    (same model, weights, settings and Ray session), so weights load once per driver."""
    ctx = ray.get_runtime_context()
    model_spec = spec.model.to_model_spec()
    key = repr((ctx.gcs_address, ctx.get_job_id(), model_spec, weights, spec.batch_size, spec.device,
                spec.precision, threads, sorted(options.items()), workers))  # fmt: skip
    if _POOL["key"] != key:
        release_workers()
        cls = ray.remote(ModelActor).options(**options)
        _POOL["actors"] = [
            cls.remote(model_spec, spec.batch_size, spec.device, spec.precision, threads) for _ in range(workers)
        ]
        _POOL["key"] = key
    return list(_POOL["actors"])


def release_workers() -> None:
    """Stop the model actors this driver keeps between jobs."""
    actors, _POOL["actors"], _POOL["key"] = _POOL["actors"], [], None
    if ray.is_initialized():
        for a in actors:
            try:
                ray.kill(a)
            except (RayError, ValueError):
                pass  # a handle of an earlier Ray session: that actor is gone already


def _execute(
    plans: list[ScenePlan | CasePlan],
    spec: JobSpec,
    card: ModelCard,
    weights: str,
    results: dict[str, SceneResult],
    report: JobReport,
) -> None:
    task_opts, actor_opts, workers, device = _ray_options(spec)
    report.workers, report.device = workers, device
    node_cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = spec.threads_per_worker or (None if device == "cuda" else max(1, node_cpus // workers))
    actors = _actor_pool(spec, actor_opts, workers, threads, weights)
    report.device = ray.get(actors[0].describe.remote())  # what the actor really uses (a GPU node may lack CUDA)
    t_run = time.perf_counter()
    read = ray.remote(read_block).options(num_returns=2, **task_opts)
    stitch = ray.remote(stitch_write).options(**task_opts)
    read_vol = ray.remote(read_case).options(**task_opts)
    stitch_vol = ray.remote(stitch_write_case).options(**task_opts)
    lesion_classes = tuple(range(1, card.n_classes))
    min_lesion_ml = _min_lesion_ml(card)
    limit = spec.max_blocks_in_flight or int(os.environ.get("GEOSEG_MAX_BLOCKS_IN_FLIGHT", 2 * workers + 2))
    store = str(spec.output)
    total = sum(p.pending_patches for p in plans)
    labels_only = spec.stitch == "crop" and not spec.write_probs
    bar = _progress(total, spec.progress)
    inflight: dict[ray.ObjectRef, str] = {}
    failed: set[str] = set()
    turn = 0

    def settle(wait_all: bool) -> None:
        while inflight and (wait_all or len(inflight) >= limit):
            ready, _ = ray.wait(list(inflight), num_returns=1)
            scene = inflight.pop(ready[0])
            try:
                _, _, n = ray.get(ready[0])
            except RayError as e:
                if scene not in failed:
                    failed.add(scene)
                    results[scene].status, results[scene].error = "failed", _unwrap(e)
                    if spec.on_error == "fail":
                        raise GeosegError(f"{results[scene].path}: {results[scene].error}") from None
                continue
            results[scene].blocks_run += 1
            bar.update(n)

    try:
        for plan in plans:
            if isinstance(plan, CasePlan):
                settle(wait_all=False)
                patches_ref = read_vol.remote(plan.info, plan.grid, plan.context)
                pred = actors[turn % workers].predict.remote(patches_ref, plan.name, labels_only)
                turn += 1
                ref = stitch_vol.remote(
                    store, plan.info, plan.grid, spec.stitch, card.n_classes, lesion_classes, min_lesion_ml, pred
                )
                inflight[ref] = plan.name
                continue
            deps = _dependencies(plan, spec.stitch)
            users: dict[int, int] = defaultdict(int)
            for d in deps.values():
                for k in d:
                    users[k] += 1
            preds: dict[int, ray.ObjectRef] = {}
            valids: dict[int, ray.ObjectRef] = {}
            waiting = sorted(deps)
            for k in sorted(users):
                if plan.name in failed:
                    break
                settle(wait_all=False)
                patches_ref, valid_ref = read.remote(plan.info, plan.bands, plan.grid, plan.blocks[k])
                preds[k] = actors[turn % workers].predict.remote(patches_ref, plan.name, labels_only)
                if k in deps:
                    valids[k] = valid_ref
                turn += 1
                still = []
                for j in waiting:
                    if all(d in preds for d in deps[j]):
                        srcs = tuple(plan.blocks[d] for d in deps[j])
                        ref = stitch.remote(
                            store, plan.name, plan.grid, plan.blocks[j], spec.stitch, card.n_classes,
                            spec.write_probs, srcs, valids.pop(j), *(preds[d] for d in deps[j]),
                        )  # fmt: skip
                        inflight[ref] = plan.name
                        for d in deps[j]:
                            users[d] -= 1
                            if users[d] == 0:
                                del preds[d]
                    else:
                        still.append(j)
                waiting = still
        settle(wait_all=True)
        for counts in ray.get([a.take_counts.remote() for a in actors]):
            for scene, n in counts.items():
                results[scene].patches_forwarded += n
        for counts in ray.get([a.take_zero_counts.remote() for a in actors]):
            for scene, n in counts.items():
                results[scene].patches_zero += n
        report.run_seconds = time.perf_counter() - t_run
    except BaseException:
        release_workers()  # queued calls of a failed job must not linger in a reused pool
        raise
    finally:
        bar.close()


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, unit="patch", desc="geoseg", disable=not enabled, smoothing=0.1, dynamic_ncols=True)


def run_job(spec: JobSpec) -> JobReport:
    """Run every input of ``spec``; bad inputs are reported (or raise, with ``on_error: fail``)."""
    t0 = time.perf_counter()
    model_spec = spec.model.to_model_spec()
    model, card = load_model(model_spec)  # fails here, once, on a bad model: before any output exists
    _min_lesion_ml(card)
    spec.tiling.resolve(card.patch_px)  # a tiling that does not fit the patch fails the spec, once
    init_ray(spec.ray_address)
    _, _, _, kind = _ray_options(spec)
    weights = f"{model_digest(model)}:{'cpu-fp32' if kind == 'cpu' else 'gpu-' + spec.precision}"
    del model
    report = JobReport()
    results: dict[str, SceneResult] = {}
    plans: list[ScenePlan | CasePlan] = []
    volumes = card.normalisation.kind == "zscore_foreground"  # a volume model: inputs are MRI cases
    planner = plan_case if volumes else plan_scene
    out = Path(spec.output)
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out}: exists and is not a Zarr store folder; choose another --output")
    for path in spec.inputs:
        res = SceneResult(path=str(path))
        report.scenes.append(res)
        try:
            plan = planner(Path(path), card, spec, weights, {p.name for p in plans})
        except GeosegError as e:
            if spec.on_error == "fail":
                raise
            res.status, res.error = "failed", str(e)
            continue
        res.name = plan.name
        res.grid_patches = plan.total_patches if isinstance(plan, CasePlan) else len(plan.grid)
        res.blocks_total = 1 if isinstance(plan, CasePlan) else len(plan.blocks)
        res.patches_needed = plan.pending_patches
        results[plan.name] = res
        plans.append(plan)
    todo = [p for p in plans if p.pending]
    if todo:
        _execute(todo, spec, card, weights, results, report)
    for plan in plans:
        res = results[plan.name]
        if plan.complete:
            res.status = "complete"  # nothing to do: its blocks may be of another block size
            continue
        if res.status == "failed" and res.error:
            continue
        done = done_blocks(spec.output, plan.name)
        names = [CASE_BLOCK] if isinstance(plan, CasePlan) else [b.name for b in plan.blocks]
        missing = [b for b in names if b not in done]
        if missing:
            res.status, res.error = "failed", f"{len(missing)} blocks unfinished (e.g. {missing[0]}); rerun to resume"
            continue
        extra: dict[str, Any] = {"grid_patches": res.grid_patches, "patches_forwarded": res.patches_forwarded, "patches_zero": res.patches_zero, "blocks": len(names)}
        if isinstance(plan, CasePlan):
            extra["lesions"] = _finish_case(spec.output, plan)
        complete_group(spec.output, plan.name, extra)
        res.status = "complete"
    if any(r.status == "complete" for r in results.values()):
        with warnings.catch_warnings():
            # zarr warns that consolidated metadata is outside the v3 spec and that the marker
            # folder is no Zarr node; xarray reads the store root's consolidated metadata.
            warnings.simplefilter("ignore", UserWarning)
            zarr.consolidate_metadata(str(spec.output), zarr_format=3)
    report.seconds = time.perf_counter() - t0
    return report
