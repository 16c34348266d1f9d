"""Invariant 1: the patch grid depends on the image shape and tiling alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.core.grid import Tiling, axis_layout, blocks, patch_grid
from geoseg.errors import InputError, SpecError

tilings = st.builds(
    lambda p, frac: Tiling(p, int(frac * (p // 2))),
    st.sampled_from([16, 32, 64, 256]),
    st.floats(0, 1),
)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 3000), tiling=tilings)
def test_axis_cores_partition_and_sit_inside_patches(length: int, tiling: Tiling) -> None:
    starts, bounds = axis_layout(length, tiling)
    p = tiling.patch_px
    assert bounds[0] == 0 and bounds[-1] == length
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False))
    assert len(starts) == len(bounds) - 1 == len(set(starts))
    for i, s in enumerate(starts):
        assert 0 <= s and (s + p <= length or (s == 0 and length < p)), "patch leaves the image"
        assert s <= bounds[i] and bounds[i + 1] <= s + p, "core outside its patch"
    # interior core bounds are multiples of the stride: blocks and chunks never straddle
    assert all(b % tiling.stride_px == 0 for b in bounds[1:-1])
    if length >= p:
        assert starts[-1] + p == length, "edge patch not flush with the border"


@settings(max_examples=100, deadline=None)
@given(
    h=st.integers(1, 1500),
    w=st.integers(1, 1500),
    tiling=tilings,
    chunk_strides=st.integers(1, 3),
    block_chunks=st.integers(1, 4),
)
def test_blocks_partition_the_image_on_chunk_bounds(
    h: int, w: int, tiling: Tiling, chunk_strides: int, block_chunks: int
) -> None:
    grid = patch_grid((h, w), tiling)
    chunk = tiling.stride_px * chunk_strides
    blks = blocks(grid, chunk * block_chunks, chunk)
    area = 0
    seen = set()
    for b in blks:
        y0, x0, y1, x1 = b.extent
        area += (y1 - y0) * (x1 - x0)
        for edge, size in ((y0, h), (y1, h), (x0, w), (x1, w)):
            assert edge % chunk == 0 or edge == size, "block bound off the chunk grid"
        cores = list(b.core_patches())
        seen.update(cores)
        assert set(cores) <= set(b.halo_patches())
    assert area == h * w
    assert seen == {(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])}
    assert sum(len(list(b.core_patches())) for b in blks) == len(grid), "a patch in two blocks"


def test_grid_ignores_block_size() -> None:
    grid = patch_grid((1000, 777), Tiling(256, 32))
    a = [p for b in blocks(grid, 448, 448) for p in b.core_patches()]
    b = [p for b in blocks(grid, 4096, 448) for p in b.core_patches()]
    assert sorted(a) == sorted(b)
    assert grid.starts_y == (0, 208, 432, 656, 744) and grid.starts_x == (0, 208, 432, 521)


def test_small_image_is_one_patch() -> None:
    grid = patch_grid((100, 70), Tiling(256, 32))
    assert len(grid) == 1 and grid.window(0, 0) == (0, 0, 100, 70) and grid.core(0, 0) == (0, 0, 100, 70)


@pytest.mark.parametrize(("patch", "overlap"), [(256, 200), (256, -1), (4, 0)])
def test_bad_tiling_names_value_and_range(patch: int, overlap: int) -> None:
    with pytest.raises(SpecError, match=str(patch) if patch < 8 else str(overlap)):
        Tiling(patch, overlap)


def test_empty_image_is_refused() -> None:
    with pytest.raises(InputError, match="empty"):
        patch_grid((0, 10))
