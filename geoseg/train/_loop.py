"""The training loop: epochs of sampled crops, validation on whole cases, checkpoints, resume."""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
from ._spec import DataSection, TrainSpec

__all__ = ["TrainResult", "model_card_for", "soft_dice_loss", "train", "validate"]

log = logging.getLogger("geoseg.train")

DEFAULT_LICENCE = "CC BY-NC-SA 3.0 (trained on BraTS 2013/2015 data)"


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: checkpoint paths, the epoch and validation score of the best one, the history.

    ``metric`` names the score that picks the best epoch: ``mean_dice`` (volumes: mean Dice
    over cases and regions), ``iou`` (raster U-Nets: mean IoU of the non-background classes) or
    ``f1`` (Mask R-CNN: object F1 at IoU 0.5). ``best_scores`` holds all the scores of that
    epoch. ``history`` holds one entry per finished epoch (also of earlier runs that were
    resumed): ``{"epoch", "loss", "lr", "seconds", <scores key>: {...}, <metric>: float}``,
    the scores key being ``dice`` (``{case: {region: float}}``) for volumes, else ``scores``.
    """

    output: Path
    best_checkpoint: Path
    last_checkpoint: Path
    epochs: int
    best_epoch: int
    metric: str
    best_score: float
    best_scores: dict[str, Any]
    history: tuple[dict[str, Any], ...]

    @property
    def best_mean_dice(self) -> float:
        """The best score of a volume run (mean Dice)."""
        return self.best_score

    @property
    def best_dice(self) -> dict[str, Any]:
        """The Dice of each case and region of a volume run's best epoch."""
        return self.best_scores


def model_card_for(spec: TrainSpec, description: str | None = None) -> ModelCard:
    """The card a run's checkpoints carry: a U-Net on z-scored modalities, ``patch_px`` patches.

    ``params`` are ``base_channels`` and ``depth``, plus ``context_slices`` when it is not 0.
    """
    m = spec.model
    if not isinstance(spec.data, DataSection):
        raise SpecError("model_card_for makes the card of a volume run; raster runs make theirs from the image")
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
    valid: torch.Tensor | None = None,
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


_ADDED_LATER = {"model": ("resize_px",), "optimisation": ("dense_warmup_steps", "dense_warmup_lr")}
"""Fields added after runs had been made: left out of the fingerprint at their defaults, so those
runs still resume."""


def _section_dump(spec: TrainSpec, name: str, exclude: set[str]) -> dict[str, Any]:
    section = getattr(spec, name)
    fields = type(section).model_fields
    at_default = {k for k in _ADDED_LATER.get(name, ()) if getattr(section, k) == fields[k].default}
    dumped: dict[str, Any] = section.model_dump(mode="json", exclude=exclude | at_default)
    return dumped


def _fingerprint(spec: TrainSpec) -> str:
    """What a resumed run must share with the run it continues."""
    keep = {
        "data": spec.data.model_dump(mode="json"),
        "model": _section_dump(spec, "model", {"description", "licence"}),
        "patch_px": spec.patch_px,
        "optimisation": _section_dump(spec, "optimisation", {"threads", "device", "workers"}),
        "augmentation": spec.augmentation.model_dump(mode="json"),
        "seed": spec.seed,
    }
    return json.dumps(keep, sort_keys=True)


def one_cycle(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """torch's ``OneCycleLR`` (Smith & Topin 2019) peaking at ``lr`` after 10 % of the steps.

    At exactly 10 steps torch's warm-up phase would end at step 0 and its ``get_lr`` divides by
    zero; there the peak comes after 15 %.
    """
    pct = 0.15 if total_steps * 0.1 == 1 else 0.1
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct)


def _scheduler(
    opt: torch.optim.Optimizer, spec: TrainSpec, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    o = spec.optimisation
    if o.schedule == "onecycle":
        return one_cycle(opt, o.lr, total_steps)
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


def _load_state(data: bytes, source: Path | str) -> dict[str, Any]:
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise ModelError(
            f"{source}: cannot resume from it ({type(e).__name__}: {e}); delete it or set resume: false"
        ) from None
    if not isinstance(obj, dict) or "extra" not in obj or "train_state" not in obj["extra"]:
        raise ModelError(
            f"{source}: not a geoseg training checkpoint (no train_state); delete it or set resume: false"
        )
    return obj


class _VolumeJob:
    """U-Net on MRI cases: sampled slice crops, cross-entropy + soft Dice, validation Dice per case."""

    metric = "mean_dice"
    scores_key = "dice"

    def __init__(self, spec: TrainSpec) -> None:
        data = spec.data
        assert isinstance(data, DataSection)  # noqa: S101  (train() dispatches on the data kind)
        self.spec, self.data = spec, data
        t0 = time.perf_counter()
        train_cases = [load_labelled_case(p, data) for p in data.train]
        self.val_cases = [load_labelled_case(p, data) for p in data.validation]
        self.index = SliceIndex(train_cases)
        log.info(
            "loaded %d training and %d validation cases in %.1f s",
            len(train_cases),
            len(self.val_cases),
            time.perf_counter() - t0,
        )
        self.card = model_card_for(spec)
        o = spec.optimisation
        self.ce_weight = torch.tensor(o.ce_weights, dtype=torch.float32) if o.ce_weights else None
        self.tiling = Tiling(spec.patch_px, spec.val_overlap_px)

    def build(self) -> nn.Module:
        m = self.spec.model
        in_channels = len(self.data.modalities) * (2 * m.context_slices + 1)
        return UNet(in_channels, len(self.data.classes), m.base_channels, m.depth)

    def loss(self, model: nn.Module, rng: np.random.Generator, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        o = self.spec.optimisation
        x, y = draw_batch(
            self.index,
            o.batch_size,
            o.crop_px,
            self.spec.model.context_slices,
            o.tumour_fraction,
            self.spec.augmentation,
            rng,
            gen,
            class_weights=o.class_weights,
        )
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        w = self.ce_weight.to(device) if self.ce_weight is not None else None
        return F.cross_entropy(logits, y, weight=w) + o.dice_weight * soft_dice_loss(logits, y, regions=o.dice_regions)

    def validate(self, model: nn.Module) -> tuple[dict[str, Any], float]:
        scores = validate(model, self.card, self.val_cases, self.tiling, self.spec.val_batch_size)
        return scores, _mean_dice(scores)


class _Job(Protocol):
    """What the loop needs of a kind of training: its card and model, a batch's loss, a score."""

    card: ModelCard
    metric: str
    scores_key: str

    def build(self) -> nn.Module: ...

    def loss(
        self, model: nn.Module, rng: np.random.Generator, gen: torch.Generator, device: torch.device
    ) -> torch.Tensor: ...

    def validate(self, model: nn.Module) -> tuple[dict[str, Any], float]: ...


def _job_class(spec: TrainSpec) -> Any:
    """The kind of training ``spec`` asks for (a class following :class:`_Job`)."""
    if isinstance(spec.data, DataSection):
        return _VolumeJob
    from ._raster_job import InstanceRasterJob, SemanticRasterJob  # noqa: PLC0415

    return InstanceRasterJob if spec.model.resolved_task == "instance" else SemanticRasterJob


def _job(spec: TrainSpec) -> _Job:
    job: _Job = _job_class(spec)(spec)
    return job


def _progress(total: int, desc: str) -> Any:
    """A tqdm bar on a terminal (stderr), nothing otherwise."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None, dynamic_ncols=True)


def train(spec: TrainSpec, workers: int | None = None, address: str | None = None) -> TrainResult:
    """Train a model as ``spec`` says; write ``last.pt``, ``best.pt`` and ``history.json`` to ``spec.output``.

    Each epoch draws ``optimisation.samples_per_epoch`` augmented crops, then validates:

    - volumes (``data.kind: volumes``): a share ``tumour_fraction`` of crops from slices with
      tumour; every validation case predicted whole, slice by slice exactly as inference does,
      scored by Dice of the whole tumour, tumour core and enhancing tumour (metric
      ``mean_dice``);
    - a raster (``data.kind: raster``): crops from the training part (a share
      ``data.rare_fraction`` centred on labelled pixels); the validation strip predicted on
      the inference patch grid and scored by IoU (U-Net, metric ``iou``) or object F1 at IoU
      0.5 (Mask R-CNN, ``task: instance``, metric ``f1``).

    ``best.pt`` keeps the epoch with the best metric. Both load with
    :func:`geoseg.models.load_model` (``ModelSpec(checkpoint=...)``).

    The random state of epoch ``e`` is derived from ``(seed, e)``, so a run resumed from
    ``last.pt`` (model, optimiser, scheduler, epoch, history) continues exactly as it would have.

    ``workers`` (default ``optimisation.workers``) above 1 trains data-parallel on Ray Train
    (:class:`ray.train.torch.TorchTrainer`, PyTorch DDP), see :mod:`geoseg.train._ray_train`;
    ``address`` names the Ray cluster to join (default ``RAY_ADDRESS``, else a private local
    Ray). One process otherwise, without Ray.

    With ``optimisation.ema``, validation and ``best.pt`` use the moving average of the
    weights; ``last.pt`` holds the raw weights and keeps the average in its train state.
    ``optimisation.device`` picks CPU or GPU; a run may be resumed on the other one, and with
    another number of workers.

    Raises:
        SpecError: ``output`` holds a run and ``resume`` is false, or the run to resume was made
            by a different spec.
        SourceError, InputError: an input or label file that cannot be read or used.
        TrainingError: a Ray Train run whose workers failed (one line, the worker's error).
    """
    n = workers if workers is not None else spec.optimisation.workers
    if n < 1:
        raise SpecError(f"--workers {n}: give 1 or more training workers")
    last_path = spec.output / "last.pt"
    if last_path.exists() and not spec.resume:
        raise SpecError(
            f"{spec.output} already holds a run (last.pt): set resume: true to continue it, or pick a new output"
        )
    saved = None
    if spec.resume and last_path.exists():
        saved = resume_state(last_path.read_bytes(), spec, last_path)
    elif spec.resume:
        log.info("resume: no %s yet, starting a new run", last_path)
    if saved is not None and int(saved["extra"]["train_state"]["epoch"]) >= spec.optimisation.epochs:
        state = saved["extra"]["train_state"]
        log.info("%s: all %d epochs are done; nothing to train", last_path, spec.optimisation.epochs)
        return result_of(spec.output, _job_class(spec).metric, list(state["history"]), dict(state["best"]))
    if n > 1:
        from ._ray_train import train_on_ray  # noqa: PLC0415  (Ray only when asked)

        return train_on_ray(spec, n, address, saved)
    job = _job(spec)
    spec.output.mkdir(parents=True, exist_ok=True)
    return run_epochs(spec, job, _FolderSink(spec.output), saved, _device(spec.optimisation.device))


def resume_state(data: bytes, spec: TrainSpec, source: Path | str) -> dict[str, Any]:
    """A ``last.pt`` (its bytes) checked to be a training checkpoint of this spec.

    Raises:
        ModelError: not a readable geoseg training checkpoint.
        SpecError: written by another spec.
    """
    saved = _load_state(data, source)
    then, now = saved["extra"]["train_state"]["fingerprint"], _fingerprint(spec)
    if then != now:
        changed = _changed_fields(json.loads(then), json.loads(now))
        raise SpecError(
            f"{source} was written by a different training spec (changed: {', '.join(changed[:4]) or 'unknown'}); "
            "resume it with the same spec, or pick a new output"
        )
    return saved


def _changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the fields whose values differ between two fingerprints."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


class Sink(Protocol):
    """Where the epochs of one training process go: its rank, the DDP wrap, the checkpoint files."""

    rank: int
    world: int
    folder: Path

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module: ...

    def epoch_done(self, epoch: int, metrics: dict[str, float], note: str) -> None: ...


class _FolderSink:
    """One process: checkpoints written straight to the output folder."""

    rank, world = 0, 1

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def epoch_done(self, epoch: int, metrics: dict[str, float], note: str) -> None:
        log.info("%s", note)


def run_epochs(
    spec: TrainSpec, job: _Job, sink: Sink, saved: dict[str, Any] | None, device: torch.device
) -> TrainResult:
    """The epochs of one training process (rank ``sink.rank`` of ``sink.world``).

    Every rank draws ``batch_size`` crops per step from its own random stream (rank 0's is
    that of a one-process run: ``(seed, epoch)``; rank r's ``(seed, epoch, r)``), so an epoch
    of ``samples_per_epoch`` crops takes ``ceil(samples_per_epoch / (batch_size * world))``
    steps; DDP averages the gradients. Rank 0 validates and writes ``last.pt``, ``best.pt`` and
    ``history.json`` to ``sink.folder``, then ``sink.epoch_done`` publishes them.
    """
    o = spec.optimisation
    out = sink.folder
    last_path, best_path = out / "last.pt", out / "best.pt"
    main = sink.rank == 0
    if o.threads:
        torch.set_num_threads(o.threads)
    card = job.card
    torch.manual_seed(spec.seed)
    model = job.build()
    _check_loadable(card, model)
    model.to(device)
    warming = bool(o.dense_warmup_steps) and saved is None
    warmup: list[float] = []
    if warming and main:  # other ranks get these weights from DDP's broadcast
        from ._raster_job import InstanceRasterJob  # noqa: PLC0415

        assert isinstance(job, InstanceRasterJob)  # noqa: S101  (the spec allows it for instance models only)
        warmup = job.dense_warmup(model, device)
    ema = _EMA(model, o.ema) if o.ema and main else None
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    steps = math.ceil(o.samples_per_epoch / (o.batch_size * sink.world))
    sched = _scheduler(opt, spec, steps * o.epochs)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "score": -1.0, "scores": {}}
    start = 0

    if saved is not None:
        state = saved["extra"]["train_state"]
        model.load_state_dict(saved["state_dict"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"] if "ema" in state else model.state_dict())
        opt.load_state_dict(state["optimiser"])
        if state.get("steps_per_epoch", steps) == steps:
            sched.load_state_dict(state["scheduler"])
        else:  # resumed with another number of workers: the schedule continues at the same point
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
                for _ in range(steps * int(state["epoch"])):
                    sched.step()
        history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"])
        if main:
            log.info("resuming %s after %s", last_path, f"epoch {start}" if start else "the dense warm-up")

    def save_last(done: int) -> None:
        """``last.pt`` after ``done`` epochs (0: after the dense warm-up), all a resume needs."""
        train_state = {
            "fingerprint": _fingerprint(spec),
            "epoch": done,
            "steps_per_epoch": steps,
            "optimiser": opt.state_dict(),
            "scheduler": _plain(sched.state_dict()),
            "history": history,
            "best": best,
        }
        if ema is not None:
            train_state["ema"] = {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
        save_checkpoint(last_path, model, card, extra={"epoch": done, "train_state": train_state})

    if warming:  # a checkpoint, so that a resumed run skips the warm-up
        note = ""
        if main:
            save_last(0)
            k = max(1, len(warmup) // 10)
            note = (
                f"dense warm-up of the backbone: {len(warmup)} step{'s' * (len(warmup) != 1)}, loss {np.mean(warmup[:k]):.3f} -> "
                f"{np.mean(warmup[-k:]):.3f} (mean of the first and last {k})"
            )
        sink.epoch_done(0, {"loss": float(np.mean(warmup)) if warmup else 0.0}, note)
    fwd = sink.wrap(model, device)

    for epoch in range(start, o.epochs):
        te = time.perf_counter()
        rng = np.random.default_rng([spec.seed, epoch] if main else [spec.seed, epoch, sink.rank])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        torch.manual_seed(int(rng.integers(2**62)))
        model.train()
        losses = []
        lr = float(opt.param_groups[0]["lr"])
        with _progress(steps if main else 0, f"epoch {epoch + 1}/{o.epochs}") as bar:
            for _ in range(steps):
                loss = job.loss(fwd, rng, gen, device)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                lr = float(opt.param_groups[0]["lr"])  # the rate this step uses
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update(model)
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
                bar.update()
        train_s = time.perf_counter() - te
        if not main:
            sink.epoch_done(epoch + 1, {"loss": float(np.mean(losses))}, "")
            continue
        served = model if ema is None else ema.module
        scores, score = job.validate(served)
        entry = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "losses": losses,
            "lr": lr,  # of the epoch's last step
            "train_seconds": train_s,
            "seconds": time.perf_counter() - te,
            job.scores_key: scores,
            job.metric: score,
        }
        if sink.world > 1:
            entry["workers"] = sink.world
        history.append(entry)
        if score > best["score"]:
            best = {"epoch": epoch + 1, "score": score, "scores": scores}
            extra = {"epoch": epoch + 1, job.scores_key: scores, job.metric: score}
            save_checkpoint(best_path, served, card, extra=extra)
        save_last(epoch + 1)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        note = (
            f"epoch {epoch + 1}/{o.epochs} loss {entry['loss']:.4f} train {train_s:.0f} s, total {entry['seconds']:.0f} s; "
            f"validation {job.metric} {_rounded(scores)}{' (best)' if best['epoch'] == epoch + 1 else ''}"
        )
        sink.epoch_done(epoch + 1, {"loss": float(np.mean(losses)), job.metric: score}, note)

    return result_of(out, job.metric, history, best)


def result_of(out: Path, metric: str, history: list[dict[str, Any]], best: dict[str, Any]) -> TrainResult:
    """The :class:`TrainResult` of a run whose checkpoints are in ``out``."""
    return TrainResult(
        output=out,
        best_checkpoint=out / "best.pt",
        last_checkpoint=out / "last.pt",
        epochs=len(history),
        best_epoch=int(best["epoch"]),
        metric=metric,
        best_score=float(best["score"]),
        best_scores=best["scores"],
        history=tuple(history),
    )


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _check_loadable(card: ModelCard, model: nn.Module) -> None:
    """Refuse to train a model whose checkpoints :func:`geoseg.models.load_model` could not rebuild."""
    # the one card param a trained network may have that inference cannot rebuild
    fix = "use context_slices: 0 with this version of geoseg" if "context_slices" in card.params else "fix the model section"
    try:
        built = build_model(card)
    except ModelError as e:
        raise SpecError(f"model: geoseg cannot build the trained model back from its card ({e}); {fix}") from None
    got = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if got != want:
        raise SpecError(
            f"model: the card {dict(card.params)} with bands {list(card.bands)} builds a different network "
            f"than the one trained; {fix}"
        )


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """A scheduler's state with anything weights_only loading refuses (functions) dropped."""
    plain = (int, float, str, bool, list, dict, tuple, type(None))
    return {k: v for k, v in state.items() if isinstance(v, plain)}
