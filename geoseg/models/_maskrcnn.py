"""torchvision Mask R-CNN for instance cards, random init, nothing downloaded.

Built for geoseg's patches: :class:`~torchvision.models.detection.transform.GeneralizedRCNNTransform`
keeps a ``patch_px`` patch at ``patch_px`` (``min_size = max_size = patch_px``), or resizes it
to the card's ``resize_px`` (e.g. 512 for objects of 20-60 px, as torchvision's own detectors
upsample to 800), and does not normalise (mean 0, std 1: geoseg normalises as the card says);
boxes and ``masks`` come back at patch size either way.
In eval mode the module takes a (N, C, P, P) float32 batch and returns, per patch,
a dict of ``boxes`` (K, 4), ``labels`` (K,), ``scores`` (K,) and ``masks`` (K, 1, P, P)
probabilities; in train mode ``module(images, targets)`` returns torchvision's loss dict.
"""

from __future__ import annotations

from torch import nn

from geoseg.errors import ModelError

from ._builtin import MASKRCNN_ARCHITECTURES
from ._card import ModelCard
from ._params import card_params
from ._torchvision import _replace_first_conv

__all__ = ["MASKRCNN_ARCHITECTURES", "build_maskrcnn"]


def build_maskrcnn(card: ModelCard) -> nn.Module:
    """Random-init Mask R-CNN for ``card``: ``len(card.bands)`` inputs, ``len(card.classes)``
    classes (background first).

    - ``maskrcnn_resnet50_fpn_v2``: torchvision's builder (trainable BatchNorm, all layers).
    - ``maskrcnn_mobilenet_v3_large_fpn``: a MobileNetV3-Large FPN backbone (BatchNorm, all
      layers trainable) with the anchors of torchvision's ``fasterrcnn_mobilenet_v3_large_fpn``
      (sizes 32-512 on each of its 3 feature maps, ratios 0.5, 1, 2), and sampling sized for
      CPU training on patches that hold tens of objects, not hundreds: 500 region proposals
      kept in training (torchvision: 2000), 300 at inference (1000), 128 sampled RoIs per
      patch for the heads (512), at most 50 detections per patch (100). The weights are the
      same as torchvision's layout; only the work per patch is smaller.

    Card param ``resize_px`` (default 0: the patch size) resizes each patch inside the model,
    e.g. 512 for 256 px patches with objects of 20-60 px; the outputs stay on patch pixels.

    Raises:
        ModelError: another architecture, or a card that is not ``task: instance``.
    """
    if card.architecture not in MASKRCNN_ARCHITECTURES:
        raise ModelError(
            f"architecture {card.architecture!r} is not a Mask R-CNN: use one of {', '.join(MASKRCNN_ARCHITECTURES)}"
        )
    if card.task != "instance":
        raise ModelError(
            f"model {card.name!r}: {card.architecture} returns instances, but its card says task {card.task!r}; "
            "set task: instance"
        )
    resize = card_params(card, {"resize_px": 0})["resize_px"]
    if resize and resize < 32:
        raise ModelError(f"model {card.name!r}: param resize_px={resize} must be 0 (the patch size) or at least 32")
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2  # noqa: PLC0415 (slow)
    from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: PLC0415
    from torchvision.models.detection.backbone_utils import mobilenet_backbone  # noqa: PLC0415

    n_bands = len(card.bands)
    size = {
        "min_size": resize or card.patch_px,
        "max_size": resize or card.patch_px,
        "image_mean": [0.0] * n_bands,
        "image_std": [1.0] * n_bands,
    }
    model: nn.Module
    if card.architecture == "maskrcnn_resnet50_fpn_v2":
        model = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=card.n_classes, **size)
    else:
        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large", fpn=True, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=6
        )
        sizes = ((32, 64, 128, 256, 512),) * 3
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        model = MaskRCNN(
            backbone,
            num_classes=card.n_classes,
            rpn_anchor_generator=anchors,
            rpn_score_thresh=0.05,
            rpn_pre_nms_top_n_train=500,
            rpn_post_nms_top_n_train=500,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=300,
            box_batch_size_per_image=128,
            box_detections_per_img=50,
            **size,
        )
    if n_bands != 3:
        _replace_first_conv(model.backbone, n_bands)  # type: ignore[arg-type]
    return model
