"""The built-in ``mri-tumour`` model: a 2-D U-Net for glioma sub-regions, weights packaged with geoseg.

``load_model(ModelSpec(name="mri-tumour"))`` builds the U-Net and loads
``weights/mri-tumour.pt`` with ``torch.load(..., weights_only=True)``. The named model has its
own architecture, ``"mri-tumour"`` (a U-Net whose builder also loads the packaged weights),
because the registry builds a named model from its card's architecture alone; the packaged
file itself carries a plain ``"unet"`` card, so ``ModelSpec(checkpoint=...)`` loads it too,
as it loads any checkpoint ``geoseg.train`` writes. Its card lives in ``_builtin`` (no torch).

How the weights were made, and where they fail: ``weights/mri-tumour.card.md``.
"""

from __future__ import annotations

from dataclasses import replace

from ._builtin import MRI_TUMOUR_CARD, MRI_TUMOUR_WEIGHTS
from ._card import ModelCard
from ._checkpoint import load_state, read_checkpoint
from ._unet import UNet, build_unet

__all__ = ["MRI_TUMOUR_CARD", "MRI_TUMOUR_WEIGHTS", "build_mri_tumour"]


def build_mri_tumour(card: ModelCard) -> UNet:
    """The U-Net of ``card`` with the packaged weights loaded (``weights_only=True``).

    Raises:
        ModelError: the weights file is missing or unreadable, or does not fit ``card``'s bands,
            classes and params.
    """
    model = build_unet(card)
    _, state = read_checkpoint(MRI_TUMOUR_WEIGHTS)
    load_state(model, state, MRI_TUMOUR_WEIGHTS, replace(card, architecture="unet"))
    return model
