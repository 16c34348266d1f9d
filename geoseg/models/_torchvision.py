"""torchvision segmentation architectures, random init, returning the logits tensor.

torchvision is imported when one of these models is built, not with geoseg.models: the import
takes about 2 s, which every CLI start and every model actor paid before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from geoseg.errors import ModelError

from ._builtin import TORCHVISION_ARCHITECTURES, torchvision_card
from ._card import ModelCard
from ._params import card_params

__all__ = ["TORCHVISION_ARCHITECTURES", "TorchvisionSegmentation", "build_torchvision", "torchvision_card"]

def _builder(architecture: str) -> Callable[..., nn.Module]:
    from torchvision.models import segmentation  # noqa: PLC0415  (slow import, done on first build)

    return getattr(segmentation, architecture)


class TorchvisionSegmentation(nn.Module):
    """A torchvision segmentation model whose ``forward`` returns logits, not a dict.

    Holds the model's ``backbone`` and ``classifier`` under the same names, so its state dict
    keys are torchvision's own (a ``model.state_dict()`` saved from torchvision loads as is).
    Input (N, C, H, W) float32; output (N, K, H, W) logits, upsampled bilinearly as torchvision
    does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "aux_classifier", None) is not None:
            raise ModelError("geoseg runs torchvision models without aux_loss: build them with aux_loss=False")
        self.backbone: nn.Module = model.backbone  # type: ignore[assignment]
        self.classifier: nn.Module = model.classifier  # type: ignore[assignment]
        # LR-ASPP's head reads every backbone feature; FCN and DeepLabV3 read only "out".
        from torchvision.models.segmentation import LRASPP  # noqa: PLC0415

        self.head_takes_all_features = isinstance(model, LRASPP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        logits = self.classifier(features if self.head_takes_all_features else features["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _replace_first_conv(module: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d of ``module`` for one taking ``in_channels`` (random init)."""
    for name, conv in module.named_modules():
        if isinstance(conv, nn.Conv2d):
            break
    else:  # pragma: no cover - every torchvision backbone starts with a conv
        raise ModelError("backbone has no Conv2d to adapt to the band count")
    parent_name, _, child_name = name.rpartition(".")
    parent = module.get_submodule(parent_name)
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    setattr(parent, child_name, new)


def build_torchvision(card: ModelCard) -> TorchvisionSegmentation:
    """Random-init torchvision model for ``card.architecture``; nothing is downloaded.

    ``len(card.bands)`` input channels (the first conv is replaced when it is not 3) and
    ``len(card.classes)`` output channels. Cards take no params for these architectures.
    """
    if card.architecture not in TORCHVISION_ARCHITECTURES:
        raise ModelError(
            f"architecture {card.architecture!r} is not a torchvision one: use one of "
            f"{', '.join(TORCHVISION_ARCHITECTURES)}"
        )
    builder = _builder(card.architecture)
    card_params(card, {})
    model = builder(weights=None, weights_backbone=None, num_classes=len(card.classes), aux_loss=False)
    if len(card.bands) != 3:
        _replace_first_conv(model.backbone, len(card.bands))  # type: ignore[arg-type]
    return TorchvisionSegmentation(model)
