"""A small classic U-Net (Ronneberger et al. 2015) with BatchNorm, fully convolutional."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import ModelError

from ._builtin import UNET_CARD, UNET_DEFAULTS
from ._card import ModelCard
from ._params import card_params

__all__ = ["UNet", "UNET_CARD", "build_unet"]

def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Encoder/decoder with skip connections.

    Input (N, C, H, W) float32 with H and W divisible by ``2**depth``; output (N, K, H, W)
    logits. Level ``i`` has ``base_channels * 2**i`` channels; ``depth`` is the number of
    2x downsamplings.

    >>> UNet(4, 3, base_channels=4, depth=2)(torch.zeros(1, 4, 8, 8)).shape
    torch.Size([1, 3, 8, 8])
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32, depth: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or base_channels < 1 or depth < 1:
            raise ModelError(
                f"unet needs in_channels, num_classes, base_channels and depth >= 1, got "
                f"{in_channels}, {num_classes}, {base_channels}, {depth}"
            )
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList(
            [_double_conv(in_channels, widths[0])] + [_double_conv(widths[i], widths[i + 1]) for i in range(depth)]
        )
        self.pool = nn.MaxPool2d(2)
        self.upsamples = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))]
        )
        self.decoders = nn.ModuleList([_double_conv(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = 2**self.depth
        if not torch.jit.is_tracing() and (x.shape[-2] % step or x.shape[-1] % step):
            raise ModelError(
                f"unet of depth {self.depth} needs height and width divisible by {step}, got "
                f"{tuple(x.shape[-2:])}; use a patch size that is a multiple of {step}"
            )
        skips = []
        for i, encode in enumerate(self.encoders):
            x = encode(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for upsample, decode in zip(self.upsamples, self.decoders):
            x = decode(torch.cat([skips.pop(), upsample(x)], dim=1))
        return self.head(x)


def build_unet(card: ModelCard) -> UNet:
    """A randomly initialised U-Net: ``len(card.bands) * (2 * context_slices + 1)`` channels in
    (volume models may take neighbouring slices as extra channels), ``len(card.classes)`` out."""
    params = card_params(card, UNET_DEFAULTS)
    context = params["context_slices"]
    if context < 0:
        raise ModelError(f"unet card {card.name!r}: context_slices {context} is negative; use 0 or more")
    return UNet(len(card.bands) * (2 * context + 1), len(card.classes), params["base_channels"], params["depth"])
