"""McFeeters NDWI as a parameter-free segmentation model: water where NDWI > threshold."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.errors import ModelError

from ._builtin import NDWI_CARD, NDWI_DEFAULTS
from ._card import ModelCard
from ._params import card_params

__all__ = ["NDWI", "NDWI_CARD", "build_ndwi"]


class NDWI(nn.Module):
    """NDWI as two-class logits.

    Input (N, 2, P, P) raw band values in the order (green, nir), any float dtype; computed in
    float32. Output (N, 2, P, P) float32 logits: channel 0 is zero, channel 1 is
    ``gain * (ndwi - threshold)``, so ``argmax`` is 1 ("water") exactly where
    ``ndwi > threshold`` and 0 on ties. Where ``green + nir == 0``, ``ndwi`` is 0.

    >>> x = torch.tensor([[[[3.0, 1.0, 0.0]], [[1.0, 3.0, 0.0]]]])  # (1, 2, 1, 3)
    >>> NDWI()(x).argmax(dim=1).tolist()
    [[[1, 0, 0]]]
    """

    def __init__(self, threshold: float = 0.0, gain: float = 10.0) -> None:
        super().__init__()
        if not gain > 0:
            raise ModelError(f"ndwi gain {gain!r} must be > 0 so that argmax follows the threshold; use e.g. 10")
        self.threshold = float(threshold)
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 2:
            raise ModelError(f"ndwi takes (N, 2, P, P) input (green, nir), got {tuple(x.shape)}")
        x = x.to(torch.float32)
        green, nir = x[:, 0:1], x[:, 1:2]
        total = green + nir
        nonzero = total != 0
        ndwi = torch.where(nonzero, (green - nir) / torch.where(nonzero, total, 1.0), 0.0)
        water = self.gain * (ndwi - self.threshold)
        return torch.cat([torch.zeros_like(water), water], dim=1)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, gain={self.gain}"


def build_ndwi(card: ModelCard) -> NDWI:
    """The NDWI model for ``card`` (params ``threshold``, ``gain``); it takes exactly 2 bands."""
    if len(card.bands) != 2 or len(card.classes) != 2:
        raise ModelError(
            f"model {card.name!r}: ndwi takes 2 bands (green, nir) and gives 2 classes, the card lists "
            f"bands {list(card.bands)} and classes {list(card.classes)}; fix the card"
        )
    params = card_params(card, NDWI_DEFAULTS)
    return NDWI(threshold=params["threshold"], gain=params["gain"])
