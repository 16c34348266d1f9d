"""Match a card's bands to the bands of an input file."""

from __future__ import annotations

from collections.abc import Sequence

from geoseg.errors import InputError

from ._card import BAND_ALIASES

__all__ = ["resolve_bands"]


def _describe(descriptions: Sequence[str | None], count: int) -> str:
    if not any(descriptions):
        return f"{count} bands with no descriptions"
    return ", ".join(f"{i}={d!r}" for i, d in enumerate(descriptions, start=1))


def resolve_bands(
    card_bands: Sequence[str], descriptions: Sequence[str | None], count: int, path: str
) -> tuple[int, ...]:
    """0-based indices of the file's bands that feed the model, in card order.

    Each card band is, tried in this order: a 1-based band index (``"3"``), a band
    description compared case-insensitively (``"B03"``), or a role of
    :data:`BAND_ALIASES` (``"green"``) whose aliases are tried one by one against the
    descriptions. ``descriptions`` holds one entry per band (``None`` where a band has none)
    or is empty when the file has no descriptions at all.

    >>> resolve_bands(("green", "nir"), ("B02", "B03", "B04", "B08"), 4, "s2.tif")
    (1, 3)
    >>> resolve_bands(("green", "nir"), ("B1", "B2", "B3", "B4", "B5", "B6", "B7"), 7, "l8.tif")
    (2, 4)
    >>> resolve_bands(("3", "b04"), ("B02", "B03", "B04", "B08"), 4, "x.tif")
    (2, 2)

    Raises:
        InputError: a band is not in the file; the message names the file, the band, the
            bands the file has and how to name bands explicitly.
    """
    if count < 1:
        raise InputError(f"{path}: the file has {count} bands; give an image with at least one band")
    if descriptions and len(descriptions) != count:
        raise InputError(f"{path}: {len(descriptions)} band descriptions for {count} bands; fix the file's metadata")
    lowered = [d.strip().lower() if d else None for d in descriptions] or [None] * count
    return tuple(_resolve_one(str(band), lowered, descriptions, count, path, card_bands) for band in card_bands)


def _resolve_one(
    band: str,
    lowered: list[str | None],
    descriptions: Sequence[str | None],
    count: int,
    path: str,
    card_bands: Sequence[str],
) -> int:
    wanted = band.strip()
    if wanted.isdigit():
        index = int(wanted)
        if 1 <= index <= count:
            return index - 1
        raise InputError(
            f"{path}: band index {index} is out of range, the file has bands 1..{count}; "
            "fix model.params.bands (1-based indices)"
        )
    candidates = tuple(dict.fromkeys((wanted, *BAND_ALIASES.get(wanted.lower(), ()))))
    for name in candidates:
        hits = [i for i, d in enumerate(lowered) if d == name.lower()]
        if len(hits) > 1:
            raise InputError(
                f"{path}: bands {[i + 1 for i in hits]} are all described {name!r}, so band {band!r} is "
                "ambiguous; give it by 1-based index in model.params.bands"
            )
        if hits:
            return hits[0]
    example = ", ".join(f"{b}: {i}" for i, b in enumerate(card_bands, start=1))
    tried = f" (tried {', '.join(repr(c) for c in candidates)})" if len(candidates) > 1 else ""
    raise InputError(
        f"{path}: band {band!r}{tried} is not in the file, which has {_describe(descriptions, count)}; "
        f"give the bands explicitly in model.params.bands, e.g. {{{example}}} (1-based index or description)"
    )
