"""Named models and the builders for each architecture, without importing torch.

A *named model* (``list_models()``) is what a spec's ``model.name`` picks: a card plus a
factory. Its card's ``architecture`` also makes the factory the builder for every card of that
architecture, which is how :func:`build_model` turns a checkpoint's card into a module.
Some named models are templates whose weights must come from a checkpoint.

A factory is a callable or a ``"module:function"`` path, imported on the first build: the
driver plans a job from cards alone and never imports torch for a built-in model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import ModelError

from ._builtin import (
    BUILDINGS_CARD,
    BUILDINGS_WEIGHTS,
    MASKRCNN_ARCHITECTURES,
    MNDWI_CARD,
    MRI_TUMOUR_CARD,
    MRI_TUMOUR_WEIGHTS,
    NDWI_CARD,
    ROADS_CARD,
    ROADS_WEIGHTS,
    TORCHVISION_ARCHITECTURES,
    UNET_CARD,
    maskrcnn_card,
    torchvision_card,
)
from ._card import ModelCard

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "ModelFactory",
    "RegisteredModel",
    "register_model",
    "list_models",
    "list_architectures",
    "model_card",
    "registered_model",
    "build_model",
]

ModelFactory = Callable[[ModelCard], "nn.Module"]
"""Builds a randomly initialised (or parameter-free) module for a card."""


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: its card, its factory (a callable or ``"module:function"``), whether
    weights must come from a checkpoint, and the file of packaged weights its factory loads."""

    card: ModelCard
    factory: ModelFactory | str
    needs_checkpoint: bool = False
    weights: Path | None = None


_MODELS: dict[str, RegisteredModel] = {}
_FACTORIES: dict[str, ModelFactory | str] = {}


def register_model(
    name: str,
    card: ModelCard,
    factory: ModelFactory | str,
    *,
    needs_checkpoint: bool = False,
    weights: Path | None = None,
) -> None:
    """Make ``name`` loadable by :func:`load_model` and ``card.architecture`` buildable.

    ``weights`` is the file the factory loads packaged weights from, if any: its bytes are part
    of every job's fingerprint, so a store is never resumed with other weights.

    Raises :class:`ModelError` when ``name`` is taken, or when ``card.architecture`` is
    already built by a different factory.
    """
    if not name or not name.strip():
        raise ModelError("register_model: the model name is empty; give a name")
    if name in _MODELS:
        raise ModelError(f"model {name!r} is already registered: pick another name")
    known = _FACTORIES.get(card.architecture)
    if known is not None and known is not factory and known != factory:
        raise ModelError(
            f"architecture {card.architecture!r} is already built by {_factory_name(known)!r}: "
            f"give model {name!r} a new architecture name or reuse that factory"
        )
    _FACTORIES[card.architecture] = factory
    _MODELS[name] = RegisteredModel(card, factory, needs_checkpoint, weights)


def list_models() -> list[str]:
    """Names :func:`load_model` accepts as ``ModelSpec.name``, sorted."""
    return sorted(_MODELS)


def list_architectures() -> list[str]:
    """Values a card's ``architecture`` may take, sorted."""
    return sorted(_FACTORIES)


def registered_model(name: str) -> RegisteredModel:
    """The registry entry for ``name``; an unknown name raises :class:`ModelError` listing the known ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise ModelError(
            f"model {name!r} is unknown: use one of {', '.join(list_models())}, "
            "or give model.file for your own TorchScript/.pt2 model"
        ) from None


def model_card(name: str) -> ModelCard:
    """The card of a named model (for checkpoint models, the template a checkpoint's card replaces).

    >>> model_card("ndwi").classes
    ('other', 'water')
    """
    return registered_model(name).card


def _factory_name(factory: ModelFactory | str) -> str:
    return factory if isinstance(factory, str) else getattr(factory, "__qualname__", repr(factory))


def factory_identity(factory: ModelFactory | str) -> str:
    """``module:qualname`` of a factory: part of the fingerprint of a model without weights."""
    if isinstance(factory, str):
        return factory
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


def _resolve(factory: ModelFactory | str) -> ModelFactory:
    if not isinstance(factory, str):
        return factory
    module, _, attr = factory.partition(":")
    fn: Any = getattr(importlib.import_module(module), attr)
    return fn  # type: ignore[no-any-return]


def build_model(card: ModelCard) -> nn.Module:
    """A randomly initialised (or parameter-free) module for ``card``, in eval mode.

    It takes (N, len(card.bands), P, P) float32 and returns (N, len(card.classes), P, P) logits.

    >>> build_model(model_card("ndwi"))
    NDWI(threshold=0.0, gain=10.0)
    """
    try:
        factory = _FACTORIES[card.architecture]
    except KeyError:
        raise ModelError(
            f"model {card.name!r} has architecture {card.architecture!r}, which is unknown: use one of "
            f"{', '.join(list_architectures())}"
        ) from None
    return _resolve(factory)(card).eval()


def _register_builtins() -> None:
    register_model("ndwi", NDWI_CARD, "geoseg.models._ndwi:build_ndwi")
    register_model("mndwi", MNDWI_CARD, "geoseg.models._ndwi:build_mndwi")
    register_model("unet", UNET_CARD, "geoseg.models._unet:build_unet", needs_checkpoint=True)
    for architecture in TORCHVISION_ARCHITECTURES:
        register_model(
            architecture, torchvision_card(architecture), "geoseg.models._torchvision:build_torchvision",
            needs_checkpoint=True,
        )  # fmt: skip
    for architecture in MASKRCNN_ARCHITECTURES:
        register_model(
            architecture, maskrcnn_card(architecture), "geoseg.models._maskrcnn:build_maskrcnn", needs_checkpoint=True
        )
    register_model("mri-tumour", MRI_TUMOUR_CARD, "geoseg.models._mri:build_mri_tumour", weights=MRI_TUMOUR_WEIGHTS)
    register_model("roads", ROADS_CARD, "geoseg.models._packaged:build_roads", weights=ROADS_WEIGHTS)
    register_model("buildings", BUILDINGS_CARD, "geoseg.models._packaged:build_buildings", weights=BUILDINGS_WEIGHTS)


_register_builtins()
