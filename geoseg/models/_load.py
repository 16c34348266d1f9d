"""Load a model from a spec: a named model, a checkpoint, or a user's compiled program.

Checkpoints are read only with ``torch.load(..., weights_only=True)`` (see ``_checkpoint``).
A TorchScript or ``torch.export`` program runs the user's code, so it loads only when the spec
names it explicitly as ``model.file``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from geoseg.errors import ModelError

from ._card import ModelCard
from ._checkpoint import archive_kind, first_line, load_state, read_checkpoint, require_file
from ._params import OUTPUT_PARAMS
from ._registry import build_model, registered_model

__all__ = ["ModelSpec", "load_model", "card_path_beside"]


@dataclass(frozen=True)
class ModelSpec:
    """Which model to run: a ``name``, a ``checkpoint`` or a ``file``, plus an optional ``card``.

    - ``name`` alone: a built-in or registered model that needs no weights (``"ndwi"``).
    - ``checkpoint``: weights for an architecture; the card comes from the checkpoint, from
      ``card``, or from ``<checkpoint stem>.card.yaml`` beside it. With ``name`` as well, the
      card's architecture must be that model's.
    - ``file``: a TorchScript file or a ``torch.export`` ``.pt2`` program, with ``card`` or
      ``<file stem>.card.yaml`` beside it.

    An explicit ``card`` always wins over a card stored in a checkpoint or a built-in one.
    ``params`` override the card: ``bands`` (a list, or a mapping from the card's band to the
    file's band, e.g. ``{"green": "3", "nir": "4"}``) and any key the card's params already have
    (e.g. ``threshold`` for ``ndwi``). Paths given as ``str`` become :class:`Path`.
    """

    name: str | None = None
    checkpoint: Path | None = None
    card: Path | None = None
    file: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("checkpoint", "card", "file"):
            value = getattr(self, attr)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, attr, Path(value))
        if not isinstance(self.params, Mapping):
            raise ModelError(f"model.params must be a mapping, got {self.params!r}; e.g. {{threshold: 0.1}}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if self.file is not None and (self.checkpoint is not None or self.name is not None):
            raise ModelError(
                f"model.file {self.file} comes with its own weights: drop model.name and model.checkpoint"
            )
        if self.name is None and self.checkpoint is None and self.file is None:
            raise ModelError("the model spec names no model: give model.name, model.checkpoint or model.file")

    def __reduce__(self) -> tuple[Any, ...]:
        # a read-only mapping proxy does not pickle; ship a plain dict and rebuild
        return (type(self), (self.name, self.checkpoint, self.card, self.file, dict(self.params)))


def card_path_beside(path: Path) -> Path:
    """Where a card for ``path`` lives by default: ``<stem>.card.yaml`` in the same folder.

    >>> card_path_beside(Path("runs/water.pt")).as_posix()
    'runs/water.card.yaml'
    """
    return path.with_name(f"{path.stem}.card.yaml")


def load_model(spec: ModelSpec) -> tuple[nn.Module, ModelCard]:
    """The model and its card for ``spec``, on the CPU.

    The module takes (N, len(card.bands), P, P) float32 and returns (N, len(card.classes), P, P)
    logits. Modules geoseg builds are in eval mode; a ``.pt2`` program runs as it was exported.

    >>> model, card = load_model(ModelSpec(name="ndwi", params={"threshold": 0.2}))
    >>> card.params["threshold"], model.threshold
    (0.2, 0.2)

    Raises:
        ModelError: on any failure, with one line naming the file or value and the fix.
    """
    if spec.file is not None:
        return _load_program(spec, spec.file)
    if spec.checkpoint is not None:
        return _load_checkpoint(spec, spec.checkpoint)
    entry = registered_model(str(spec.name))  # ModelSpec guarantees a name here
    if entry.needs_checkpoint:
        raise ModelError(f"model {spec.name!r} needs trained weights: give model.checkpoint")
    card = _explicit_card(spec) or entry.card
    _check_architecture(spec, card, f"model card {spec.card}")
    card = _with_params(card, spec.params)
    return build_model(card), card


def _load_checkpoint(spec: ModelSpec, path: Path) -> tuple[nn.Module, ModelCard]:
    stored, state = read_checkpoint(path)
    card = _explicit_card(spec) or stored or _card_beside(path, "model.checkpoint", "a bare state_dict")
    _check_architecture(spec, card, f"checkpoint {path}")
    card = _with_params(card, spec.params)
    model = build_model(card)
    load_state(model, state, path, card)
    return model, card


def _load_program(spec: ModelSpec, path: Path) -> tuple[nn.Module, ModelCard]:
    require_file(path, "model.file")
    extra = sorted(set(spec.params) - {"bands"} - OUTPUT_PARAMS)
    if extra:
        raise ModelError(f"model.file {path} is compiled, so params {extra} cannot change it: drop them")
    card = _explicit_card(spec) or _card_beside(path, "model.file", "a compiled program")
    card = _with_params(card, spec.params)
    kind = archive_kind(path)
    if kind == "checkpoint":
        raise ModelError(
            f"model.file {path} is neither TorchScript nor a torch.export .pt2 program: save it with "
            "torch.jit.save or torch.export.save (weights go in model.checkpoint)"
        )
    model: nn.Module
    try:
        if kind == "pt2":
            with path.open("rb") as f:
                model = torch.export.load(f).module()  # no .eval(): exported graphs are fixed
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise ModelError(f"model.file {path} does not load ({first_line(e)}); re-export it") from None
    _check_output(model, card, path)
    return model, card


def _check_output(model: nn.Module, card: ModelCard, path: Path) -> None:
    """Run one zero patch (1, C, P, P) float32 and require logits (1, K, P, P)."""
    shape = (1, len(card.bands), card.patch_px, card.patch_px)
    want = (1, len(card.classes), card.patch_px, card.patch_px)
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as e:  # the user's code: whatever it raises is theirs to fix
        raise ModelError(
            f"model.file {path} fails on a {shape} float32 input ({type(e).__name__}: {first_line(e)}); "
            "make it accept the card's bands and patch_px with any batch size"
        ) from None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        raise ModelError(
            f"model.file {path} returns {got} for a {shape} input, the card wants logits {want}: "
            "return one (N, classes, P, P) tensor or fix the card's bands/classes"
        )


def _explicit_card(spec: ModelSpec) -> ModelCard | None:
    if spec.card is None:
        return None
    require_file(spec.card, "model.card")
    return ModelCard.from_yaml(spec.card)


def _card_beside(path: Path, field_name: str, what: str) -> ModelCard:
    beside = card_path_beside(path)
    if not beside.is_file():
        raise ModelError(f"{field_name} {path} is {what} with no card: write {beside} or give model.card")
    return ModelCard.from_yaml(beside)


def _check_architecture(spec: ModelSpec, card: ModelCard, source: str) -> None:
    if spec.name is None:
        return
    want = registered_model(spec.name).card.architecture
    if card.architecture != want:
        raise ModelError(
            f"{source} is architecture {card.architecture!r} but model.name {spec.name!r} is {want!r}: "
            "drop model.name or fix the card"
        )


def _with_params(card: ModelCard, params: Mapping[str, Any]) -> ModelCard:
    """``card`` with ``params`` applied: ``bands`` replaces bands, other keys the card's params."""
    others = {k: v for k, v in params.items() if k != "bands"}
    unknown = sorted(set(others) - set(card.params) - OUTPUT_PARAMS)
    if unknown:
        raise ModelError(
            f"model {card.name!r} has no params {unknown}: it takes bands" + "".join(f", {k}" for k in card.params)
        )
    bands = _bands_param(card, params["bands"]) if "bands" in params else card.bands
    if not others and bands == card.bands:
        return card
    return replace(card, bands=bands, params={**card.params, **others})


def _bands_param(card: ModelCard, value: Any) -> tuple[str, ...]:
    fix = f"give {len(card.bands)} bands as a list or as {{{', '.join(f'{b}: ...' for b in card.bands)}}}"
    if isinstance(value, Mapping):
        unknown = [k for k in value if str(k) not in card.bands]
        if unknown:
            raise ModelError(f"model.params.bands names {unknown}, which model {card.name!r} does not take: {fix}")
        given = {str(k): str(v) for k, v in value.items()}
        return tuple(given.get(b, b) for b in card.bands)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == len(card.bands):
        return tuple(str(v) for v in value)
    raise ModelError(f"model.params.bands {value!r} does not fit model {card.name!r}: {fix}")
