"""Training geoseg's segmentation models: U-Nets on MRI volumes (BraTS-style cases), and U-Nets
or Mask R-CNNs on a georeferenced raster with raster or vector labels (``data.kind: raster``,
see docs/training.md).

The model input is defined once, here, and shared with inference: a case is z-scored over its
foreground (:func:`normalise_case`), reoriented to RAS, and each axial slice ``k`` becomes the
stack :func:`slice_stack` ``(C * (2c + 1), X, Y)``, cut into ``patch_px`` patches.

Run a spec::

    from geoseg.train import load_train_spec, train
    result = train(load_train_spec("jobs/train_mri_tumour.yaml"))
"""

from ._data import LabelledCase, load_labelled_case, map_labels, normalise_case, slice_stack
from ._infer import predict_case, predict_volume
from ._loop import TrainResult, model_card_for, soft_dice_loss, train, validate
from ._spec import (
    BRATS_LABEL_MAP,
    TUMOUR_CLASSES,
    AugmentSection,
    DataSection,
    ModelSection,
    OptimSection,
    RasterDataSection,
    SplitSection,
    TrainSpec,
    load_train_spec,
    parse_train_spec,
)

__all__ = [
    "BRATS_LABEL_MAP",
    "TUMOUR_CLASSES",
    "AugmentSection",
    "DataSection",
    "LabelledCase",
    "ModelSection",
    "OptimSection",
    "RasterDataSection",
    "SplitSection",
    "TrainResult",
    "TrainSpec",
    "load_labelled_case",
    "load_train_spec",
    "map_labels",
    "model_card_for",
    "normalise_case",
    "parse_train_spec",
    "predict_case",
    "predict_volume",
    "slice_stack",
    "soft_dice_loss",
    "train",
    "validate",
]
