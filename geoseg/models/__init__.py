"""Segmentation models: the registry, model cards, checkpoints and band matching.

Importing this package imports no torch: cards, the registry, :class:`ModelSpec` and band
matching are plain Python, so a job is planned and validated without torch. What builds or
loads a module (``load_model``, ``build_model`` of a torch model, ``UNet``, ``NDWI``,
``save_checkpoint``) imports torch when first used.

>>> from geoseg.models import ModelSpec, load_model
>>> model, card = load_model(ModelSpec(name="ndwi"))
>>> card.bands, card.classes
(('green', 'nir'), ('other', 'water'))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._bands import resolve_bands
from ._builtin import INDEX_ARCHITECTURES, OTSU
from ._card import BAND_ALIASES, TASKS, ModelCard, Normalisation, Task
from ._params import instance_thresholds
from ._registry import (
    ModelFactory,
    RegisteredModel,
    build_model,
    list_architectures,
    list_models,
    model_card,
    register_model,
)
from ._resolve import card_path_beside, resolve_card, weights_identity
from ._spec import ModelSpec

if TYPE_CHECKING:
    from ._checkpoint import save_checkpoint
    from ._load import load_model
    from ._ndwi import MNDWI, NDWI
    from ._unet import UNet

_LAZY = {
    "load_model": "geoseg.models._load",
    "save_checkpoint": "geoseg.models._checkpoint",
    "NDWI": "geoseg.models._ndwi",
    "MNDWI": "geoseg.models._ndwi",
    "UNet": "geoseg.models._unet",
}

__all__ = [
    "BAND_ALIASES",
    "TASKS",
    "ModelCard",
    "ModelFactory",
    "ModelSpec",
    "NDWI",
    "MNDWI",
    "OTSU",
    "INDEX_ARCHITECTURES",
    "Normalisation",
    "RegisteredModel",
    "Task",
    "UNet",
    "build_model",
    "card_path_beside",
    "instance_thresholds",
    "list_architectures",
    "list_models",
    "load_model",
    "model_card",
    "register_model",
    "resolve_bands",
    "resolve_card",
    "save_checkpoint",
    "weights_identity",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
