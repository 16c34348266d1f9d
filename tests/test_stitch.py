"""Invariant 4: stitching is pure, order-fixed, and tiled inference approximates whole-image inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.core.grid import Tiling, blocks, patch_grid
from geoseg.core.stitch import (
    CropMerger,
    GaussianMerger,
    extract_patches,
    gaussian_weight,
    labels_from_scores,
    make_merger,
    reference,
)


def _double(x: np.ndarray) -> np.ndarray:
    return x[:, :2] * 2.0


@pytest.mark.parametrize("shape", [(100, 70), (256, 256), (1000, 777), (257, 513)])
@pytest.mark.parametrize("mode", ["crop", "gaussian"])
def test_pointwise_model_is_reproduced_exactly_by_tiling(shape: tuple[int, int], mode: str) -> None:
    img = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    out = reference(img, _double, patch_grid(shape, Tiling(256, 32)), mode, 2)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, img[:2] * 2.0, rtol=1e-6)


@pytest.mark.parametrize("mode", ["crop", "gaussian"])
@pytest.mark.parametrize("block_px", [1, 448, 896, 10_000])
def test_blockwise_stitch_is_bit_identical_to_reference(mode: str, block_px: int) -> None:
    shape = (1000, 777)
    rng = np.random.default_rng(1)
    img = rng.random((2, *shape), dtype=np.float32)
    grid = patch_grid(shape, Tiling(256, 32))
    noisy = lambda x: np.sin(x * 7.0) + x[:, ::-1] ** 2  # noqa: E731  (patch-position dependent values)
    ref = reference(img, noisy, grid, mode, 2)  # type: ignore[arg-type]
    out = np.full_like(ref, np.nan)
    for b in blocks(grid, block_px, grid.tiling.chunk_px()):
        ids = sorted(b.halo_patches() if mode == "gaussian" else b.core_patches(), key=lambda p: grid.index(*p))
        merger = make_merger(mode, grid, b.extent, 2)  # type: ignore[arg-type]
        for (iy, ix), s in zip(ids, noisy(extract_patches(img, (0, 0), grid, ids)), strict=True):
            merger.add(iy, ix, s)
        y0, x0, y1, x1 = b.extent
        out[:, y0:y1, x0:x1] = merger.finalize()
    assert np.array_equal(out, ref)


def test_small_patch_is_reflect_padded_and_cropped_back() -> None:
    img = np.arange(2 * 10 * 7, dtype=np.float32).reshape(2, 10, 7)
    grid = patch_grid((10, 7), Tiling(16, 4))
    p = extract_patches(img, (0, 0), grid, [(0, 0)])
    assert p.shape == (1, 2, 16, 16)
    assert np.array_equal(p[0, :, :10, :7], img)
    assert np.array_equal(p[0, :, 10, :7], img[:, 8])  # reflect: row 10 mirrors row 8


def test_gaussian_weight_is_positive_peaked_float32() -> None:
    w = gaussian_weight(256)
    assert w.dtype == np.float32 and w.min() > 0 and w.max() == 1.0
    assert w[128, 128] > w[0, 0] and np.array_equal(w, w.T)


def test_merger_refuses_reuse_and_disorder() -> None:
    grid = patch_grid((600, 600), Tiling(256, 32))
    m = CropMerger(grid, (0, 0, 600, 600), 1)
    s = np.ones((1, 256, 256), np.float32)
    m.add(0, 1, s)
    with pytest.raises(RuntimeError, match="order"):
        m.add(0, 0, s)
    m.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        m.add(2, 2, s)
    g = GaussianMerger(grid, (0, 0, 256, 256), 1)
    g.add(0, 0, s)
    g.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        g.finalize()


def test_labels_mark_nodata_255() -> None:
    scores = np.array([[[0.2, 0.9]], [[0.8, 0.1]]], np.float32)
    valid = np.array([[True, False]])
    assert labels_from_scores(scores, valid).tolist() == [[1, 255]]


def _conv_stack(reach: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for i in range(reach):
        layers += [torch.nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Conv2d(8, 2, 1)).eval()


@pytest.mark.parametrize("mode", ["crop", "gaussian"])
def test_tiled_conv_matches_whole_image_inside_the_margin(mode: str) -> None:
    """A fully-convolutional model whose reach (6 px) is below the core margin (16 px): crop
    stitching equals whole-image inference away from the image border up to float rounding;
    gaussian blends in patch-edge pixels, so it is close but not equal (measured here)."""
    model = _conv_stack(reach=6)
    img = np.random.default_rng(2).random((3, 600, 520), dtype=np.float32)
    with torch.inference_mode():
        whole = model(torch.from_numpy(img)[None])[0].numpy()
        tiled = reference(img, lambda x: model(torch.from_numpy(x)).numpy(), patch_grid((600, 520)), mode, 2)  # type: ignore[arg-type]
    diff = np.abs(tiled - whole)[:, 6:-6, 6:-6]
    if mode == "crop":
        assert diff.max() < 1e-5
    else:
        assert diff.mean() < 0.05 and diff.max() > 1e-5


def test_labels_only_equals_argmax_of_probabilities() -> None:
    """The actor's uint8 labels are np.argmax of the very probabilities the reference uses,
    ties to the first class included."""
    from geoseg.infer import _first_argmax

    probs = torch.softmax(torch.randn(3, 4, 16, 16), dim=1)
    probs[0, :, 0, 0] = 0.25
    probs[1, 1:3, 2, 2] = 0.5
    probs[1, [0, 3], 2, 2] = 0.0
    labels = _first_argmax(probs)
    assert labels.dtype == np.uint8 and labels[0, 0, 0] == 0 and labels[1, 2, 2] == 1
    assert np.array_equal(labels, np.argmax(probs.numpy(), axis=1))
    probs[2, 2, 5, 5] = float("nan")  # NaN is the maximum to np.argmax: so here too
    assert np.array_equal(_first_argmax(probs), np.argmax(probs.numpy(), axis=1))
    two = torch.softmax(torch.randn(2, 2, 8, 8), dim=1)  # two classes take a faster path: same answers
    two[0, :, 0, 0] = 0.5  # a tie: the first class
    two[0, 1, 1, 1] = float("nan")  # NaN in class 1 only: class 1
    two[0, 0, 2, 2] = float("nan")  # NaN in class 0: class 0, whatever class 1 holds
    two[1, :, 3, 3] = float("nan")
    assert np.array_equal(_first_argmax(two), np.argmax(two.numpy(), axis=1))
