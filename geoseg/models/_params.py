"""Read a card's ``params`` against the defaults a builder accepts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geoseg.errors import ModelError

from ._card import ModelCard

__all__ = ["INSTANCE_PARAMS", "OUTPUT_PARAMS", "card_params", "instance_thresholds"]

INSTANCE_PARAMS = frozenset({"score_threshold", "mask_threshold", "merge_overlap"})
"""The output params of instance models only (see :data:`OUTPUT_PARAMS`)."""

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


def instance_thresholds(card: ModelCard) -> tuple[float, float, float]:
    """An instance card's ``(score_threshold, mask_threshold, merge_overlap)``, each in [0, 1]
    (defaults 0.5, 0.5, 0.5; see :data:`OUTPUT_PARAMS`).

    Raises:
        ModelError: a value that is not a number in [0, 1] (``merge_overlap`` in (0, 1]).
    """
    out = []
    for key in ("score_threshold", "mask_threshold", "merge_overlap"):
        value = card.params.get(key, 0.5)
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        lowest_ok = v > 0 if key == "merge_overlap" else v >= 0
        if not (lowest_ok and v <= 1):
            raise ModelError(
                f"model {card.name!r}: param {key}={value!r} must be a number in "
                f"{'(0, 1]' if key == 'merge_overlap' else '[0, 1]'}; fix it (e.g. --param {key}=0.5)"
            )
        out.append(v)
    return out[0], out[1], out[2]
