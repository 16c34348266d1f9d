"""A scripted instance model for tests: every 4-connected blob of one value it sees is an instance.

Input: one band whose pixel values are object codes (0 background, 1..254). Output, per patch,
exactly what torchvision's Mask R-CNN returns in eval mode: ``boxes`` (K, 4) x1 y1 x2 y2,
``labels`` (K,) int64 (class ``1 + (code - 1) % (n_classes - 1)``), ``scores`` (K,) (``0.5 +
(code % 50) / 100``) and ``masks`` (K, 1, H, W) float probabilities (1 inside). Connected
components are found by label propagation (the max label of each run of equal code, along
rows then columns, until nothing changes), in torch only, so the model is a TorchScript file a user could have written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from scipy import ndimage
from torch import nn


def _run_max(lab: torch.Tensor, code: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """Each pixel takes the max label of its run of equal ``code`` along the rows of ``code``
    (``lab`` transposed first when ``transposed``)."""
    x = lab.t().contiguous() if transposed else lab
    start = torch.ones_like(code, dtype=torch.bool)
    start[:, 1:] = code[:, 1:] != code[:, :-1]
    run = torch.cumsum(start.flatten().long(), 0) - 1
    top = torch.zeros(int(run[-1]) + 1, dtype=x.dtype).scatter_reduce(0, run, x.flatten(), "amax")
    out = top[run].view(code.shape)
    return out.t() if transposed else out


class BlobModel(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out: list[dict[str, torch.Tensor]] = []
        for i in range(x.shape[0]):
            code = x[i, 0]
            h, w = code.shape[0], code.shape[1]
            fg = code > 0
            lab = torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w) * fg.float()
            changed = True
            while changed:  # max of each run of equal code along rows, then along columns
                new = _run_max(_run_max(lab, code), code.t().contiguous(), transposed=True) * fg.float()
                changed = bool((new != lab).any())
                lab = new
            ids = torch.unique(lab[fg])
            masks = (lab.unsqueeze(0) == ids.view(-1, 1, 1)).float()
            codes = (masks * code.unsqueeze(0)).amax(dim=(1, 2))
            ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
            xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
            big = float(h + w)
            boxes = torch.stack(
                [
                    torch.where(masks > 0, xs, big).amin(dim=(1, 2)),
                    torch.where(masks > 0, ys, big).amin(dim=(1, 2)),
                    torch.where(masks > 0, xs + 1, -1.0).amax(dim=(1, 2)),
                    torch.where(masks > 0, ys + 1, -1.0).amax(dim=(1, 2)),
                ],
                dim=1,
            )
            labels = (1 + torch.remainder(codes.long() - 1, self.n_classes - 1)).long()
            scores = 0.5 + torch.remainder(codes, 50.0) / 100.0
            out.append({"boxes": boxes, "labels": labels, "scores": scores, "masks": masks.unsqueeze(1)})
        return out


def write_blob_model(folder: Path, n_classes: int = 3, patch_px: int = 256, **params: float) -> Path:
    """Script :class:`BlobModel` to ``folder/blobs.pt`` with its card ``blobs.card.yaml`` beside it."""
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "blobs.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still supported
        torch.jit.save(torch.jit.script(BlobModel(n_classes)), str(path))
    card = {
        "name": "blobs",
        "architecture": "torchscript",
        "task": "instance",
        "classes": ["background"] + [f"c{k}" for k in range(1, n_classes)],
        "bands": ["code"],
        "patch_px": patch_px,
        "overlap_px": 32,
        "params": {"score_threshold": 0.0, **params},
    }
    (folder / "blobs.card.yaml").write_text(yaml.safe_dump(card))
    return path


def reference_objects(codes: np.ndarray) -> np.ndarray:
    """Whole-scene truth: 4-connected components of equal nonzero code, (H, W) int64 labels."""
    ref = np.zeros(codes.shape, np.int64)
    n = 0
    for c in np.unique(codes[codes > 0]):
        lab, k = ndimage.label(codes == c)
        ref[lab > 0] = lab[lab > 0] + n
        n += k
    return ref


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images split the pixels identically (ids may differ), 0 matching 0."""
    pairs = np.unique(np.stack([a.ravel().astype(np.int64), b.ravel().astype(np.int64)]), axis=1)
    return (
        len(np.unique(pairs[0])) == pairs.shape[1]
        and len(np.unique(pairs[1])) == pairs.shape[1]
        and bool(((pairs[0] == 0) == (pairs[1] == 0)).all())
    )


def blob_scene(shape_yx: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W) uint8 object codes with every case the merge must get right.

    Random discs and rectangles that do not overlap (many cross patch and block seams), a lake larger than a block
    with a hole and an island of another code inside the hole (a ring), a long thin river
    crossing every patch column, a snake that leaves and re-enters patches, and pairs of
    touching objects of different codes.
    """
    rng = np.random.default_rng(seed)
    h, w = shape_yx
    codes = np.zeros((h, w), np.uint8)
    yy, xx = np.ogrid[:h, :w]
    # a lake larger than a block (two blocks of 448 px and several patches), a ring around an island
    cy, cx = h // 2, w // 2
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    codes[d2 < (0.42 * min(h, w)) ** 2] = 201
    codes[d2 < (0.15 * min(h, w)) ** 2] = 0
    codes[d2 < (0.07 * min(h, w)) ** 2] = 202
    # a long thin river across the scene, 3 px wide, wavy
    cols = np.arange(w)
    rows = (h * 0.15 + 25 * np.sin(cols / 40.0)).astype(int)
    for dy in range(3):
        codes[rows + dy, cols] = 203
    # a snake: a U whose arms are one object that a patch sees as two pieces
    codes[h - 300 : h - 40, 40:46] = 204
    codes[h - 300 : h - 40, 200:206] = 204
    codes[h - 46 : h - 40, 40:206] = 204
    # touching objects of different codes (and of one class: codes 205 and 207 with 2 classes)
    codes[60:120, w - 200 : w - 140] = 205
    codes[60:120, w - 140 : w - 80] = 207
    for _ in range(40):  # an object goes only where there is none yet: no fragments of others
        y, x, r = int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(4, 60))
        disc = (yy - y) ** 2 + (xx - x) ** 2 < r * r
        if not codes[disc].any():
            codes[disc] = rng.integers(1, 200)
    for _ in range(15):
        y, x = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
        box = (slice(y, y + int(rng.integers(3, 80))), slice(x, x + int(rng.integers(3, 80))))
        if not codes[box].any():
            codes[box] = rng.integers(1, 200)
    return codes
