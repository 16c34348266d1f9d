"""Named models and the builders for each architecture.

A *named model* (``list_models()``) is what a spec's ``model.name`` picks: a card plus a
factory. Its card's ``architecture`` also makes the factory the builder for every card of that
architecture, which is how :func:`build_model` turns a checkpoint's card into a module.
Some named models are templates whose weights must come from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from geoseg.errors import ModelError

from ._card import ModelCard
from ._ndwi import NDWI_CARD, build_ndwi
from ._torchvision import TORCHVISION_ARCHITECTURES, build_torchvision, torchvision_card
from ._unet import UNET_CARD, build_unet

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

ModelFactory = Callable[[ModelCard], nn.Module]
"""Builds a randomly initialised (or parameter-free) module for a card."""


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: its card, its factory, and whether weights must come from a checkpoint."""

    card: ModelCard
    factory: ModelFactory
    needs_checkpoint: bool = False


_MODELS: dict[str, RegisteredModel] = {}
_FACTORIES: dict[str, ModelFactory] = {}


def register_model(name: str, card: ModelCard, factory: ModelFactory, *, needs_checkpoint: bool = False) -> None:
    """Make ``name`` loadable by :func:`load_model` and ``card.architecture`` buildable.

    Raises :class:`ModelError` when ``name`` is taken, or when ``card.architecture`` is
    already built by a different factory.
    """
    if not name or not name.strip():
        raise ModelError("register_model: the model name is empty; give a name")
    if name in _MODELS:
        raise ModelError(f"model {name!r} is already registered: pick another name")
    known = _FACTORIES.get(card.architecture)
    if known is not None and known is not factory:
        raise ModelError(
            f"architecture {card.architecture!r} is already built by {getattr(known, '__name__', known)!r}: "
            f"give model {name!r} a new architecture name or reuse that factory"
        )
    _FACTORIES[card.architecture] = factory
    _MODELS[name] = RegisteredModel(card, factory, needs_checkpoint)


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
    return factory(card).eval()


def _register_builtins() -> None:
    register_model("ndwi", NDWI_CARD, build_ndwi)
    register_model("unet", UNET_CARD, build_unet, needs_checkpoint=True)
    for architecture in TORCHVISION_ARCHITECTURES:
        register_model(architecture, torchvision_card(architecture), build_torchvision, needs_checkpoint=True)


_register_builtins()
