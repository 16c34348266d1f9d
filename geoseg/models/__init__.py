"""Segmentation models: the registry, model cards, checkpoints and band matching.

>>> from geoseg.models import ModelSpec, load_model
>>> model, card = load_model(ModelSpec(name="ndwi"))
>>> card.bands, card.classes
(('green', 'nir'), ('other', 'water'))
"""

from ._bands import resolve_bands
from ._card import BAND_ALIASES, ModelCard, Normalisation
from ._checkpoint import save_checkpoint
from ._load import ModelSpec, card_path_beside, load_model
from ._ndwi import NDWI
from ._registry import (
    ModelFactory,
    RegisteredModel,
    build_model,
    list_architectures,
    list_models,
    model_card,
    register_model,
)
from ._unet import UNet
from . import _mri  # noqa: F401,E402  registers the built-in "mri-tumour" model

__all__ = [
    "BAND_ALIASES",
    "ModelCard",
    "ModelFactory",
    "ModelSpec",
    "NDWI",
    "Normalisation",
    "RegisteredModel",
    "UNet",
    "build_model",
    "card_path_beside",
    "list_architectures",
    "list_models",
    "load_model",
    "model_card",
    "register_model",
    "resolve_bands",
    "save_checkpoint",
]
