"""The training loop: epochs of sampled crops, validation on whole cases, checkpoints, resume."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.core.grid import Tiling
from geoseg.errors import ModelError, SpecError
from geoseg.evaluate import brats_regions, dice
from geoseg.infer import Predictor, pick_device
from geoseg.models import ModelCard, Normalisation, UNet, build_model, save_checkpoint

from ._data import LabelledCase, load_labelled_case
from ._infer import predict_volume
from ._sample import SliceIndex, draw_batch
from ._spec import TrainSpec

__all__ = ["TrainResult", "model_card_for", "soft_dice_loss", "train", "validate"]

log = logging.getLogger("geoseg.train")

DEFAULT_LICENCE = "CC BY-NC-SA 3.0 (trained on BraTS 2013/2015 data)"


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: checkpoint paths, the epoch and validation Dice of the best one, the history.

    ``history`` holds one entry per finished epoch (also of earlier runs that were resumed):
    ``{"epoch", "loss", "lr", "seconds", "dice": {case: {region: float}}, "mean_dice"}``.
    """

    output: Path
    best_checkpoint: Path
    last_checkpoint: Path
    epochs: int
    best_epoch: int
    best_mean_dice: float
    best_dice: dict[str, dict[str, float]]
    history: tuple[dict[str, Any], ...]


def model_card_for(spec: TrainSpec, description: str | None = None) -> ModelCard:
    """The card a run's checkpoints carry: a U-Net on z-scored modalities, ``patch_px`` patches.

    ``params`` are ``base_channels`` and ``depth``, plus ``context_slices`` when it is not 0.
    """
    m = spec.model
    params: dict[str, Any] = {"base_channels": m.base_channels, "depth": m.depth}
    if m.context_slices:
        params["context_slices"] = m.context_slices
    return ModelCard(
        name=m.name,
        architecture=m.architecture,
        classes=spec.data.classes,
        bands=spec.data.modalities,
        normalisation=Normalisation("zscore_foreground"),
        patch_px=spec.patch_px,
        params=params,
        description=description if description is not None else m.description,
        licence=m.licence or DEFAULT_LICENCE,
    )


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.0,
    regions: tuple[tuple[int, ...], ...] | None = None,
) -> torch.Tensor:
    """1 - mean soft Dice over the non-background classes (or over ``regions``), pooled over the batch.

    ``logits`` (N, K, H, W), ``target`` (N, H, W) int64 class indices. A region is a union of
    classes whose probability is the sum of theirs: BraTS's whole tumour, core and enhancing
    tumour are ``((1, 2, 3), (2, 3), (3,))`` for our classes, which scores the model on the
    regions it is evaluated on. A class or region absent from both prediction and target scores
    Dice 1 (thanks to ``eps``), so it adds no gradient noise.
    """
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    if regions is None:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    else:
        probs = torch.stack([probs[:, list(r)].sum(dim=1) for r in regions], dim=1)
        onehot = torch.stack([onehot[:, list(r)].sum(dim=1) for r in regions], dim=1)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + eps) / (total + eps)).mean()


def validate(
    model: nn.Module, card: ModelCard, cases: list[LabelledCase], tiling: Tiling, batch_size: int
) -> dict[str, dict[str, float]]:
    """Per case, Dice of each BraTS region (:func:`geoseg.evaluate.brats_regions`) over the whole volume.

    The model runs in a :class:`geoseg.infer.Predictor`, as in ``geoseg run`` (on the CPU with
    BatchNorm folded, on a copy: the trained module is left as it is).
    """
    device = str(next(model.parameters()).device)
    predictor = Predictor(model, batch_size=batch_size, device=device, card=card)
    out: dict[str, dict[str, float]] = {}
    for case in cases:
        pred = predict_volume(predictor, case.image, tiling)
        truth = brats_regions(case.labels)
        out[case.name] = {k: dice(v, truth[k]) for k, v in brats_regions(pred).items()}
    return out


def _mean_dice(scores: dict[str, dict[str, float]]) -> float:
    return float(np.mean([v for per_case in scores.values() for v in per_case.values()]))


def _fingerprint(spec: TrainSpec) -> str:
    """What a resumed run must share with the run it continues."""
    keep = {
        "data": spec.data.model_dump(mode="json"),
        "model": spec.model.model_dump(mode="json", exclude={"description", "licence"}),
        "patch_px": spec.patch_px,
        "optimisation": spec.optimisation.model_dump(mode="json", exclude={"threads", "device"}),
        "augmentation": spec.augmentation.model_dump(mode="json"),
        "seed": spec.seed,
    }
    return json.dumps(keep, sort_keys=True)


def _scheduler(
    opt: torch.optim.Optimizer, spec: TrainSpec, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    o = spec.optimisation
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=total_steps, pct_start=0.1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=o.lr * 1e-2)


def _device(choice: str) -> torch.device:
    """``optimisation.device`` as inference picks it (:func:`geoseg.infer.pick_device`); a
    missing GPU is an error of the training spec."""
    try:
        return pick_device(choice)
    except ModelError:
        raise SpecError("optimisation.device is cuda, but torch sees no GPU; use auto or cpu") from None


class _EMA:
    """An exponential moving average of a model's weights (float tensors; others copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, new in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(new, 1 - self.decay)
            else:
                avg.copy_(new)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise ModelError(
            f"{path}: cannot resume from it ({type(e).__name__}: {e}); delete it or set resume: false"
        ) from None
    if not isinstance(obj, dict) or "extra" not in obj or "train_state" not in obj["extra"]:
        raise ModelError(
            f"{path}: not a geoseg training checkpoint (no train_state); delete it or set resume: false"
        )
    return obj


def train(spec: TrainSpec) -> TrainResult:
    """Train a model as ``spec`` says; write ``last.pt``, ``best.pt`` and ``history.json`` to ``spec.output``.

    Each epoch draws ``optimisation.samples_per_epoch`` augmented crops (a share
    ``tumour_fraction`` from slices with tumour), then predicts every validation case whole,
    slice by slice exactly as inference does, and scores Dice of the whole tumour, tumour
    core and enhancing tumour. ``best.pt`` keeps the epoch with the best mean Dice over cases
    and regions. Both load with :func:`geoseg.models.load_model` (``ModelSpec(checkpoint=...)``).

    The random state of epoch ``e`` is derived from ``(seed, e)``, so a run resumed from
    ``last.pt`` (model, optimiser, scheduler, epoch, history) continues exactly as it would have.

    With ``optimisation.ema``, validation and ``best.pt`` use the moving average of the
    weights; ``last.pt`` holds the raw weights and keeps the average in its train state.
    ``optimisation.device`` picks CPU or GPU; a run may be resumed on the other one.

    Raises:
        SpecError: ``output`` holds a run and ``resume`` is false, or the run to resume was made
            by a different spec.
        SourceError, InputError: a case or label file that cannot be read.
    """
    o = spec.optimisation
    out = spec.output
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.exists() and not spec.resume:
        raise SpecError(
            f"{out} already holds a run (last.pt): set resume: true to continue it, or pick a new output"
        )
    out.mkdir(parents=True, exist_ok=True)
    if o.threads:
        torch.set_num_threads(o.threads)

    t0 = time.perf_counter()
    train_cases = [load_labelled_case(p, spec.data) for p in spec.data.train]
    val_cases = [load_labelled_case(p, spec.data) for p in spec.data.validation]
    index = SliceIndex(train_cases)
    log.info(
        "loaded %d training and %d validation cases in %.1f s",
        len(train_cases),
        len(val_cases),
        time.perf_counter() - t0,
    )

    context = spec.model.context_slices
    n_classes = len(spec.data.classes)
    card = model_card_for(spec)
    device = _device(o.device)
    torch.manual_seed(spec.seed)
    in_channels = len(spec.data.modalities) * (2 * context + 1)
    model = UNet(in_channels, n_classes, spec.model.base_channels, spec.model.depth)
    _check_loadable(card, model)
    model.to(device)
    ema = _EMA(model, o.ema) if o.ema else None
    ce_weight = torch.tensor(o.ce_weights, dtype=torch.float32, device=device) if o.ce_weights else None
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    steps = math.ceil(o.samples_per_epoch / o.batch_size)
    sched = _scheduler(opt, spec, steps * o.epochs)
    tiling = Tiling(spec.patch_px, spec.val_overlap_px)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "mean_dice": -1.0, "dice": {}}
    start = 0

    if spec.resume and last_path.exists():
        saved = _load_state(last_path)
        state = saved["extra"]["train_state"]
        if state["fingerprint"] != _fingerprint(spec):
            raise SpecError(
                f"{last_path} was written by a different training spec; resume it with the same spec "
                "or pick a new output"
            )
        model.load_state_dict(saved["state_dict"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimiser"])
        sched.load_state_dict(state["scheduler"])
        history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"])
        log.info("resuming %s after epoch %d", last_path, start)
    elif spec.resume:
        log.info("resume: no %s yet, starting a new run", last_path)

    for epoch in range(start, o.epochs):
        te = time.perf_counter()
        rng = np.random.default_rng([spec.seed, epoch])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        torch.manual_seed(int(rng.integers(2**62)))
        model.train()
        losses = []
        for _ in range(steps):
            x, y = draw_batch(
                index,
                o.batch_size,
                o.crop_px,
                context,
                o.tumour_fraction,
                spec.augmentation,
                rng,
                gen,
                class_weights=o.class_weights,
            )
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y, weight=ce_weight) + o.dice_weight * soft_dice_loss(
                logits, y, regions=o.dice_regions
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            losses.append(float(loss.detach()))
        train_s = time.perf_counter() - te
        served = model if ema is None else ema.module
        scores = validate(served, card, val_cases, tiling, spec.val_batch_size)
        mean = _mean_dice(scores)
        entry = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "lr": float(sched.get_last_lr()[0]),
            "train_seconds": train_s,
            "seconds": time.perf_counter() - te,
            "dice": scores,
            "mean_dice": mean,
        }
        history.append(entry)
        if mean > best["mean_dice"]:
            best = {"epoch": epoch + 1, "mean_dice": mean, "dice": scores}
            extra = {"epoch": epoch + 1, "dice": scores, "mean_dice": mean}
            save_checkpoint(best_path, served, card, extra=extra)
        train_state = {
            "fingerprint": _fingerprint(spec),
            "epoch": epoch + 1,
            "optimiser": opt.state_dict(),
            "scheduler": _plain(sched.state_dict()),
            "history": history,
            "best": best,
        }
        if ema is not None:
            train_state["ema"] = {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
        save_checkpoint(last_path, model, card, extra={"epoch": epoch + 1, "train_state": train_state})
        (out / "history.json").write_text(json.dumps(history, indent=1))
        log.info(
            "epoch %d/%d loss %.4f train %.0f s, total %.0f s; val Dice %s mean %.4f%s",
            epoch + 1,
            o.epochs,
            entry["loss"],
            train_s,
            entry["seconds"],
            {c: {k: round(v, 4) for k, v in s.items()} for c, s in scores.items()},
            mean,
            " (best)" if best["epoch"] == epoch + 1 else "",
        )

    return TrainResult(
        output=out,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        epochs=len(history),
        best_epoch=int(best["epoch"]),
        best_mean_dice=float(best["mean_dice"]),
        best_dice=best["dice"],
        history=tuple(history),
    )


def _check_loadable(card: ModelCard, model: nn.Module) -> None:
    """Refuse to train a model whose checkpoints :func:`geoseg.models.load_model` could not rebuild."""
    try:
        built = build_model(card)
    except ModelError as e:
        raise SpecError(
            f"model: geoseg cannot build the trained model back from its card ({e}); "
            "use context_slices: 0 with this version of geoseg"
        ) from None
    got = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if got != want:
        raise SpecError(
            f"model: the card {dict(card.params)} with bands {list(card.bands)} builds a different network "
            "than the one trained; use context_slices: 0 with this version of geoseg"
        )


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state with anything weights_only loading refuses (functions) dropped."""
    plain = (int, float, str, bool, list, dict, tuple, type(None))
    return {k: v for k, v in state.items() if isinstance(v, plain)}
