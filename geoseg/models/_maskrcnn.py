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
    - ``maskrcnn_mobilenet_v3_large_fpn``: a MobileNetV3-Large backbone (Howard et al. 2019;
      BatchNorm, all layers trainable) under an FPN (Lin et al. 2017) on the ends of its
      stride-8, 16 and 32 stages (blocks 6, 12 and 16 of ``mobilenet_v3_large().features``)
      plus a max-pooled stride-64 level, with one anchor size per level (32, 64, 128, 256 px;
      ratios 0.5, 1, 2). torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` takes both of its
      maps at stride 32, where a 30 px object is one cell: too coarse for the masks of
      buildings or lesions on 256 px patches. The FPN, the mask head's 4 convs and the mask
      predictor are 128 channels wide (torchvision: 256) and the box head's two layers 256
      (1024): 6.0 M parameters for RGB instead of 22 M, 12 MB as float16. Sampling is sized for
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
    from torchvision.models import mobilenet_v3_large  # noqa: PLC0415
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2  # noqa: PLC0415 (slow)
    from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: PLC0415
    from torchvision.models.detection.backbone_utils import BackboneWithFPN  # noqa: PLC0415
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: PLC0415
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: PLC0415

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
        body = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d).features
        ends = (6, 12, 16)  # the last block at stride 8, 16 and 32
        width = 128
        backbone = BackboneWithFPN(
            body, {str(i): str(k) for k, i in enumerate(ends)}, [body[i].out_channels for i in ends], width
        )
        sizes = ((32,), (64,), (128,), (256,))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        model = MaskRCNN(
            backbone,
            rpn_anchor_generator=anchors,
            box_head=TwoMLPHead(width * 7 * 7, 256),
            box_predictor=FastRCNNPredictor(256, card.n_classes),
            mask_head=MaskRCNNHeads(width, (width,) * 4, 1),
            mask_predictor=MaskRCNNPredictor(width, width, card.n_classes),
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
