"""The built-in ``mri-tumour`` model: a 2-D U-Net for glioma sub-regions, weights packaged with geoseg.

``load_model(ModelSpec(name="mri-tumour"))`` builds the U-Net and loads
``weights/mri-tumour.pt`` with ``torch.load(..., weights_only=True)``. The named model has its
own architecture, ``"mri-tumour"`` (a U-Net whose builder also loads the packaged weights),
because the registry builds a named model from its card's architecture alone; the packaged
file itself carries a plain ``"unet"`` card, so ``ModelSpec(checkpoint=...)`` loads it too,
as it loads any checkpoint ``geoseg.train`` writes.

How the weights were made, and where they fail: ``weights/mri-tumour.card.md``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ._card import ModelCard, Normalisation
from ._checkpoint import load_state, read_checkpoint
from ._registry import register_model
from ._unet import UNet, build_unet

__all__ = ["MRI_TUMOUR_CARD", "MRI_TUMOUR_WEIGHTS", "build_mri_tumour"]

MRI_TUMOUR_WEIGHTS = Path(__file__).resolve().parent / "weights" / "mri-tumour.pt"

MRI_TUMOUR_CARD = ModelCard(
    name="mri-tumour",
    architecture="mri-tumour",
    classes=("background", "oedema", "non-enhancing+necrosis", "enhancing"),
    bands=("flair", "t1c"),
    normalisation=Normalisation("zscore_foreground"),
    patch_px=256,
    params={"base_channels": 16, "depth": 4, "min_lesion_ml": 0.5},
    description=(
        "2-D U-Net (base_channels 16, depth 4) segmenting glioma sub-regions on axial FLAIR + T1c "
        "slices, z-scored over the brain. Trained on the CPU on 4 BraTS 2013 cases (pat0001, "
        "pat0002, pat0003, pat0005; jobs/train_mri_tumour.yaml); epoch 11 of 30 (weight moving "
        "average) chosen by validation Dice on pat0004: whole tumour 0.906, tumour core 0.632, "
        "enhancing 0.765 with geoseg's removal of components under 0.5 mL (float16 weights; no "
        "independent test case). Weak on non-enhancing tumour/necrosis, which it often calls "
        "oedema. Research use only, not for clinical use; see mri-tumour.card.md."
    ),
    licence="CC BY-NC-SA 3.0 (trained on BraTS 2013/2015 data)",
)


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


register_model("mri-tumour", MRI_TUMOUR_CARD, build_mri_tumour)
