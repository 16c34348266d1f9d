"""The cards of geoseg's built-in models, without torch: planning a job needs the card only.

Each entry names its builder as ``"module:function"``; :func:`geoseg.models.build_model`
imports it (and torch) only when a model is really built, in a model actor or in training.
"""

from __future__ import annotations

from pathlib import Path

from ._card import ModelCard, Normalisation

__all__ = [
    "NDWI_DEFAULTS",
    "NDWI_CARD",
    "MNDWI_CARD",
    "OTSU",
    "INDEX_ARCHITECTURES",
    "UNET_DEFAULTS",
    "UNET_CARD",
    "TORCHVISION_ARCHITECTURES",
    "torchvision_card",
    "MASKRCNN_ARCHITECTURES",
    "MASKRCNN_DEFAULTS",
    "maskrcnn_card",
    "MRI_TUMOUR_CARD",
    "MRI_TUMOUR_WEIGHTS",
    "ROADS_CARD",
    "ROADS_WEIGHTS",
    "BUILDINGS_CARD",
    "BUILDINGS_WEIGHTS",
]

NDWI_DEFAULTS = {"threshold": 0.0, "gain": 10.0}

NDWI_CARD = ModelCard(
    name="ndwi",
    architecture="ndwi",
    classes=("other", "water"),
    bands=("green", "nir"),
    patch_px=256,
    overlap_px=0,  # pointwise: a pixel's answer needs no context, so patches need no overlap
    params=dict(NDWI_DEFAULTS),
    description=(
        "McFeeters NDWI = (green - nir) / (green + nir), water where NDWI > threshold "
        "(0 where green + nir = 0). Parameter-free; raw band values in. "
        "McFeeters, S. K. (1996), Int. J. Remote Sensing 17(7):1425-1432."
    ),
    licence="no weights",
)

MNDWI_CARD = ModelCard(
    name="mndwi",
    architecture="mndwi",
    classes=("other", "water"),
    bands=("green", "swir1"),
    patch_px=256,
    overlap_px=0,
    params=dict(NDWI_DEFAULTS),
    description=(
        "Xu's modified NDWI = (green - swir1) / (green + swir1), water where MNDWI > threshold "
        "(0 where green + swir1 = 0); SWIR1 separates water from built-up land better than NIR. "
        "threshold: a number, or otsu (chosen per scene from a histogram over all its blocks). "
        "Xu, H. (2006), Int. J. Remote Sensing 27(14):3025-3033."
    ),
    licence="no weights",
)

OTSU = "otsu"
"""The ``threshold`` of an index model that is chosen per scene by Otsu's method."""

INDEX_ARCHITECTURES = ("ndwi", "mndwi")
"""Architectures whose ``threshold`` may be :data:`OTSU`."""

UNET_DEFAULTS = {"base_channels": 32, "depth": 4, "context_slices": 0}

UNET_CARD = ModelCard(
    name="unet",
    architecture="unet",
    classes=("background", "foreground"),
    bands=("red", "green", "blue"),
    params=dict(UNET_DEFAULTS),
    description=(
        "U-Net (Ronneberger et al. 2015) with BatchNorm; weights come from a checkpoint, whose card "
        "sets bands, classes and params. This built-in card is a template for random-init builds."
    ),
)

TORCHVISION_ARCHITECTURES: tuple[str, ...] = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)
"""Names of the ``torchvision.models.segmentation`` builders geoseg wraps."""


def torchvision_card(architecture: str) -> ModelCard:
    """The template card of a torchvision architecture: RGB in, two classes out."""
    return ModelCard(
        name=architecture,
        architecture=architecture,
        classes=("background", "foreground"),
        bands=("red", "green", "blue"),
        description=(
            f"torchvision {architecture} (no aux head); weights come from a checkpoint, whose card "
            "sets bands and classes. This built-in card is a template for random-init builds."
        ),
    )


MASKRCNN_ARCHITECTURES: tuple[str, ...] = ("maskrcnn_resnet50_fpn_v2", "maskrcnn_mobilenet_v3_large_fpn")
"""torchvision Mask R-CNN instance models (``geoseg.models._maskrcnn``)."""

MASKRCNN_DEFAULTS = {"score_threshold": 0.5, "mask_threshold": 0.5, "merge_overlap": 0.5}
"""The output params of geoseg's Mask R-CNN cards (see ``geoseg.models._params.OUTPUT_PARAMS``)."""


def maskrcnn_card(architecture: str) -> ModelCard:
    """The template card of a Mask R-CNN architecture: RGB in, one object class, ``task: instance``."""
    return ModelCard(
        name=architecture,
        architecture=architecture,
        classes=("background", "object"),
        bands=("red", "green", "blue"),
        task="instance",
        params=dict(MASKRCNN_DEFAULTS),
        description=(
            f"torchvision Mask R-CNN ({architecture}), random init; weights come from a checkpoint, whose "
            "card sets bands, classes and normalisation. This built-in card is a template."
        ),
    )


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


ROADS_WEIGHTS = Path(__file__).resolve().parent / "weights" / "roads.pt"

ROADS_CARD = ModelCard(
    name="roads",
    architecture="roads",
    classes=("background", "road"),
    bands=("1",),
    normalisation=Normalisation("affine", (199.0,), (924.0,)),
    patch_px=256,
    overlap_px=32,
    params={"base_channels": 16, "depth": 4},
    description=(
        "2-D U-Net (base_channels 16, depth 4) marking road pixels on panchromatic 0.3 m WorldView-3 "
        "imagery. Trained on the CPU on the top 70 % of rows of the SpaceNet 3 Las Vegas sample chip "
        "(jobs/train_roads.yaml: 30 epochs of 30 steps of 8 crops, 14 min on 2 cores; epoch 26, the "
        "best validation IoU); road where p >= 0.4 (chosen on the training part, folded into the head's "
        "bias). On the bottom 30 % of rows: IoU 0.591, relaxed precision 0.741 and recall 0.987 (3 px); "
        "it predicts 1.6 % road against 1.3 % labelled. Meets the issue's IoU goal (0.5) and recall goal "
        "(0.75), misses the precision goal (0.75) by 0.009. One chip of one city. See roads.card.md."
    ),
    licence="Apache-2.0 data (SpaceNet 3 sample via solaris); weights under geoseg's licence",
)


BUILDINGS_WEIGHTS = Path(__file__).resolve().parent / "weights" / "buildings.pt"

BUILDINGS_CARD = ModelCard(
    name="buildings",
    architecture="buildings",
    classes=("background", "building"),
    bands=("1",),
    normalisation=Normalisation("affine", (114.0,), (1188.0,)),
    patch_px=256,
    overlap_px=64,
    task="instance",
    params={**MASKRCNN_DEFAULTS, "score_threshold": 0.55},
    description=(
        "Light Mask R-CNN (MobileNetV3-Large FPN, 6 M parameters) outlining buildings on panchromatic "
        "0.5 m WorldView imagery. Trained from random weights on the CPU on the top 70 % of rows of the "
        "SpaceNet 4 Atlanta sample chip, 34 buildings (jobs/train_buildings.yaml: a 600-step dense "
        "warm-up of the backbone, then 60 epochs of 24 steps of 2 crops, 24 min on 2 cores; the last "
        "epoch, picked by nothing); score threshold 0.55, chosen on the training part. Object F1 at "
        "IoU 0.5: 0.76 on the training part, 0.13 on the bottom 30 % of rows (1 of 10 buildings found, "
        "4 false detections). It overfits its 34 buildings: it shows the path a user repeats on their "
        "own labels, it is not a building mapper. See buildings.card.md."
    ),
    licence="Apache-2.0 data (SpaceNet 4 sample via solaris); weights under geoseg's licence",
)
