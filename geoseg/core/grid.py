"""The fixed patch grid and its blocks: pure geometry on integers, no I/O.

Along one axis of length ``L`` with patch ``P`` and overlap ``O`` (stride ``S = P - O``,
margin ``h = O // 2``), the axis is cut into *cores* ``[i*S, (i+1)*S)`` (the last one ends at
``L``). Patch ``i`` starts at ``i*S - h``, shifted inward to lie inside ``[0, L)``, so each core
sits in its patch with about ``h`` pixels of context either side. Core bounds are multiples of
``S`` whatever the image, so a block (a run of cores) and a Zarr chunk (``k*S`` pixels) never
straddle each other. An axis shorter than a patch gets one patch, padded by reflection.

>>> axis_layout(600, Tiling(256, 32))
((0, 208, 344), (0, 224, 448, 600))
>>> axis_layout(100, Tiling(256, 32))
((0,), (0, 100))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from geoseg.errors import InputError, SpecError

__all__ = [
    "Tiling",
    "PatchGrid",
    "Block",
    "Window",
    "axis_layout",
    "patch_grid",
    "blocks",
]

Window = tuple[int, int, int, int]
"""A pixel window ``(y0, x0, y1, x1)``, half-open."""


@dataclass(frozen=True)
class Tiling:
    """Patch size and overlap in pixels, the only settings the grid depends on."""

    patch_px: int = 256
    overlap_px: int = 32

    def __post_init__(self) -> None:
        if self.patch_px < 8:
            raise SpecError(f"tiling.patch_px (--patch-size) {self.patch_px} px is too small: use at least 8 (256 is usual)")
        if not 0 <= self.overlap_px <= self.patch_px // 2:
            raise SpecError(
                f"tiling.overlap_px (--overlap) {self.overlap_px} px does not fit a {self.patch_px} px patch: "
                f"use 0 to {self.patch_px // 2} px"
            )

    @property
    def stride_px(self) -> int:
        return self.patch_px - self.overlap_px

    @property
    def margin_px(self) -> int:
        """Context each core has on its left/top side inside its patch."""
        return self.overlap_px // 2

    def chunk_px(self, target_px: int = 512) -> int:
        """Zarr chunk edge: the multiple of the stride nearest ``target_px`` (at least one stride)."""
        return self.stride_px * max(1, round(target_px / self.stride_px))


def axis_layout(length: int, tiling: Tiling) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Patch starts and core bounds along one axis.

    Returns ``(starts, bounds)``: patch ``i`` covers ``[starts[i], starts[i] + P)`` and its core
    is ``[bounds[i], bounds[i+1])``; the cores partition ``[0, length)``.
    """
    if length < 1:
        raise InputError(f"axis length {length} is empty: an image needs at least 1 pixel per axis")
    p, s, h = tiling.patch_px, tiling.stride_px, tiling.margin_px
    if length <= p:
        return (0,), (0, length)
    starts: list[int] = []
    bounds = [0]
    for i in range(-(-length // s)):
        start = min(max(i * s - h, 0), length - p)
        end = min((i + 1) * s, length)
        if starts and start == starts[-1]:
            bounds[-1] = end  # same patch as before: its core grows instead of a duplicate patch
            continue
        starts.append(start)
        bounds.append(end)
    return tuple(starts), tuple(bounds)


@dataclass(frozen=True)
class PatchGrid:
    """The patches of a ``(Y, X)`` image: positions depend on the shape and tiling alone."""

    shape_yx: tuple[int, int]
    tiling: Tiling = Tiling()
    starts_y: tuple[int, ...] = field(init=False, repr=False)
    starts_x: tuple[int, ...] = field(init=False, repr=False)
    bounds_y: tuple[int, ...] = field(init=False, repr=False)
    bounds_x: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.shape_yx) != 2 or min(self.shape_yx) < 1:
            raise InputError(f"image shape {self.shape_yx} (Y, X) is empty: need at least 1x1 pixels")
        sy, by = axis_layout(self.shape_yx[0], self.tiling)
        sx, bx = axis_layout(self.shape_yx[1], self.tiling)
        object.__setattr__(self, "starts_y", sy)
        object.__setattr__(self, "bounds_y", by)
        object.__setattr__(self, "starts_x", sx)
        object.__setattr__(self, "bounds_x", bx)

    @property
    def n_yx(self) -> tuple[int, int]:
        return len(self.starts_y), len(self.starts_x)

    def __len__(self) -> int:
        ny, nx = self.n_yx
        return ny * nx

    def index(self, iy: int, ix: int) -> int:
        """Global row-major patch number, the order every stitch accumulates in."""
        return iy * len(self.starts_x) + ix

    def window(self, iy: int, ix: int) -> Window:
        """Pixels the patch covers, clipped to the image (a small image's patch is padded)."""
        p = self.tiling.patch_px
        y0, x0 = self.starts_y[iy], self.starts_x[ix]
        return y0, x0, min(y0 + p, self.shape_yx[0]), min(x0 + p, self.shape_yx[1])

    def core(self, iy: int, ix: int) -> Window:
        """Pixels this patch alone provides under ``crop`` stitching."""
        return self.bounds_y[iy], self.bounds_x[ix], self.bounds_y[iy + 1], self.bounds_x[ix + 1]


@dataclass(frozen=True)
class Block:
    """A rectangle of whole cores: the unit of reading, stitching, writing and resuming.

    ``cores_y``/``cores_x`` are half-open ranges of patch indices whose cores make up
    ``extent``; ``patches_y``/``patches_x`` those whose windows reach into it (``gaussian``).
    """

    index: int
    extent: Window
    cores_y: tuple[int, int]
    cores_x: tuple[int, int]
    patches_y: tuple[int, int]
    patches_x: tuple[int, int]

    def __post_init__(self) -> None:
        y0, x0, y1, x1 = self.extent
        if not (y0 < y1 and x0 < x1):
            raise InputError(f"block extent {self.extent} is empty")

    @property
    def shape_yx(self) -> tuple[int, int]:
        y0, x0, y1, x1 = self.extent
        return y1 - y0, x1 - x0

    @property
    def name(self) -> str:
        """Marker name: the extent itself, so markers of another block layout never match."""
        return "b_{}_{}_{}_{}".format(*self.extent)

    def core_patches(self) -> Iterator[tuple[int, int]]:
        for iy in range(*self.cores_y):
            for ix in range(*self.cores_x):
                yield iy, ix

    def halo_patches(self) -> Iterator[tuple[int, int]]:
        for iy in range(*self.patches_y):
            for ix in range(*self.patches_x):
                yield iy, ix


def _reach(starts: tuple[int, ...], p: int, lo: int, hi: int) -> tuple[int, int]:
    """Indices of patches whose span ``[start, start + p)`` meets ``[lo, hi)``."""
    first = next(i for i, s in enumerate(starts) if s + p > lo)
    last = max(i for i, s in enumerate(starts) if s < hi)
    return first, last + 1


def _groups(bounds: tuple[int, ...], stride: int, block_px: int) -> list[tuple[int, int]]:
    """Split the cores of one axis into runs whose outer bounds are multiples of ``block_px``."""
    groups: list[tuple[int, int]] = []
    first = 0
    for i in range(1, len(bounds) - 1):
        if bounds[i] % block_px == 0:
            groups.append((first, i))
            first = i
    groups.append((first, len(bounds) - 1))
    return groups


def blocks(grid: PatchGrid, block_px: int, chunk_px: int) -> tuple[Block, ...]:
    """Cut the grid into blocks of about ``block_px`` (rounded up to whole chunks), row-major.

    Block bounds are multiples of ``chunk_px`` (itself a multiple of the stride), so each Zarr
    chunk lies in exactly one block: one writer per chunk.
    """
    stride = grid.tiling.stride_px
    if chunk_px % stride:
        raise SpecError(f"chunk size {chunk_px} px must be a multiple of the stride {stride} px")
    if block_px < 1:
        raise SpecError(f"block size {block_px} px must be positive: try 2048")
    block_px = chunk_px * max(1, -(-block_px // chunk_px))
    p = grid.tiling.patch_px
    out: list[Block] = []
    for cy in _groups(grid.bounds_y, stride, block_px):
        for cx in _groups(grid.bounds_x, stride, block_px):
            y0, y1 = grid.bounds_y[cy[0]], grid.bounds_y[cy[1]]
            x0, x1 = grid.bounds_x[cx[0]], grid.bounds_x[cx[1]]
            out.append(
                Block(
                    index=len(out),
                    extent=(y0, x0, y1, x1),
                    cores_y=cy,
                    cores_x=cx,
                    patches_y=_reach(grid.starts_y, p, y0, y1),
                    patches_x=_reach(grid.starts_x, p, x0, x1),
                )
            )
    return tuple(out)


def patch_grid(shape_yx: tuple[int, int], tiling: Tiling = Tiling()) -> PatchGrid:
    """The fixed patch grid of an image of ``shape_yx`` pixels."""
    return PatchGrid((int(shape_yx[0]), int(shape_yx[1])), tiling)
