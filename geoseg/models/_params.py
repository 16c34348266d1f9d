"""Read a card's ``params`` against the defaults a builder accepts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geoseg.errors import ModelError

from ._card import ModelCard

__all__ = ["OUTPUT_PARAMS", "card_params"]

OUTPUT_PARAMS = frozenset({"min_lesion_ml", "score_threshold", "mask_threshold", "merge_overlap"})
"""Params any card may carry (and a job may override) that act on the output, not the network:
``min_lesion_ml``, volume jobs drop mask components smaller than this many millilitres;
instance models (``task: instance``): ``score_threshold`` drops instances scoring less,
``mask_threshold`` cuts mask probabilities into pixels, ``merge_overlap`` is the overlap (on
the pixels two patches share) above which instances of neighbouring patches are one object."""


def card_params(card: ModelCard, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The card's params merged over ``defaults``, each cast to its default's type.

    A key the builder does not know, or a value that does not cast, raises
    :class:`ModelError`, so a typo in a card never silently falls back to a default.

    >>> card = ModelCard("m", "unet", ("a", "b"), ("red",), params={"depth": "3"})
    >>> card_params(card, {"base_channels": 32, "depth": 4})
    {'base_channels': 32, 'depth': 3}
    """
    unknown = sorted(set(card.params) - set(defaults) - OUTPUT_PARAMS)
    if unknown:
        known = ", ".join(defaults) or "none"
        raise ModelError(
            f"model {card.name!r} (architecture {card.architecture!r}) has unknown params {unknown}: "
            f"it takes {known}; fix the card's params"
        )
    out: dict[str, Any] = {}
    for key, default in defaults.items():
        value = card.params.get(key, default)
        kind = type(default)
        try:
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise ModelError(
                f"model {card.name!r}: param {key}={value!r} is not a {kind.__name__}; fix the card's params"
            ) from None
        if kind is int and isinstance(value, float) and value != out[key]:
            raise ModelError(f"model {card.name!r}: param {key}={value!r} is not a whole number; fix it")
    return out
