"""The plan: a job spec becomes groups of uniform block jobs, on the driver, without Ray.

One group per input (a raster scene or an MRI case), one Zarr group each. A group's work is
a list of :class:`BlockJob` (a raster block, or a whole case as one block), each carrying what
its read task reads, what its write task writes and which blocks' predictions it needs
(``gaussian`` stitching needs the neighbours'). Later phases (:class:`TaskJob`, no model) run
after a group's model phase, e.g. a chunk-aligned pass that joins instance ids across blocks;
earlier phases run before it, e.g. the histogram pass that chooses a scene's Otsu threshold.
The scheduler in :mod:`geoseg.pipeline` runs any such list without knowing rasters from volumes.

Planning reads the inputs' metadata and the store's status; it writes nothing. What geoseg
changed of the spec (a block size rounded to the chunk grid) comes back as a note.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from geoseg import __version__
from geoseg._remote import url_name
from geoseg._tasks import BlockRead, BlockWrite, CaseRead, CaseWrite, RasterRead, RasterWrite, n_cores
from geoseg.core.grid import Block, PatchGrid, Tiling, blocks, patch_grid
from geoseg.core.stitch import PatchOutput
from geoseg.errors import GeosegError, SpecError, StoreError
from geoseg.models import INDEX_ARCHITECTURES, OTSU, ModelCard, instance_thresholds, resolve_bands
from geoseg.sinks import SceneLayout, Store, VolumeLayout, done_blocks, group_status
from geoseg.spec import JobSpec

__all__ = [
    "JobTiling",
    "BlockJob",
    "TaskJob",
    "GroupPlan",
    "InputFailure",
    "JobPlan",
    "plan_job",
    "fingerprint",
    "min_lesion_ml",
]


@dataclass(frozen=True)
class JobTiling:
    """The tiling, Zarr chunk and block sizes of a job, resolved once from spec and card."""

    tiling: Tiling
    chunk_px: int
    block_px: int

    @classmethod
    def of(cls, spec: JobSpec, card: ModelCard) -> tuple[JobTiling, str]:
        """The job's layout and a note where geoseg changed the spec's block size ("" if not).

        The default block is 4 x 4 Zarr chunks (1792 px for 256 px patches overlapping by 32);
        a given block size is rounded up to whole chunks, so each chunk has one writer.
        """
        tiling = spec.tiling.resolve(card)
        chunk = tiling.chunk_px()
        block = chunk * max(1, -(-(spec.block_px or 4 * chunk) // chunk))
        note = ""
        if spec.block_px is not None and block != spec.block_px:
            note = (
                f"block_px {spec.block_px} rounded up to {block} px: whole {chunk} px Zarr chunks "
                f"(a multiple of the {tiling.stride_px} px patch stride), so each chunk has one writer"
            )
        return cls(tiling, chunk, block), note


@dataclass(frozen=True)
class BlockJob:
    """One unit of the model phase: read ``n_patches`` patches, predict, stitch and write.

    ``needs`` are the indices (in the group's ``jobs``) of the blocks whose predictions the
    write takes, in the order it takes them; a block always needs its own.
    """

    index: int
    key: str
    n_patches: int
    read: BlockRead
    write: BlockWrite
    needs: tuple[int, ...]


class GroupTask(Protocol):
    """A job of a later phase: ``run(store)`` does its part and returns its marker's stats."""

    def run(self, store: Store) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TaskJob:
    """One unit of a later phase: a task on the store, after the group's earlier phases."""

    key: str
    task: GroupTask


@dataclass(frozen=True)
class GroupPlan:
    """One input, ready to run: its output group, block jobs and what is already done."""

    name: str
    path: str
    fingerprint: str
    layout: SceneLayout | VolumeLayout
    meta: Mapping[str, Any]
    jobs: tuple[BlockJob, ...]
    grid_patches: int
    done: frozenset[str] = frozenset()
    resumed: bool = False
    complete: bool = False
    later: tuple[tuple[TaskJob, ...], ...] = ()
    tables: tuple[str, ...] = ()
    before: tuple[tuple[TaskJob, ...], ...] = ()

    @property
    def pending(self) -> tuple[BlockJob, ...]:
        """Block jobs still to write (all of them in a new group)."""
        return () if self.complete else tuple(j for j in self.jobs if j.key not in self.done)

    @property
    def predict(self) -> tuple[BlockJob, ...]:
        """Block jobs whose patches go through the model: the pending ones and, for ``gaussian``,
        the finished neighbours a pending block blends with."""
        wanted = sorted({k for j in self.pending for k in j.needs})
        return tuple(self.jobs[k] for k in wanted)

    @property
    def patches_needed(self) -> int:
        return sum(j.n_patches for j in self.predict)

    @property
    def later_pending(self) -> tuple[tuple[TaskJob, ...], ...]:
        if self.complete:
            return ()
        return tuple(tuple(t for t in phase if t.key not in self.done) for phase in self.later)

    @property
    def before_pending(self) -> tuple[tuple[TaskJob, ...], ...]:
        """Earlier-phase jobs still to run, phase by phase (none once the model phase started:
        its blocks need what the earlier phases made)."""
        if self.complete:
            return ()
        return tuple(tuple(t for t in phase if t.key not in self.done) for phase in self.before)

    @property
    def has_work(self) -> bool:
        return bool(self.pending) or any(self.later_pending) or any(self.before_pending)

    @property
    def marker_keys(self) -> tuple[str, ...]:
        """Every marker a finished group has: one per block job and per earlier- and later-phase job."""
        return (
            tuple(t.key for phase in self.before for t in phase)
            + tuple(j.key for j in self.jobs)
            + tuple(t.key for phase in self.later for t in phase)
        )


@dataclass(frozen=True)
class InputFailure:
    """An input that cannot be run, with its one-line reason."""

    path: str
    error: str


@dataclass(frozen=True)
class JobPlan:
    """Every input of a job: the groups to run (or complete already) and those refused."""

    store: Store
    groups: tuple[GroupPlan, ...]
    failures: tuple[InputFailure, ...]
    order: tuple[str, ...]  # every input path, in the spec's order
    output: PatchOutput
    notes: tuple[str, ...] = field(default=())

    @property
    def todo(self) -> tuple[GroupPlan, ...]:
        return tuple(g for g in self.groups if g.has_work)


def min_lesion_ml(card: ModelCard) -> float:
    """The card's ``min_lesion_ml`` param: volume lesions smaller than this are removed (0: none)."""
    value = card.params.get("min_lesion_ml", 0.0)
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if not out >= 0:
        raise SpecError(f"model {card.name!r}: param min_lesion_ml={value!r} must be a number >= 0 (mL)")
    return out


def fingerprint(identity: str, bands: Any, card: ModelCard, weights: str, tiling: Tiling, spec: JobSpec) -> str:
    """Hash of everything that decides the output values, and nothing else.

    The input's content identity, the bands read, the card after params and defaults (its
    description and licence aside), the weights' content, the tiling, the stitching and the
    arrays written. Never workers, block size, paths, timestamps or the spelling of a default.
    How the model computes (CPU fp32, GPU bf16...) is checked apart, when the model actors
    are up (``numerics`` in the group's metadata).
    """
    model = {k: v for k, v in card.to_dict().items() if k not in ("description", "licence")}
    key = {
        "input": identity,
        "bands": list(bands),
        "model": model,
        "weights": weights,
        "patch_px": tiling.patch_px,
        "overlap_px": tiling.overlap_px,
        "stitch": spec.stitch,
        "probs": spec.write_probs,
        "geoseg": __version__.rsplit(".", 1)[0],
    }
    if spec.instances != "none":  # only then: groups written without instances keep their fingerprint
        key["instances"] = [spec.instances, list(instance_classes(card, spec))]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def instance_classes(card: ModelCard, spec: JobSpec) -> tuple[int, ...]:
    """The class indices whose connected components are objects: ``spec.instance_classes`` by
    name, else every class but the first (the background).

    Raises:
        SpecError: a name that is not one of the card's classes.
    """
    if spec.instance_classes is None:
        return tuple(range(1, card.n_classes))
    out = []
    for name in spec.instance_classes:
        if name not in card.classes:
            raise SpecError(
                f"instance_classes: {name!r} is not a class of model {card.name!r} (classes: {', '.join(card.classes)}); "
                "use --instance-classes with those names"
            )
        out.append(card.classes.index(name))
    if not out:
        raise SpecError("instance_classes: empty; name at least one class, or leave it out for every class but the first")
    return tuple(sorted(set(out)))


def _store_state(store: Store, name: str, fp: str, overwrite: bool) -> tuple[bool, bool, frozenset[str]]:
    """``(resumed, complete, done markers)`` of group ``name`` as the store holds it."""
    status = group_status(store, name)
    if status is None or overwrite:
        return False, False, frozenset()
    if status[0] != fp:
        raise StoreError(
            f"{store.url}: group {name!r} was written by a different job (fingerprint "
            f"{status[0][:12]} != {fp[:12]}: other input, model or settings); "
            f"write to a new store or pass --overwrite"
        )
    if status[1] == "complete":
        return True, True, frozenset()
    return True, False, done_blocks(store, name)


def _dependencies(grid: PatchGrid, blks: tuple[Block, ...], mode: str) -> list[tuple[int, ...]]:
    """For each block, the blocks whose patch predictions its stitch takes: its own (``crop``),
    those of every patch reaching into it (``gaussian``), or those of every patch overlapping
    one of its own (``detections``: an instance model's overlap edges)."""
    if mode == "crop":
        return [(b.index,) for b in blks]
    where: dict[tuple[int, int], int] = {}
    for b in blks:
        for p in b.core_patches():
            where[p] = b.index
    if mode == "detections":
        from geoseg.core.detections import overlapping_patches  # noqa: PLC0415

        return [
            tuple(sorted({b.index} | {where[q] for p in b.core_patches() for q in overlapping_patches(grid, *p)}))
            for b in blks
        ]
    return [tuple(sorted({where[p] for p in b.halo_patches()})) for b in blks]


def _plan_raster(
    path: Path | str, card: ModelCard, spec: JobSpec, weights: str, store: Store, output: PatchOutput, tiles: JobTiling
) -> GroupPlan:
    from geoseg.sources import open_raster  # noqa: PLC0415  (rasterio: only for raster jobs)

    info = open_raster(path)
    bands = resolve_bands(card.bands, info.descriptions, info.count, info.path)
    tiling, chunk_px = tiles.tiling, tiles.chunk_px
    grid = patch_grid(info.shape_yx, tiling)
    blks = blocks(grid, tiles.block_px, chunk_px)
    name = info.stem
    fp = fingerprint(info.identity, bands, card, weights, tiling, spec)
    resumed, complete, done = _store_state(store, name, fp, spec.overwrite)
    detections = card.task == "instance"
    needs = _dependencies(grid, blks, "detections" if detections else spec.stitch)
    before: tuple[tuple[TaskJob, ...], ...] = ()
    otsu = card.architecture in INDEX_ARCHITECTURES and card.params.get("threshold") == OTSU
    if otsu:
        from geoseg._water import threshold_phases  # noqa: PLC0415

        phases = threshold_phases(name, [(b.name, b.extent) for b in blks], info, (bands[0], bands[1]), card.architecture)
        before = tuple(tuple(TaskJob(k, t) for k, t in phase) for phase in phases)

    def write(b: Block) -> BlockWrite:
        sources = tuple(blks[k] for k in needs[b.index])
        if detections:
            from geoseg._instances import DetectionWrite  # noqa: PLC0415

            merge = instance_thresholds(card)[2]
            return DetectionWrite(name, grid, b, sources, merge, info.shape_yx[1], info.crs_wkt, info.transform)
        return RasterWrite(name, grid, b, sources, spec.stitch, output, card.n_classes, spec.write_probs)

    jobs = tuple(
        BlockJob(
            index=b.index,
            key=b.name,
            n_patches=n_cores(b),
            read=RasterRead(info, bands, grid, b, (store.url, name) if otsu else None),
            write=write(b),
            needs=needs[b.index],
        )
        for b in blks
    )
    later: tuple[tuple[TaskJob, ...], ...] = ()
    objects = instance_classes(card, spec) if spec.instances == "components" else ()
    if detections:
        from geoseg._instances import detection_phases  # noqa: PLC0415

        later = tuple(tuple(TaskJob(k, t) for k, t in phase) for phase in detection_phases(name, grid, blks, info.transform))
    elif objects:
        from geoseg._instances import instance_phases  # noqa: PLC0415

        phases = instance_phases(
            name, [(b.name, b.extent) for b in blks], objects, info.shape_yx[1], info.crs_wkt, info.transform
        )
        later = tuple(tuple(TaskJob(k, t) for k, t in phase) for phase in phases)
    layout = SceneLayout(
        name, info.shape_yx, chunk_px, card.classes, info.crs_wkt, info.transform, spec.write_probs,
        info.gcps, info.gcps_crs_wkt, info.rpcs, instances=spec.instances != "none" or detections,
    )  # fmt: skip
    meta = {
        "source": info.path,
        "model": card.to_dict(),
        "stitch": spec.stitch,
        "patch_px": tiling.patch_px,
        "overlap_px": tiling.overlap_px,
        "bands": list(bands),
        "version": __version__,
    }
    if detections:
        meta["instances"] = {"method": "model", "classes": list(card.classes[1:])}
    elif later:
        meta["instances"] = {"method": spec.instances, "classes": [card.classes[c] for c in objects]}
    return GroupPlan(name, str(path), fp, layout, meta, jobs, len(grid), done, resumed, complete, later, before=before)


CASE_BLOCK = "case"
"""Marker name of a volume: a case is one block (cases are small and many)."""


def _plan_case(
    path: Path | str, card: ModelCard, spec: JobSpec, weights: str, store: Store, output: PatchOutput, tiles: JobTiling
) -> GroupPlan:
    from geoseg.sources import open_case  # noqa: PLC0415

    info = open_case(path, card.bands, spec.modality_patterns)
    ras = info.orientation.ras_shape(info.shape_xyz)
    tiling = tiles.tiling
    grid = patch_grid((ras[0], ras[1]), tiling)
    context = int(card.params.get("context_slices", 0))
    fp = fingerprint(info.identity, list(info.modalities), card, weights, tiling, spec)
    resumed, complete, done = _store_state(store, info.name, fp, spec.overwrite)
    n = ras[2] * len(grid)
    write = CaseWrite(info, grid, spec.stitch, output, card.n_classes, tuple(range(1, card.n_classes)), min_lesion_ml(card))
    job = BlockJob(0, CASE_BLOCK, n, CaseRead(info, grid, context), write, (0,))
    layout = VolumeLayout(info.name, info.shape_xyz, info.affine, info.voxel_mm, card.classes)
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
    return GroupPlan(info.name, str(path), fp, layout, meta, (job,), n, done, resumed, complete, tables=("lesions",))


def _georeferencing_note(path: Path | str, g: GroupPlan) -> str:
    """One line for an input georeferenced other than by an affine transform: geoseg carries
    what it has (never drops it silently) and says how to get a map grid."""
    layout = g.layout
    if not isinstance(layout, SceneLayout) or layout.crs_wkt:
        return ""
    warp = "for a map grid, warp it first (gdalwarp -t_srs EPSG:<code> in.tif out.tif)"
    if layout.gcps:
        return (
            f"{path}: georeferenced by {len(layout.gcps)} ground control points, not an affine transform: the "
            f"mask stays on the file's pixel grid and carries the GCPs (Zarr attribute gcps, COG export); {warp}"
        )
    if layout.rpcs:
        return (
            f"{path}: georeferenced by RPCs, not an affine transform: the mask stays on the file's pixel grid and "
            f"carries the RPCs (Zarr attribute rpcs, COG export); {warp}, orthorectified (gdalwarp -rpc)"
        )
    if layout.transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
        return f"{path}: has no georeferencing (no CRS, transform, GCPs or RPCs): the mask is in pixel coordinates"
    return f"{path}: has a transform but no CRS: the mask has the same transform and no CRS"


def _not_a_case(path: Path | str) -> bool:
    low = _name(path).lower()
    if isinstance(path, str):  # an object URL: a "folder" is a prefix, so tell by the name
        return "." in low and not low.endswith((".nii", ".nii.gz"))
    return path.is_file() and not low.endswith((".nii", ".nii.gz"))


def _check_instance_job(card: ModelCard, spec: JobSpec, volumes: bool) -> None:
    """An instance model's job: scenes, ``crop`` (each pixel from one patch's instances), no
    class probabilities, no second source of instances; thresholds in range."""
    name = card.name
    if volumes:
        raise SpecError(f"model {name!r} is an instance model (task: instance); geoseg runs those on scenes, not MRI cases")
    if spec.stitch != "crop":
        raise SpecError(
            f"stitch: {spec.stitch!r} blends class scores; instance model {name!r} joins its detections by mask "
            "overlap and takes each pixel from one patch: use --stitch crop"
        )
    if spec.write_probs:
        raise SpecError(f"write_probs: instance model {name!r} gives instances, not class probabilities; leave --probs out")
    if spec.instances != "none" or spec.instance_classes is not None:
        what = f"instances: {spec.instances!r}" if spec.instances != "none" else "instance_classes"
        raise SpecError(
            f"{what} labels a semantic mask; model {name!r} is an instance model, whose "
            "objects come from the model: leave --instances and --instance-classes out"
        )
    overlap = spec.tiling.resolve(card).overlap_px
    if overlap < 2:
        raise SpecError(
            f"tiling.overlap_px (--overlap) {overlap}: instance model {name!r} joins an object's detections across "
            "patches where the patches overlap, so they must overlap; use at least 2 (the card says "
            f"{card.overlap_px})"
        )
    instance_thresholds(card)


def _name(path: Path | str) -> str:
    """The file (or case folder) name of a path or URL."""
    return url_name(path) if isinstance(path, str) else path.name


def plan_job(spec: JobSpec, card: ModelCard, weights: str) -> JobPlan:
    """Plan every input of ``spec`` for the model of ``card`` (weights identified by ``weights``).

    An input that cannot run (missing, unreadable, bands missing, a group of another job in
    the store) becomes an :class:`InputFailure` naming it; the others are planned. With
    ``on_error: fail`` the first failure raises instead.

    Raises:
        StoreError: the output is a file, not a store.
        GeosegError: the first bad input, with ``on_error: fail``.
    """
    store = Store(spec.output)
    store.check_writable()
    tiles, block_note = JobTiling.of(spec, card)
    output: PatchOutput = "labels" if spec.stitch == "crop" and not spec.write_probs else "scores"
    volumes = card.normalisation.kind == "zscore_foreground"  # a volume model: inputs are MRI cases
    if volumes and spec.instances != "none":
        raise SpecError(
            f"instances: {spec.instances!r} is for scenes; an MRI case's lesions are its objects already "
            "(lesion_id and the lesions table): leave instances out"
        )
    if spec.instances != "none":
        instance_classes(card, spec)  # a bad class name is the job's error, not each input's
    elif spec.instance_classes is not None and card.task != "instance":
        raise SpecError(
            "instance_classes (--instance-classes) chooses the classes of --instances components; add that or drop them"
        )
    if card.task == "instance":
        _check_instance_job(card, spec, volumes)
    planner = _plan_case if volumes else _plan_raster
    notes: list[str] = [block_note] if block_note and not volumes else []
    groups: list[GroupPlan] = []
    failures: list[InputFailure] = []
    skipped: list[str] = []
    names: dict[str, str] = {}
    for path in spec.inputs:
        if volumes and spec.from_pattern(path) and _not_a_case(path):
            skipped.append(_name(path))
            continue
        try:
            g = planner(path, card, spec, weights, store, output, tiles)
            if g.name in names:
                raise SpecError(
                    f"{path}: another input ({names[g.name]}) is also named {g.name!r}; output groups are named "
                    "by file stem (or case folder): rename one or run them into separate stores"
                )
        except GeosegError as e:
            if spec.on_error == "fail":
                raise
            failures.append(InputFailure(str(path), str(e)))
            continue
        names[g.name] = str(path)
        groups.append(g)
        note = _georeferencing_note(path, g)
        if note:
            notes.append(note)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        notes.append(f"skipped {len(skipped)} path(s) the input patterns matched that are no MRI case: {shown}")
    order = tuple(str(p) for p in spec.inputs if _name(p) not in skipped or not spec.from_pattern(p))
    return JobPlan(store, tuple(groups), tuple(failures), order, output, tuple(notes))
