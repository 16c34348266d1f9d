"""The model as a callable: weights loaded once, batches of raw patches in, probabilities out.

Ray-free on purpose: the pipeline wraps :class:`Predictor` in an actor, and the reference and
the benchmarks call it in-process, so both run the very same arithmetic.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Literal, cast

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from geoseg.core.detections import patch_record_dtype, resolve_patch
from geoseg.errors import ModelError
from geoseg.models import ModelCard, ModelSpec, instance_thresholds, load_model
from geoseg.models._load import check_instance_output

__all__ = ["Precision", "Predictor", "optimise_for_cpu", "pick_device"]

Precision = Literal["auto", "fp32", "fp16", "bf16"]


def pick_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this worker sees no CUDA GPU; use device: auto or cpu")
    return torch.device(device)


def _fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d in an ``nn.Sequential`` into that
    convolution (eval-mode statistics), leaving an ``nn.Identity`` in its place; how many."""
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (
                type(conv) is nn.Conv2d
                and type(bn) is nn.BatchNorm2d
                and bn.running_mean is not None
                and bn.running_var is not None
            ):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
                folded += 1
    return folded


def optimise_for_cpu(model: nn.Module) -> bool:
    """Make an eval-mode model faster on the CPU, in place: BatchNorm folded into the convolution
    before it, weights in ``channels_last`` order. Feed it ``channels_last`` inputs.

    Same function, different rounding: outputs move by about 1e-6. On this project's 2-core
    machine it ran mri-tumour 2.0x, the benchmarks' U-Net 1.6x and DeepLabV3-ResNet50 1.5x
    faster (bench/cpu_optimise.py, docs/benchmarks.md). Models without convolutions (``ndwi``),
    TorchScript and ``torch.export`` programs are left alone.

    Returns:
        True where the model was changed (and so wants ``channels_last`` inputs).
    """
    if not isinstance(model, nn.Module) or isinstance(model, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return False
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    if model.training:
        raise ModelError("optimise_for_cpu: the model is in training mode; call model.eval() first")
    _fold_batchnorm(model)
    model.to(memory_format=torch.channels_last)
    return True


def _first_argmax(probs: torch.Tensor) -> np.ndarray:
    """(N, K, H, W) -> (N, H, W) uint8 index of the first maximum over K, as ``np.argmax``.

    On a GPU torch's, which also returns the first maximum, so only uint8 comes back to the
    host. On the CPU numpy's, except for two classes: one comparison, 13 times faster.
    """
    if probs.device.type != "cpu":
        return torch.argmax(probs, dim=1).to(torch.uint8).cpu().numpy()
    p = probs.numpy()
    if p.shape[1] != 2:
        return np.argmax(p, axis=1).astype(np.uint8)
    # Two classes (water, roads, any binary model): class 1 where it is strictly larger, or NaN
    # where class 0 is not (np.argmax takes the first NaN as the maximum). 0.13 ms a 256 px
    # patch, against 1.7 ms for np.argmax, which reduces along a strided axis.
    p0, p1 = p[:, 0], p[:, 1]
    take = np.greater(p1, p0)
    take |= np.isnan(p1) & ~np.isnan(p0)
    return take.view(np.uint8)


class Predictor:
    """Batched forward pass with a fixed batch shape.

    Every call is cut into batches of exactly ``batch_size`` patches (the last one padded with
    zeros), so a patch's result never depends on which other patches share its batch: the
    output is the same whatever the block size, worker count or packing of blocks into calls.
    On a GPU the forward pass runs under autocast (bf16 where supported, else fp16) unless
    ``precision="fp32"``.

    It keeps no counts: what the report needs comes back with each call's result.

    Args:
        model: which model to load (a :class:`geoseg.models.ModelSpec`), or a module already
            built, with ``card`` (training validation: the same inference path as a run; the
            module is copied before it is optimised, so training goes on untouched).
        batch_size: patches per forward pass.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        precision: ``auto`` (fp32 on CPU, bf16/fp16 on GPU), ``fp32``, ``fp16`` or ``bf16``.
        threads: torch intra-op threads on the CPU. None: one for a model without convolutions
            (``ndwi``: elementwise arithmetic gains nothing from threads, and its cores serve the
            reads; measured 15 s against 21 s for a 20000² scene on 2 cores), else
            ``max_threads`` (or torch's choice).
        max_threads: the threads a convolutional model may use on the CPU (its share of the cores).
        optimise: on the CPU, run the model through :func:`optimise_for_cpu` (BatchNorm folded,
            ``channels_last``); False runs it as loaded. Not applied on GPUs (not measured there).
        card: the card of a module given as ``model``.

    Raises:
        ModelError: the model does not load, or a module comes without its card.
    """

    def __init__(
        self,
        model: ModelSpec | nn.Module,
        batch_size: int = 16,
        device: str = "auto",
        precision: Precision = "auto",
        threads: int | None = None,
        optimise: bool = True,
        card: ModelCard | None = None,
        max_threads: int | None = None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.device = pick_device(device)
        if isinstance(model, nn.Module):
            if card is None:
                raise ModelError("Predictor: a module needs its card (bands, classes, normalisation)")
            module = copy.deepcopy(model) if optimise and self.device.type == "cpu" else model
        else:
            module, card = load_model(model)
        try:
            module.eval()
        except NotImplementedError:
            pass  # a torch.export program is a fixed graph: it has no train/eval switch
        self.model = module.to(self.device)
        if not threads and self.device.type == "cpu":
            compiled = isinstance(self.model, (torch.jit.ScriptModule, torch.fx.GraphModule))
            elementwise = not compiled and not any(isinstance(m, nn.Conv2d) for m in self.model.modules())
            if elementwise:
                torch.set_num_threads(1)
            elif max_threads:
                torch.set_num_threads(max_threads)
        self.channels_last = optimise and self.device.type == "cpu" and optimise_for_cpu(self.model)
        self.card: ModelCard = card
        self.batch_size = batch_size
        if card.task == "instance":
            self.score_threshold, self.mask_threshold, _ = instance_thresholds(card)
        self.autocast_dtype: torch.dtype | None = None
        if self.device.type == "cuda" and precision == "fp32":
            # fp32 means fp32: cuDNN's TF32 convolutions (torch's default) make a patch's answer
            # depend on its batch neighbours (DeepLabV3: 57 of 3.5 M labels differed, up to 8e-4 in
            # probability on an H200; bench/gpu_packing.py), which would break partition
            # invariance. Without TF32, and in bf16/fp16, the answers were bit-identical.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if self.device.type == "cuda" and precision != "fp32":
            if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
                self.autocast_dtype = torch.float16
            else:
                self.autocast_dtype = torch.bfloat16
        elif precision in ("fp16", "bf16") and self.device.type == "cpu":
            self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        norm = card.normalisation
        self._offset: torch.Tensor | None
        self._scale: torch.Tensor | None
        if norm.kind == "affine":
            self._offset = torch.tensor(norm.offset, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
            self._scale = torch.tensor(norm.scale, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        else:
            self._offset = self._scale = None
        self._zero_cache: dict[tuple[tuple[int, ...], bool], np.ndarray] = {}

    @property
    def numerics(self) -> str:
        """How the model computes: ``cpu-fp32``, ``cuda-bf16``...; part of what decides a
        store's values, so a store started with one is never resumed with another."""
        dtype = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.autocast_dtype]
        return f"{self.device.type}-{dtype}"

    @property
    def in_channels(self) -> int:
        """Input channels: each band, times the slices of context either side for volume models."""
        return len(self.card.bands) * (2 * int(self.card.params.get("context_slices", 0)) + 1)

    def __call__(self, patches: np.ndarray, labels_only: bool = False) -> np.ndarray:
        """(N, C, P, P) raw pixels -> (N, K, P, P) float32 class probabilities (softmax).

        With ``labels_only``, (N, 1, P, P) uint8 argmax labels instead: all that ``crop``
        stitching of a mask needs, at a fraction of the bytes to ship.
        """
        return self.predict([patches], labels_only)[0]

    @torch.inference_mode()
    def predict(self, parts: Sequence[np.ndarray], labels_only: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        """The answers for ``parts`` (each (n_i, C, P, P)) taken as one run of patches.

        Patches of consecutive parts share batches, so a job's blocks fill whole batches.
        Patches whose pixels are all 0 (the background of a normalised MRI slice, the
        zero-filled edge of a scene) are not sent through the model again: they get the answer
        computed once for a zero patch in a batch of the same fixed shape, which is what a
        forward pass gives any zero patch. Every patch is still answered, once.

        Returns:
            ``(outputs, zero, padded)``: (sum n_i, K, P, P) float32 probabilities, or (sum n_i,
            1, P, P) uint8 labels with ``labels_only``; (sum n_i,) bool, True for the all-zero
            patches answered from the cache; and how many zero rows padded the last batch.
        """
        for part in parts:
            if part.ndim != 4 or part.shape[1] != self.in_channels:
                raise ModelError(
                    f"model {self.card.name!r} takes {self.in_channels} channels from bands {list(self.card.bands)}, "
                    f"got patches of shape {part.shape}; check the input bands"
                )
        n = sum(p.shape[0] for p in parts)
        out = self._empty(n, parts, labels_only)
        zero = np.concatenate([~p.reshape(p.shape[0], -1).any(axis=1) for p in parts]) if n else np.zeros(0, bool)
        if zero.any():
            out[zero] = self._zero_answer(parts[0].shape[1:], labels_only)
        live: list[np.ndarray] = []
        start = 0
        for p in parts:
            z = zero[start : start + p.shape[0]]
            start += p.shape[0]
            live.append(p if not z.any() else p[~z])
        padded = 0
        if n > int(zero.sum()):
            out[~zero] = self._forward(live, labels_only)
            padded = -(n - int(zero.sum())) % self.batch_size
        return out, zero, padded

    def _batches(self, parts: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
        """Consecutive runs of ``batch_size`` patches over ``parts`` (the last run may be short):
        views where a run lies in one part, a copy of at most one batch where it spans two."""
        b = self.batch_size
        carry: list[np.ndarray] = []
        have = 0
        for part in parts:
            k = 0
            if have:
                take = min(b - have, part.shape[0])
                carry.append(part[:take])
                have += take
                k = take
                if have < b:
                    continue
                yield np.concatenate(carry)
                carry, have = [], 0
            while part.shape[0] - k >= b:
                yield part[k : k + b]
                k += b
            if k < part.shape[0]:
                carry, have = [part[k:]], part.shape[0] - k
        if have:
            yield np.concatenate(carry)

    @torch.inference_mode()
    def _forward(self, parts: Sequence[np.ndarray] | np.ndarray, labels_only: bool) -> np.ndarray:
        """The model on every patch, in batches of exactly ``batch_size`` (the last one zero-padded)."""
        if isinstance(parts, np.ndarray):
            parts = [parts]
        n = sum(p.shape[0] for p in parts)
        out = self._empty(n, parts, labels_only)
        b = self.batch_size
        k = 0
        for batch in self._batches(parts):
            chunk = np.ascontiguousarray(batch, dtype=np.float32)
            if not chunk.flags.writeable and self.device.type == "cpu":
                chunk = chunk.copy()  # e.g. zero-copy from Ray's object store; torch wants writable memory
            m = chunk.shape[0]
            x = torch.from_numpy(chunk).to(self.device, non_blocking=True)
            if m < b:  # pad on the device: the batch shape, hence the arithmetic, never changes
                x = torch.cat([x, x.new_zeros((b - m, *x.shape[1:]))])
            if self._offset is not None and self._scale is not None:
                x = (x - self._offset) / self._scale
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    logits = self.model(x)
            else:
                logits = self.model(x)
            if self.card.task == "instance":
                out[k : k + m] = self._instances(logits, b, x.shape[-1])[:m]
                k += m
                continue
            probs = torch.softmax(logits[:m].float(), dim=1)
            if labels_only:
                out[k : k + m, 0] = _first_argmax(probs)
            else:
                out[k : k + m] = probs.cpu().numpy()
            k += m
        return out

    def _empty(self, n: int, parts: Sequence[np.ndarray], labels_only: bool) -> np.ndarray:
        """The output array of ``n`` patches: records for an instance model, else
        (n, K or 1, P, P) probabilities or labels."""
        size = parts[0].shape[2:] if parts else (self.card.patch_px, self.card.patch_px)
        if self.card.task == "instance":
            return np.zeros(n, patch_record_dtype(int(size[-1])))
        k_out = 1 if labels_only else self.card.n_classes
        return np.empty((n, k_out, *size), np.uint8 if labels_only else np.float32)

    def _instances(self, out: object, n: int, patch_px: int) -> np.ndarray:
        """torchvision's per-image dicts -> ``n`` records, one instance per pixel
        (:func:`geoseg.core.detections.resolve_patch` with the card's thresholds)."""
        check_instance_output(out, n, patch_px, f"model {self.card.name!r}")
        recs = np.zeros(n, patch_record_dtype(patch_px))
        dicts = cast("Sequence[dict[str, torch.Tensor]]", out)  # checked above
        for i, d in enumerate(dicts):
            boxes, labels, scores, masks = (d[k].detach().float().cpu().numpy() for k in ("boxes", "labels", "scores", "masks"))
            recs[i] = resolve_patch(
                boxes, labels, scores, masks, self.card.n_classes, self.score_threshold, self.mask_threshold
            )
        return recs

    def _zero_answer(self, shape: tuple[int, ...], labels_only: bool) -> np.ndarray:
        """The output for an all-zero patch of ``shape`` (C, P, P), computed once per shape."""
        key = (tuple(shape), labels_only)
        if key not in self._zero_cache:
            self._zero_cache[key] = self._forward(np.zeros((1, *shape), np.float32), labels_only)[0]
        return self._zero_cache[key]
