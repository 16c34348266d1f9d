"""The built-in ``roads`` and ``buildings`` models: trained weights packaged with geoseg.

As ``mri-tumour`` (:mod:`geoseg.models._mri`): each named model has its own architecture, a
builder that builds the plain network (``unet``, ``maskrcnn_mobilenet_v3_large_fpn``) and
loads ``weights/<name>.pt`` with ``weights_only=True``; the packaged file itself carries the
plain card, so ``ModelSpec(checkpoint=...)`` loads it too. The cards live in ``_builtin`` (no
torch); how the weights were made and where they fail: ``weights/<name>.card.md``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from ._builtin import BUILDINGS_WEIGHTS, ROADS_WEIGHTS
from ._card import ModelCard
from ._checkpoint import load_state, read_checkpoint
from ._maskrcnn import build_maskrcnn
from ._unet import build_unet

__all__ = ["build_buildings", "build_roads"]


def _load(model: nn.Module, card: ModelCard, path: Path) -> nn.Module:
    _, state = read_checkpoint(path)
    load_state(model, state, path, card)
    return model


def build_roads(card: ModelCard) -> nn.Module:
    """The ``roads`` U-Net with its packaged weights.

    Raises:
        ModelError: the weights file is missing, unreadable or does not fit ``card``.
    """
    plain = replace(card, architecture="unet")
    return _load(build_unet(plain), plain, ROADS_WEIGHTS)


def build_buildings(card: ModelCard) -> nn.Module:
    """The ``buildings`` light Mask R-CNN with its packaged weights.

    Raises:
        ModelError: the weights file is missing, unreadable or does not fit ``card``.
    """
    plain = replace(card, architecture="maskrcnn_mobilenet_v3_large_fpn")
    return _load(build_maskrcnn(plain), plain, BUILDINGS_WEIGHTS)
