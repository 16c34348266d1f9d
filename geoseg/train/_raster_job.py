"""Training jobs on one labelled raster: a U-Net (semantic) or a Mask R-CNN (instance).

Each job gives the training loop (:func:`geoseg.train.train`) its model, the loss of one batch
and the validation score. Validation predicts the validation strip whole, on the fixed patch
grid of inference (``patch_px``, ``val_overlap_px``) from raw pixels normalised as the card
says, and scores it: IoU (and for two classes relaxed precision/recall at 3 px) for semantic
models; object F1 at IoU 0.5 for instance models.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.core.detections import merge_scene, resolve_patch
from geoseg.core.grid import Tiling, patch_grid
from geoseg.core.stitch import extract_patches, stitch_extent
from geoseg.errors import SpecError
from geoseg.infer import Predictor
from geoseg.models import ModelCard, build_model, instance_thresholds
from geoseg.models._builtin import MASKRCNN_DEFAULTS

from ._raster import RasterScene, band_normalisation, load_raster_scene
from ._raster_sample import IGNORE, RasterSampler, instance_targets
from ._scores import iou, object_f1, relaxed_precision_recall
from ._spec import RasterDataSection, TrainSpec

__all__ = ["MIN_OBJECT_PX", "SemanticRasterJob", "InstanceRasterJob", "predict_raster", "predict_objects"]

log = logging.getLogger("geoseg.train")

MIN_OBJECT_PX = 16
"""Objects (labels or predictions) of fewer pixels are left out of training targets and F1."""

_WARMUP_STREAM = 0x5EED_D3
"""Second seed word of the dense warm-up's random stream (the epochs use ``(seed, epoch)``)."""


def predict_raster(predictor: Predictor, image: np.ndarray, tiling: Tiling) -> np.ndarray:
    """(K, H, W) float32 class probabilities of raw (C, H, W) pixels, cut on the fixed patch
    grid of ``tiling``, answered by ``predictor`` (which normalises as its card says) and
    stitched with ``crop``, as ``geoseg run`` does."""
    grid = patch_grid(image.shape[1:], tiling)
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    probs = predictor(extract_patches(image, (0, 0), grid, ids))
    extent = (0, 0, *grid.shape_yx)
    n = predictor.card.n_classes
    _, scores = stitch_extent(grid, extent, "crop", "scores", n, [(iy, ix, p) for (iy, ix), p in zip(ids, probs, strict=True)])
    assert scores is not None  # noqa: S101  (scores patches always stitch to scores)
    return scores


@torch.inference_mode()
def predict_objects(model: nn.Module, card: ModelCard, image: np.ndarray, tiling: Tiling, batch_size: int) -> np.ndarray:
    """(H, W) int32 object ids predicted by a Mask R-CNN on raw (C, H, W) pixels.

    Patches on the fixed grid of ``tiling``, each answered as ``geoseg run`` answers it (one
    instance per pixel by score, :func:`geoseg.core.detections.resolve_patch`, with the card's
    ``score_threshold`` and ``mask_threshold``), then joined across patch overlaps by the same
    merge (:func:`geoseg.core.detections.merge_scene`, ``merge_overlap``): validation scores
    the objects a run would write.
    """
    score_t, mask_t, merge = instance_thresholds(card)
    grid = patch_grid(image.shape[1:], tiling)
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    patches = card.normalisation.apply(extract_patches(image, (0, 0), grid, ids))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    records = {}
    for b in range(0, len(ids), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(patches[b : b + batch_size])).to(device)
        for ij, out in zip(ids[b : b + batch_size], model(x), strict=True):
            boxes, labels, scores, masks = (out[k].detach().float().cpu().numpy() for k in ("boxes", "labels", "scores", "masks"))
            records[ij] = resolve_patch(boxes, labels, scores, masks, card.n_classes, score_t, mask_t)
    model.train(was_training)
    objects, _ = merge_scene(grid, records, merge)
    return objects.astype(np.int32)


def _rect_text(rect: tuple[int, int, int, int]) -> str:
    """``rows 0-909, columns 0-1299`` for a (row0, col0, row1, col1) rectangle, ends inclusive."""
    r0, c0, r1, c1 = rect
    return f"rows {r0}-{r1 - 1}, columns {c0}-{c1 - 1}"


class _RasterJob:
    """What both raster jobs share: the scene, the card, the sampler, the validation strip."""

    scores_key = "scores"

    def __init__(self, spec: TrainSpec, task: str) -> None:
        data = spec.data
        assert isinstance(data, RasterDataSection)  # noqa: S101  (train() dispatches on the data kind)
        self.spec, self.data = spec, data
        self.scene: RasterScene = load_raster_scene(data, task, min_px=16)
        norm = band_normalisation(self.scene.image, self.scene.valid, self.scene.train_rects, data)
        m = spec.model
        params: dict[str, Any] = (
            {"base_channels": m.base_channels, "depth": m.depth} if task == "semantic" else dict(MASKRCNN_DEFAULTS)
        )
        if m.resize_px:
            params["resize_px"] = m.resize_px
        self.card = ModelCard(
            name=m.name,
            architecture=m.architecture,
            classes=data.classes,
            bands=self.scene.bands,
            normalisation=norm,
            patch_px=spec.patch_px,
            overlap_px=spec.val_overlap_px,
            task=task,  # type: ignore[arg-type]
            params=params,
            description=m.description,
            licence=m.licence,
        )
        widest = max(self.scene.train_rects, key=lambda r: min(r[2] - r[0], r[3] - r[1]))
        fits = min(widest[2] - widest[0], widest[3] - widest[1])
        if spec.optimisation.crop_px > fits:
            raise SpecError(
                f"optimisation.crop_px {spec.optimisation.crop_px} does not fit in the training part of "
                f"{self.scene.path} ({_rect_text(widest)}: {fits} px on its shorter side); use a crop_px of {fits} or less"
            )
        self.sampler = RasterSampler(self.scene, norm)
        self.tiling = Tiling(spec.patch_px, spec.val_overlap_px)
        r0, c0, r1, c1 = self.scene.validation
        self.val_image = self.scene.image[:, r0:r1, c0:c1]
        self.val_valid = self.scene.valid[r0:r1, c0:c1]
        log.info(
            "raster %s: %d bands %s, %dx%d px (rows x columns), validation %s, training %s; normalisation offset %s scale %s",
            self.scene.path, len(self.scene.bands), list(self.scene.bands), *self.scene.valid.shape,
            _rect_text(self.scene.validation), ", ".join(map(_rect_text, self.scene.train_rects)),
            [round(v, 3) for v in norm.offset], [round(v, 3) for v in norm.scale],
        )  # fmt: skip

    def build(self) -> nn.Module:
        return build_model(self.card).train()

    def _draw(self, rng: np.random.Generator, gen: torch.Generator) -> Any:
        o = self.spec.optimisation
        return self.sampler.draw(o.batch_size, o.crop_px, self.data.rare_fraction, self.spec.augmentation, rng, gen)


class SemanticRasterJob(_RasterJob):
    """A U-Net on a raster: cross-entropy + soft Dice over the valid pixels; validation IoU."""

    metric = "iou"

    def __init__(self, spec: TrainSpec) -> None:
        super().__init__(spec, "semantic")
        r0, c0, r1, c1 = self.scene.validation
        self.val_labels = self.scene.labels[r0:r1, c0:c1]
        ce = spec.optimisation.ce_weights
        self.ce_weight = torch.tensor(ce, dtype=torch.float32) if ce else None

    def loss(self, model: nn.Module, rng: np.random.Generator, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        batch = self._draw(rng, gen)
        x, y = batch.image.to(device), batch.labels.to(device)
        logits = model(x)
        w = self.ce_weight.to(device) if self.ce_weight is not None else None
        return mask_loss(logits, y, self.spec.optimisation.dice_weight, w, self.spec.optimisation.dice_regions)

    def validate(self, model: nn.Module) -> tuple[dict[str, Any], float]:
        device = str(next(model.parameters()).device)
        predictor = Predictor(model, batch_size=self.spec.val_batch_size, device=device, card=self.card)
        probs = predict_raster(predictor, self.val_image, self.tiling)
        return raster_scores(probs, self.val_labels, self.val_valid)


def raster_scores(
    probs: np.ndarray, labels: np.ndarray, valid: np.ndarray, threshold: float | None = None
) -> tuple[dict[str, Any], float]:
    """Scores of (K, H, W) probabilities against (H, W) labels over the valid pixels.

    Per class (not background) its IoU; with two classes also ``relaxed_precision`` and
    ``relaxed_recall`` (3 px) and the share of pixels predicted and labelled. The class is the
    argmax, or for two classes ``p(class 1) >= threshold`` when one is given. The score to
    maximise is the mean IoU over the non-background classes.
    """
    if threshold is not None and probs.shape[0] == 2:
        pred = (probs[1] >= threshold).astype(np.uint8)
    else:
        pred = np.argmax(probs, axis=0).astype(np.uint8)
    pred[~valid] = 0
    out: dict[str, Any] = {}
    ious = []
    for c in range(1, probs.shape[0]):
        ious.append(iou(pred == c, (labels == c) & valid))
        out[f"iou_{c}"] = ious[-1]
    if probs.shape[0] == 2:
        p, r = relaxed_precision_recall(pred == 1, (labels == 1) & valid, 3.0)
        out.update(
            relaxed_precision=p,
            relaxed_recall=r,
            predicted_share=float((pred == 1)[valid].mean()),
            labelled_share=float((labels == 1)[valid].mean()),
        )
    score = float(np.mean(ious))
    out["iou"] = score
    return out, score


def mask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    dice_weight: float,
    ce_weight: torch.Tensor | None = None,
    regions: tuple[tuple[int, ...], ...] | None = None,
) -> torch.Tensor:
    """Cross-entropy + ``dice_weight`` x soft Dice of (N, K, H, W) logits against (N, H, W)
    class indices, over the pixels that are not ``IGNORE``."""
    from ._loop import soft_dice_loss  # noqa: PLC0415  (the loop imports this module)

    ce = F.cross_entropy(logits, labels, weight=ce_weight, ignore_index=IGNORE)
    return ce + dice_weight * soft_dice_loss(logits, labels.clamp(min=0), regions=regions, valid=labels != IGNORE)


class InstanceRasterJob(_RasterJob):
    """A Mask R-CNN on a raster with polygon labels; validation object F1 at IoU 0.5."""

    metric = "f1"

    def __init__(self, spec: TrainSpec) -> None:
        super().__init__(spec, "instance")
        assert self.scene.objects is not None  # noqa: S101
        r0, c0, r1, c1 = self.scene.validation
        truth = self.scene.objects[r0:r1, c0:c1]
        ids, counts = np.unique(truth[truth > 0], return_counts=True)
        small = ids[counts < MIN_OBJECT_PX]
        self.val_objects = np.where(np.isin(truth, small), 0, truth)
        log.info(
            "validation strip: %d objects (%d slivers under %d px left out)",
            ids.size - small.size, small.size, MIN_OBJECT_PX,
        )  # fmt: skip

    def loss(self, model: nn.Module, rng: np.random.Generator, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        batch = self._draw(rng, gen)
        assert batch.objects is not None  # noqa: S101
        targets = instance_targets(batch.objects, self.scene.object_class, MIN_OBJECT_PX)
        images = list(batch.image.to(device))
        losses = model(images, [{k: v.to(device) for k, v in t.items()} for t in targets])
        return sum(losses.values())  # type: ignore[return-value]

    def dense_warmup(self, model: nn.Module, device: torch.device) -> list[float]:
        """Train the Mask R-CNN's backbone (body and FPN) alone on the label mask, before the detector.

        ``optimisation.dense_warmup_steps`` steps of ``batch_size`` crops, drawn as for the
        detector from their own random stream: the crops go through the model's own transform
        (its ``resize_px``), a temporary 1x1 conv on the finest FPN level (stride 8) gives
        class logits, upsampled bilinearly to the crop, and the loss is the semantic one
        (cross-entropy + ``dice_weight`` x soft Dice over the valid pixels). AdamW, one-cycle
        to ``dense_warmup_lr`` (default ``lr``); the conv is dropped afterwards and the
        detector's epochs start from these backbone weights with a fresh optimiser.

        Why: the detector's losses reach the backbone through a few hundred sampled boxes per
        crop, the mask loss through the positive ones only; a label mask gives every pixel a
        gradient. In the spirit of Panoptic FPN's semantic branch (Kirillov et al., CVPR 2019),
        used here as a stage before the detector. On the SpaceNet 4 chip, seven runs from
        random weights without it stayed at validation F1 0.0 (docs/training.md).

        Returns:
            The loss of each warm-up step.
        """
        from ._loop import _progress, one_cycle  # noqa: PLC0415  (the loop imports this module)

        o = self.spec.optimisation
        steps, lr = o.dense_warmup_steps, o.dense_warmup_lr or o.lr
        backbone: nn.Module = model.backbone  # type: ignore[assignment]
        transform: nn.Module = model.transform  # type: ignore[assignment]
        head = nn.Conv2d(int(backbone.out_channels), self.card.n_classes, 1).to(device)  # type: ignore[arg-type]
        params = [*backbone.parameters(), *head.parameters()]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=o.weight_decay)
        sched = one_cycle(opt, lr, steps)
        rng = np.random.default_rng([self.spec.seed, _WARMUP_STREAM])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        model.train()
        losses: list[float] = []
        quarter = max(1, steps // 4)
        with _progress(steps, "dense warm-up") as bar:
            for _ in range(steps):
                batch = self._draw(rng, gen)
                x, y = batch.image.to(device), batch.labels.to(device)
                images, _ = transform(list(x))
                h, w = images.image_sizes[0]
                finest = next(iter(backbone(images.tensors).values()))
                logits = F.interpolate(head(finest), size=images.tensors.shape[-2:], mode="bilinear", align_corners=False)
                logits = F.interpolate(logits[..., :h, :w], size=x.shape[-2:], mode="bilinear", align_corners=False)
                loss = mask_loss(logits, y, o.dice_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
                bar.update()
                if len(losses) % quarter == 0 and len(losses) < steps:  # also where no bar shows (a log, a job)
                    log.info("dense warm-up: step %d/%d, loss %.3f", len(losses), steps, np.mean(losses[-quarter:]))
        return losses

    def validate(self, model: nn.Module) -> tuple[dict[str, Any], float]:
        pred = predict_objects(model, self.card, self.val_image, self.tiling, self.spec.val_batch_size)
        pred[~self.val_valid] = 0
        scores = object_f1(pred, self.val_objects, 0.5)
        return scores, float(scores["f1"])
