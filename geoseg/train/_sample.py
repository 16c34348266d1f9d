"""Training samples: slices drawn with a bias toward tumour, augmented crops made in one warp.

A sample is a crop of ``crop_px`` x ``crop_px`` from one axial slice stack
(:func:`~geoseg.train.slice_stack`). Its sampling grid composes, around a centre pixel, a flip
of either axis, a multiple of 90 degrees, a small rotation, a zoom and a smooth elastic field,
so the image (bilinear) and the labels (nearest) are resampled once; outside the slice both
read 0 (background, as the normalised background is). Then each modality's foreground is
scaled and shifted by its own random amounts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.errors import InputError

from ._data import LabelledCase, slice_stack
from ._spec import AugmentSection

__all__ = ["SliceIndex", "draw_batch"]


class SliceIndex:
    """Per case, the axial slices holding tumour and the slices holding any foreground; per
    class, how many of its voxels each slice of each case holds."""

    def __init__(self, cases: Sequence[LabelledCase]) -> None:
        self.cases = tuple(cases)
        self.tumour = [np.flatnonzero((c.labels > 0).any(axis=(0, 1))) for c in self.cases]
        self.brain = [np.flatnonzero(c.mask.any(axis=(0, 1))) for c in self.cases]
        n_classes = max(int(c.labels.max()) for c in self.cases) + 1
        # per_slice[cls] (n_cases, Z_max): voxels of class cls in slice k of case i
        z_max = max(c.labels.shape[2] for c in self.cases)
        self.per_slice = np.zeros((n_classes, len(self.cases), z_max), np.int64)
        for i, c in enumerate(self.cases):
            for cls in range(n_classes):
                self.per_slice[cls, i, : c.labels.shape[2]] = (c.labels == cls).sum(axis=(0, 1))
        for c, b in zip(self.cases, self.brain, strict=True):
            if b.size == 0:
                raise InputError(
                    f"case {c.name}: the foreground is empty (all voxels background); check the images"
                )

    def draw(self, rng: np.random.Generator, tumour_fraction: float) -> tuple[int, int, tuple[int, int]]:
        """``(case index, slice index, centre (x, y))``: a tumour slice with chance ``tumour_fraction``
        (centred on a random tumour pixel), else any foreground slice (centred on a foreground pixel)."""
        ci = int(rng.integers(len(self.cases)))
        case = self.cases[ci]
        want_tumour = self.tumour[ci].size > 0 and rng.random() < tumour_fraction
        k = int(rng.choice(self.tumour[ci] if want_tumour else self.brain[ci]))
        where = case.labels[:, :, k] > 0 if want_tumour else case.mask[:, :, k]
        xs, ys = np.nonzero(where)
        j = int(rng.integers(xs.size))
        return ci, k, (int(xs[j]), int(ys[j]))

    def draw_class(
        self, rng: np.random.Generator, tumour_fraction: float, weights: dict[int, float]
    ) -> tuple[int, int, tuple[int, int]]:
        """Like :meth:`draw`, but a tumour sample first picks a class by ``weights`` (classes absent
        from every case are skipped) and then a voxel of that class uniformly over all cases."""
        present = {c: w for c, w in weights.items() if c < len(self.per_slice) and self.per_slice[c].any() and w > 0}
        if not present or rng.random() >= tumour_fraction:
            return self.draw(rng, 0.0)
        classes = sorted(present)
        p = np.array([present[c] for c in classes], np.float64)
        cls = classes[int(rng.choice(len(classes), p=p / p.sum()))]
        counts = self.per_slice[cls]
        flat = int(rng.choice(counts.size, p=(counts / counts.sum()).ravel()))
        ci, k = divmod(flat, counts.shape[1])
        xs, ys = np.nonzero(self.cases[ci].labels[:, :, k] == cls)
        j = int(rng.integers(xs.size))
        return ci, k, (int(xs[j]), int(ys[j]))


def _sampling_grid(
    shape_xy: tuple[int, int],
    centre: tuple[float, float],
    crop_px: int,
    aug: AugmentSection | None,
    gen: torch.Generator,
) -> torch.Tensor:
    """(1, P, P, 2) grid for ``grid_sample(align_corners=False)`` reading a crop around ``centre``."""
    p = crop_px
    offs = torch.arange(p, dtype=torch.float32) - (p - 1) / 2
    u, v = torch.meshgrid(offs, offs, indexing="ij")  # rows (X) and columns (Y) of the crop
    uv = torch.stack([u, v])  # (2, P, P)

    def unif(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    if aug is not None and aug.enabled:
        flips = [(-1.0 if unif(0, 1) < aug.flip_prob else 1.0) for _ in range(2)]
        angle = math.radians(unif(-aug.rotate_deg, aug.rotate_deg))
        if unif(0, 1) < aug.rot90_prob:
            angle += math.pi / 2 * int(torch.randint(1, 4, (), generator=gen))
        zoom = math.exp(unif(math.log(aug.scale[0]), math.log(aug.scale[1])))
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        mat = torch.tensor([[cos * flips[0], -sin * flips[1]], [sin * flips[0], cos * flips[1]]])
        uv = torch.einsum("ij,jhw->ihw", mat, uv)
        if aug.elastic_px > 0:
            g = aug.elastic_grid
            coarse = torch.randn((1, 2, g, g), generator=gen) * aug.elastic_px
            uv = uv + F.interpolate(coarse, size=(p, p), mode="bicubic", align_corners=True)[0]
    sx, sy = shape_xy
    rows = (2 * (uv[0] + centre[0]) + 1) / sx - 1
    cols = (2 * (uv[1] + centre[1]) + 1) / sy - 1
    return torch.stack([cols, rows], dim=-1)[None]  # grid_sample wants (x=column, y=row)


def _intensity(
    image: torch.Tensor, fg: torch.Tensor, n_mod: int, aug: AugmentSection, gen: torch.Generator
) -> torch.Tensor:
    """Foreground of each modality's channels times ``1 + U(-s, s)`` plus ``U(-t, t)``."""
    per_mod = image.shape[0] // n_mod
    scale = 1 + (2 * torch.rand(n_mod, generator=gen) - 1) * aug.intensity_scale
    shift = (2 * torch.rand(n_mod, generator=gen) - 1) * aug.intensity_shift
    scale = scale.repeat_interleave(per_mod)[:, None, None]
    shift = shift.repeat_interleave(per_mod)[:, None, None]
    return torch.where(fg, image * scale + shift, image)


def draw_batch(
    index: SliceIndex,
    batch_size: int,
    crop_px: int,
    context: int,
    tumour_fraction: float,
    aug: AugmentSection | None,
    rng: np.random.Generator,
    gen: torch.Generator,
    class_weights: dict[int, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch: images (N, C * (2 * context + 1), P, P) float32 and labels (N, P, P) int64.

    The centre pixel is jittered by up to a quarter crop so that tumour is not always central.
    With ``class_weights``, tumour samples are centred class by class (:meth:`SliceIndex.draw_class`).
    """
    images, labels = [], []
    for _ in range(batch_size):
        if class_weights:
            ci, k, (cx, cy) = index.draw_class(rng, tumour_fraction, class_weights)
        else:
            ci, k, (cx, cy) = index.draw(rng, tumour_fraction)
        case = index.cases[ci]
        stack = torch.from_numpy(np.ascontiguousarray(slice_stack(case.image, k, context)))
        target = torch.from_numpy(
            np.stack([case.labels[:, :, k], case.mask[:, :, k]]).astype(np.float32)
        )  # (2, X, Y): labels and foreground, both resampled nearest
        jitter = rng.uniform(-crop_px / 4, crop_px / 4, size=2)
        grid = _sampling_grid((stack.shape[1], stack.shape[2]), (cx + jitter[0], cy + jitter[1]), crop_px, aug, gen)
        image = F.grid_sample(stack[None], grid, "bilinear", "zeros", align_corners=False)[0]
        warped = F.grid_sample(target[None], grid, "nearest", "zeros", align_corners=False)[0]
        fg = warped[1:2] > 0.5
        if aug is not None and aug.enabled and (aug.intensity_scale or aug.intensity_shift):
            image = _intensity(image, fg, case.image.shape[0], aug, gen)
        images.append(image)
        labels.append(warped[0].round().long())
    return torch.stack(images), torch.stack(labels)
