"""Training crops of a raster: class-balanced centres, one warp (flips, 90° turns, scale), brightness/contrast.

Crops are read from the training rectangles only (:class:`~geoseg.train._raster.RasterScene`),
so no validation pixel is ever seen. A share ``rare_fraction`` of crops is centred on a
labelled pixel (a class drawn uniformly among those present, then one of its pixels), the rest
anywhere: thin classes such as roads are then seen in most crops. The warp is the one of volume
training (:func:`geoseg.train._sample._sampling_grid`: bilinear image, nearest labels), then
each band is scaled and shifted (contrast and brightness). Pixels outside the rectangle or
without data get the label ``IGNORE`` and no object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.models import Normalisation

from ._raster import RasterScene
from ._sample import _intensity, _sampling_grid
from ._spec import AugmentSection

__all__ = ["IGNORE", "RasterBatch", "RasterSampler"]

IGNORE = -1
"""Label of crop pixels outside the training part or without data: left out of the loss."""


@dataclass(frozen=True)
class RasterBatch:
    """``image`` (N, C, P, P) float32 normalised; ``labels`` (N, P, P) int64 (``IGNORE`` outside);
    ``objects`` (N, P, P) int64 object ids of the scene (0 none), or None for semantic scenes."""

    image: torch.Tensor
    labels: torch.Tensor
    objects: torch.Tensor | None


class RasterSampler:
    """Draws augmented crops from a scene's training rectangles."""

    def __init__(self, scene: RasterScene, norm: Normalisation) -> None:
        self.scene = scene
        image = norm.apply(scene.image)
        self.images: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.area = np.array([(r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in scene.train_rects], np.float64)
        per_class: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for i, (r0, c0, r1, c1) in enumerate(scene.train_rects):
            self.images.append(torch.from_numpy(np.ascontiguousarray(image[:, r0:r1, c0:c1])))
            lab = scene.labels[r0:r1, c0:c1].astype(np.float32) + 1
            lab[~scene.valid[r0:r1, c0:c1]] = 0  # 0 after the warp: outside or no data
            planes = [lab]
            if scene.objects is not None:
                planes.append(scene.objects[r0:r1, c0:c1].astype(np.float32))
            self.targets.append(torch.from_numpy(np.stack(planes)))
            flat = scene.labels[r0:r1, c0:c1].ravel()
            for c in np.unique(flat[flat > 0]):
                per_class.setdefault(int(c), []).append((np.full(1, i), np.flatnonzero(flat == c)))
        self.rare = {
            c: (np.concatenate([np.full(f.size, r[0]) for r, f in parts]), np.concatenate([f for _, f in parts]))
            for c, parts in per_class.items()
        }

    def _centre(self, rng: np.random.Generator, rare_fraction: float) -> tuple[int, float, float]:
        if self.rare and rng.random() < rare_fraction:
            classes = sorted(self.rare)
            rects, flat = self.rare[classes[int(rng.integers(len(classes)))]]
            j = int(rng.integers(flat.size))
            i = int(rects[j])
            w = self.images[i].shape[2]
            row, col = divmod(int(flat[j]), w)
            return i, float(row), float(col)
        i = int(rng.choice(len(self.images), p=self.area / self.area.sum()))
        _, h, w = self.images[i].shape
        return i, float(rng.uniform(0, h)), float(rng.uniform(0, w))

    def draw(
        self,
        n: int,
        crop_px: int,
        rare_fraction: float,
        aug: AugmentSection | None,
        rng: np.random.Generator,
        gen: torch.Generator,
    ) -> RasterBatch:
        """``n`` crops of ``crop_px``, centres jittered by up to a quarter crop."""
        images, labels, objects = [], [], []
        for _ in range(n):
            i, row, col = self._centre(rng, rare_fraction)
            src, tgt = self.images[i], self.targets[i]
            jitter = rng.uniform(-crop_px / 4, crop_px / 4, size=2)
            grid = _sampling_grid((src.shape[1], src.shape[2]), (row + jitter[0], col + jitter[1]), crop_px, aug, gen)
            image = F.grid_sample(src[None], grid, "bilinear", "zeros", align_corners=False)[0]
            warped = F.grid_sample(tgt[None], grid, "nearest", "zeros", align_corners=False)[0].round().long()
            inside = warped[0:1] > 0
            if aug is not None and aug.enabled and (aug.intensity_scale or aug.intensity_shift):
                image = _intensity(image, inside, image.shape[0], aug, gen)
            images.append(image)
            labels.append(warped[0] - 1)  # IGNORE (-1) outside
            if self.scene.objects is not None:
                objects.append(warped[1])
        return RasterBatch(
            torch.stack(images), torch.stack(labels), torch.stack(objects) if objects else None
        )


def instance_targets(
    objects: torch.Tensor, object_class: np.ndarray, min_px: int
) -> list[dict[str, torch.Tensor]]:
    """torchvision Mask R-CNN targets of a batch of object-id crops (N, P, P).

    Each object id in a crop is one instance: its mask, its box (x1, y1, x2, y2, the mask's
    extent, end-exclusive) and its class. Pieces under ``min_px`` pixels (an object barely
    inside the crop) are left out. A crop without objects gets empty targets (it still trains
    the detector on background).
    """
    out = []
    p = objects.shape[-1]
    for crop in objects:
        ids = torch.unique(crop)
        ids = ids[ids > 0]
        masks, boxes, classes = [], [], []
        for k in ids.tolist():
            m = crop == k
            if int(m.sum()) < min_px:
                continue
            rows = torch.nonzero(m.any(dim=1)).flatten()
            cols = torch.nonzero(m.any(dim=0)).flatten()
            boxes.append([float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)])
            masks.append(m)
            classes.append(int(object_class[k]))
        out.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(classes, dtype=torch.int64),
                "masks": torch.stack(masks).to(torch.uint8) if masks else torch.zeros((0, p, p), dtype=torch.uint8),
            }
        )
    return out
