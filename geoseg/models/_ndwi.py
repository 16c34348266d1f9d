"""Water indices as parameter-free segmentation models: water where the index > threshold.

NDWI (McFeeters 1996): green vs NIR. MNDWI (Xu 2006): green vs SWIR1, which separates water
from built-up land that NDWI confuses with it. ``threshold: otsu`` builds the model at 0: the
scene's Otsu threshold reaches it through the bands (:func:`geoseg.core.water.scaled_for_threshold`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from geoseg.errors import ModelError

from ._builtin import MNDWI_CARD, NDWI_CARD, NDWI_DEFAULTS, OTSU
from ._card import ModelCard
from ._params import card_params

__all__ = ["NDWI", "MNDWI", "NDWI_CARD", "MNDWI_CARD", "build_ndwi", "build_mndwi"]


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

    index = "ndwi"
    inputs = "(green, nir)"

    def __init__(self, threshold: float = 0.0, gain: float = 10.0) -> None:
        super().__init__()
        if not gain > 0:
            raise ModelError(f"{self.index} gain {gain!r} must be > 0 so that argmax follows the threshold; use e.g. 10")
        self.threshold = float(threshold)
        self.gain = float(gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 2:
            raise ModelError(f"{self.index} takes (N, 2, P, P) input {self.inputs}, got {tuple(x.shape)}")
        x = x.to(torch.float32)
        green, nir = x[:, 0:1], x[:, 1:2]
        total = green + nir
        nonzero = total != 0
        ndwi = torch.where(nonzero, (green - nir) / torch.where(nonzero, total, 1.0), 0.0)
        water = self.gain * (ndwi - self.threshold)
        return torch.cat([torch.zeros_like(water), water], dim=1)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, gain={self.gain}"


class MNDWI(NDWI):
    """Xu's MNDWI as two-class logits: :class:`NDWI`'s arithmetic on (green, swir1).

    >>> x = torch.tensor([[[[3.0, 1.0]], [[1.0, 3.0]]]])  # (1, 2, 1, 2): green, swir1
    >>> MNDWI(threshold=0.4)(x).argmax(dim=1).tolist()
    [[[1, 0]]]
    """

    index = "mndwi"
    inputs = "(green, swir1)"


def _threshold(card: ModelCard, value: object) -> float:
    """The threshold the module applies: 0 for ``otsu`` (the scene's threshold is in the bands)."""
    return 0.0 if value == OTSU else float(value)  # type: ignore[arg-type]


def _build(card: ModelCard, kind: type[NDWI]) -> NDWI:
    if len(card.bands) != 2 or len(card.classes) != 2:
        raise ModelError(
            f"model {card.name!r}: {kind.index} takes 2 bands {kind.inputs} and gives 2 classes, the card lists "
            f"bands {list(card.bands)} and classes {list(card.classes)}; fix the card"
        )
    threshold = card.params.get("threshold", NDWI_DEFAULTS["threshold"])
    params = card_params(replace(card, params={**card.params, "threshold": _threshold(card, threshold)}), NDWI_DEFAULTS)
    return kind(threshold=params["threshold"], gain=params["gain"])


def build_ndwi(card: ModelCard) -> NDWI:
    """The NDWI model for ``card`` (params ``threshold``, a number or ``otsu``, and ``gain``)."""
    return _build(card, NDWI)


def build_mndwi(card: ModelCard) -> NDWI:
    """The MNDWI model for ``card`` (params ``threshold``, a number or ``otsu``, and ``gain``)."""
    return _build(card, MNDWI)
