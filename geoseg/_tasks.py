"""What the Ray tasks do, as plain values and functions: read a block, stitch and write it.

Each block job of a plan carries a *read* (what its patches are) and a *write* (how its
predictions become arrays in the store). The pipeline runs ``read()`` in a task, sends the
patches through a model actor, and runs :func:`write_block_task` in another task; it never
looks inside. A raster block and an MRI case are two implementations of the same two
protocols. Kept apart from :mod:`geoseg.pipeline` so that task workers import rasterio and zarr
but never Ray's scheduling code or torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from geoseg._faults import inject
from geoseg.core.grid import Block, PatchGrid
from geoseg.core.lesions import drop_small_lesions, label_lesions, lesion_table
from geoseg.core.stitch import PatchOutput, StitchMode, extract_patches, stitch_extent
from geoseg.core.volume import normalise_case, slice_stack
from geoseg.core.water import scaled_for_threshold
from geoseg.sinks import Store, mark_block_done, write_block, write_volume
from geoseg.sources import CaseInfo, RasterInfo, load_case, read_window

__all__ = [
    "BlockRead",
    "BlockWrite",
    "BlockResult",
    "RasterRead",
    "RasterWrite",
    "CaseRead",
    "CaseWrite",
    "case_patches",
    "stitch_case",
    "read_block_task",
    "write_block_task",
    "run_task",
]


class BlockRead(Protocol):
    """A block's patches: ``read()`` returns (N, C, P, P) patches and a validity mask or None."""

    def read(self) -> tuple[np.ndarray, np.ndarray | None]: ...


class BlockWrite(Protocol):
    """How a block's predictions become arrays: ``write`` stitches the predictions of the blocks
    it needs (in the job's ``needs`` order) and writes the block's chunks; returns the stats its
    marker keeps."""

    def write(self, store: Store, valid: np.ndarray | None, preds: Sequence[np.ndarray]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class BlockResult:
    """What a finished block reports back: its group, marker name and marker stats."""

    group: str
    key: str
    stats: Mapping[str, Any] = field(default_factory=dict)


def n_cores(b: Block) -> int:
    """Patches whose cores make up the block: the ones it sends through the model."""
    return (b.cores_y[1] - b.cores_y[0]) * (b.cores_x[1] - b.cores_x[0])


@dataclass(frozen=True)
class RasterRead:
    """The core patches of one raster block, read through a window."""

    info: RasterInfo
    bands: tuple[int, ...]
    grid: PatchGrid
    block: Block
    threshold_of: tuple[str, str] | None = None  # (store URL, group): an index model's chosen threshold

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, P, P) patches in the file's dtype (float32 with ``threshold_of``: the two bands
        scaled so that the index thresholds at the group's chosen value), and the block's (h, w)
        validity."""
        ids = list(self.block.core_patches())
        wins = [self.grid.window(iy, ix) for iy, ix in ids]
        y0, x0 = min(w[0] for w in wins), min(w[1] for w in wins)
        y1, x1 = max(w[2] for w in wins), max(w[3] for w in wins)
        pixels, valid = read_window(self.info, (y0, x0, y1, x1), self.bands)
        if self.threshold_of is not None:
            from geoseg._water import read_threshold  # noqa: PLC0415

            t = read_threshold(Store(self.threshold_of[0]), self.threshold_of[1])
            pixels = np.stack(scaled_for_threshold(pixels[0], pixels[1], t))
        patches = extract_patches(pixels, (y0, x0), self.grid, ids)
        ey0, ex0, ey1, ex1 = self.block.extent
        return patches, np.ascontiguousarray(valid[ey0 - y0 : ey1 - y0, ex0 - x0 : ex1 - x0])


@dataclass(frozen=True)
class RasterWrite:
    """Stitch one raster block from its own and (``gaussian``) its neighbours' patches, write
    ``mask`` (and ``probs``)."""

    group: str
    grid: PatchGrid
    block: Block
    sources: tuple[Block, ...]
    mode: StitchMode
    output: PatchOutput
    n_classes: int
    write_probs: bool

    def write(self, store: Store, valid: np.ndarray | None, preds: Sequence[np.ndarray]) -> dict[str, Any]:
        results = [
            (iy, ix, pred[k])
            for src, pred in zip(self.sources, preds, strict=True)
            for k, (iy, ix) in enumerate(src.core_patches())
        ]
        labels, scores = stitch_extent(self.grid, self.block.extent, self.mode, self.output, self.n_classes, results, valid)
        arrays = {"mask": labels}
        if self.write_probs and scores is not None:
            arrays["probs"] = scores
        write_block(store, self.group, self.block.extent, arrays)
        return {"patches": n_cores(self.block)}


def case_patches(image_ras: np.ndarray, grid: PatchGrid, context: int) -> np.ndarray:
    """Every axial slice of a normalised RAS volume cut on ``grid``.

    Args:
        image_ras: (C, X, Y, Z) float32, normalised, in RAS voxel order.

    Returns:
        (Z * G, C * (2 * context + 1), P, P) float32 patches, slice-major then grid order (G
        patches a slice): the model input of training validation and of ``geoseg run`` alike.
    """
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    return np.concatenate(
        [extract_patches(slice_stack(image_ras, k, context), (0, 0), grid, ids) for k in range(image_ras.shape[3])]
    )


def stitch_case(
    preds: np.ndarray, grid: PatchGrid, mode: StitchMode, output: PatchOutput, n_classes: int
) -> np.ndarray:
    """Stitch :func:`case_patches`' predictions back into (X, Y, Z) uint8 labels in RAS order."""
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    n = len(ids)
    n_slices = preds.shape[0] // n
    labels = np.empty((*grid.shape_yx, n_slices), np.uint8)
    extent = (0, 0, *grid.shape_yx)
    for k in range(n_slices):
        part = preds[k * n : (k + 1) * n]
        labels[:, :, k], _ = stitch_extent(
            grid, extent, mode, output, n_classes, [(iy, ix, p) for (iy, ix), p in zip(ids, part, strict=True)]
        )
    return labels


@dataclass(frozen=True)
class CaseRead:
    """A whole MRI case: load, z-score over the foreground, to RAS, cut every axial slice."""

    info: CaseInfo
    grid: PatchGrid
    context: int

    def read(self) -> tuple[np.ndarray, None]:
        image, _ = normalise_case(load_case(self.info), self.info.path)
        ras = np.ascontiguousarray(self.info.orientation.to_ras(image))
        return case_patches(ras, self.grid, self.context), None


@dataclass(frozen=True)
class CaseWrite:
    """Stitch every slice, undo the reorientation exactly, find lesions (dropping those under
    ``min_lesion_ml``), write ``mask`` and ``lesion_id``; the lesion table goes in the marker."""

    info: CaseInfo
    grid: PatchGrid
    mode: StitchMode
    output: PatchOutput
    n_classes: int
    lesion_classes: tuple[int, ...]
    min_lesion_ml: float

    def write(self, store: Store, valid: np.ndarray | None, preds: Sequence[np.ndarray]) -> dict[str, Any]:
        (pred,) = preds
        labels_ras = stitch_case(pred, self.grid, self.mode, self.output, self.n_classes)
        mask = np.ascontiguousarray(self.info.orientation.from_ras(labels_ras))
        lesion_ids, count = label_lesions(mask, self.lesion_classes)
        voxel_ml = self.info.voxel_ml
        mask, lesion_ids, count = drop_small_lesions(mask, lesion_ids, count, voxel_ml, self.min_lesion_ml)
        table = lesion_table(lesion_ids, count, np.asarray(self.info.affine), voxel_ml)
        write_volume(store, self.info.name, {"mask": mask, "lesion_id": lesion_ids})
        return {"patches": int(pred.shape[0]), "lesions": {k: v.tolist() for k, v in table.items()}}


# ---------------------------------------------------------------------------------------------
# The task bodies the pipeline runs remotely


def _read_name(read: BlockRead) -> str:
    """A read's name for :func:`geoseg._faults.inject`: its input's path."""
    return str(getattr(getattr(read, "info", None), "path", ""))


def read_block_task(read: BlockRead) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Task: a block's (N, C, P, P) patches, its validity, and which patches are all zero
    ((N,) bool): the model actor answers those from one cached pass, so the scheduler packs
    calls by the others to fill whole batches."""
    inject("read", _read_name(read))
    patches, valid = read.read()
    zero = np.logical_not(patches.reshape(patches.shape[0], -1).any(axis=1))
    return patches, valid, zero


def write_block_task(
    store_url: str,
    group: str,
    key: str,
    write: BlockWrite,
    valid: np.ndarray | None,
    layout: Sequence[Sequence[tuple[int, int, int]]],
    *call_outputs: np.ndarray,
) -> BlockResult:
    """Task: assemble each needed block's predictions from the model calls that answered them,
    stitch and write the block, then write its marker (after its chunks).

    ``layout[i]`` lists, for the ``i``-th needed block, its pieces ``(call, start, stop)``: rows
    ``start:stop`` of ``call_outputs[call]``, in the block's patch order.
    """
    preds = [
        call_outputs[pieces[0][0]][pieces[0][1] : pieces[0][2]]
        if len(pieces) == 1
        else np.concatenate([call_outputs[c][a:b] for c, a, b in pieces])
        for pieces in layout
    ]
    inject("write", f"{group}/{key}")
    store = Store(store_url)
    stats = write.write(store, valid, preds)
    mark_block_done(store, group, key, stats)
    return BlockResult(group, key, stats)


def run_task(store_url: str, group: str, key: str, task: Any) -> BlockResult:
    """Task: one job of a later phase (``task.run(store)``), then its marker."""
    store = Store(store_url)
    stats = task.run(store)
    mark_block_done(store, group, key, stats)
    return BlockResult(group, key, stats)
