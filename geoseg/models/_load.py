"""Build a model from a spec: a named model, a checkpoint, or a user's compiled program.

Checkpoints are read only with ``torch.load(..., weights_only=True)`` (see ``_checkpoint``).
A TorchScript or ``torch.export`` program runs the user's code, so it loads only when the spec
names it explicitly as ``model.file``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import ModelError

from ._card import ModelCard
from ._checkpoint import load_state, read_checkpoint
from ._files import archive_kind, first_line
from ._registry import build_model
from ._resolve import _checked, checkpoint_card, resolve_card
from ._spec import ModelSpec

__all__ = ["load_model"]


def load_model(spec: ModelSpec) -> tuple[nn.Module, ModelCard]:
    """The model and its card for ``spec``, on the CPU.

    A semantic model takes (N, len(card.bands), P, P) float32 and returns (N,
    len(card.classes), P, P) logits; an instance model returns torchvision's list of dicts
    (see :class:`ModelCard`). Modules geoseg builds are in eval mode; a ``.pt2`` program runs
    as it was exported.

    >>> model, card = load_model(ModelSpec(name="ndwi", params={"threshold": 0.2}))
    >>> card.params["threshold"], model.threshold
    (0.2, 0.2)

    Raises:
        ModelError: on any failure, with one line naming the file or value and the fix.
    """
    if spec.checkpoint is not None:
        stored, state = read_checkpoint(spec.checkpoint)
        card = _checked(spec, checkpoint_card(spec, stored), f"checkpoint {spec.checkpoint}")
        model = build_model(card)
        load_state(model, state, spec.checkpoint, card)
        return model, card
    card = resolve_card(spec)
    if spec.file is not None:
        return _load_program(spec.file, card), card
    return build_model(card), card


def _load_program(path: Path, card: ModelCard) -> nn.Module:
    model: nn.Module
    try:
        if archive_kind(path) == "pt2":
            with path.open("rb") as f:
                model = torch.export.load(f).module()  # no .eval(): exported graphs are fixed
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise ModelError(f"model.file {path} does not load ({first_line(e, path)}); re-export it") from None
    _check_output(model, card, path)
    return model


def _check_output(model: nn.Module, card: ModelCard, path: Path) -> None:
    """Run one zero patch (1, C, P, P) float32 and require what the card's task declares."""
    shape = (1, len(card.bands), card.patch_px, card.patch_px)
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as e:  # the user's code: whatever it raises is theirs to fix
        raise ModelError(
            f"model.file {path} fails on a {shape} float32 input ({type(e).__name__}: {first_line(e, path)}); "
            "make it accept the card's bands and patch_px with any batch size"
        ) from None
    if card.task == "instance":
        check_instance_output(out, 1, card.patch_px, f"model.file {path}")
        return
    want = (1, len(card.classes), card.patch_px, card.patch_px)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        hint = " (a list of dicts is an instance model: set task: instance in its card)" if isinstance(out, list) else ""
        raise ModelError(
            f"model.file {path} returns {got} for a {shape} input, the card wants logits {want}{hint}: "
            "return one (N, classes, P, P) tensor or fix the card's bands/classes"
        )


def check_instance_output(out: object, n: int, patch_px: int, source: str) -> None:
    """Require torchvision's instance output: ``n`` dicts of boxes, labels, scores, masks.

    Raises:
        ModelError: a tensor of dense scores, or dicts missing a key or with masks of another size.
    """
    if isinstance(out, torch.Tensor):
        raise ModelError(
            f"{source} returns a tensor of shape {tuple(out.shape)}, dense class scores, but its card says "
            "task: instance; set task: semantic in the card, or return per-image dicts of boxes, labels, scores, masks"
        )
    if not isinstance(out, (list, tuple)) or len(out) != n or not all(isinstance(d, dict) for d in out):
        raise ModelError(
            f"{source} returns {type(out).__name__}, not {n} dict(s) of boxes, labels, scores, masks as "
            "torchvision's Mask R-CNN does; fix the model's output"
        )
    for d in out:
        missing = sorted({"boxes", "labels", "scores", "masks"} - set(d))
        if missing:
            raise ModelError(f"{source} returns dicts without {missing}; return boxes, labels, scores and masks")
        masks = d["masks"]
        if masks.ndim != 4 or tuple(masks.shape[-2:]) != (patch_px, patch_px):
            raise ModelError(
                f"{source} returns masks of shape {tuple(masks.shape)}, not (K, 1, {patch_px}, {patch_px}) for a "
                f"{patch_px} px patch; paste the masks into the patch as torchvision does"
            )
