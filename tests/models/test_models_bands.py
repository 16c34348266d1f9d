"""Matching card bands to file bands by index, description and role alias."""

from __future__ import annotations

import pytest

from geoseg.errors import InputError
from geoseg.models import resolve_bands

S2 = ("B02", "B03", "B04", "B08")
L8 = ("B2", "B3", "B4", "B5", "B6", "B7")


@pytest.mark.parametrize(
    ("bands", "expected"),
    [
        (("green", "nir"), (1, 3)),
        (("blue", "green", "red", "nir"), (0, 1, 2, 3)),
        (("B04", "b08"), (2, 3)),  # descriptions, case-insensitive
        (("4", "1"), (3, 0)),  # 1-based indices
        (("GREEN", "3"), (1, 2)),
    ],
)
def test_sentinel2_descriptions(bands: tuple[str, ...], expected: tuple[int, ...]) -> None:
    assert resolve_bands(bands, S2, 4, "s2.tif") == expected


@pytest.mark.parametrize(
    ("bands", "expected"),
    [
        (("green", "nir"), (1, 3)),  # Landsat-8 NIR is B5
        (("red", "swir1", "swir2"), (2, 4, 5)),
        (("blue",), (0,)),
    ],
)
def test_landsat8_descriptions(bands: tuple[str, ...], expected: tuple[int, ...]) -> None:
    assert resolve_bands(bands, L8, 6, "l8.tif") == expected


def test_sentinel2_narrow_nir_and_exact_description_first() -> None:
    assert resolve_bands(("nir",), ("B03", "B8A"), 2, "s2.tif") == (1,)
    # an exact description wins over the role's aliases
    assert resolve_bands(("nir",), ("B08", "NIR"), 2, "x.tif") == (1,)


def test_missing_band_error_names_file_band_bands_and_fix() -> None:
    with pytest.raises(InputError) as info:
        resolve_bands(("green", "nir"), ("B2", "B3", "B4"), 3, "/data/l8_rgb.tif")
    message = str(info.value)
    assert "\n" not in message
    assert "/data/l8_rgb.tif" in message and "'nir'" in message
    assert "1='B2', 2='B3', 3='B4'" in message
    assert "model.params.bands" in message
    assert isinstance(info.value, ValueError)


def test_no_descriptions_needs_explicit_bands() -> None:
    with pytest.raises(InputError, match=r"4 bands with no descriptions"):
        resolve_bands(("green",), (None, None, None, None), 4, "plain.tif")
    assert resolve_bands(("2",), (None, None, None, None), 4, "plain.tif") == (1,)


@pytest.mark.parametrize(
    ("bands", "descriptions", "count", "match"),
    [
        (("5",), S2, 4, r"band index 5 is out of range, the file has bands 1\.\.4"),
        (("0",), S2, 4, r"band index 0 is out of range"),
        (("green",), ("B03", "B03"), 2, r"bands \[1, 2\] are all described 'B03'"),
        (("green",), ("B03",), 2, r"1 band descriptions for 2 bands"),
    ],
)
def test_band_errors(bands: tuple[str, ...], descriptions: tuple[str, ...], count: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        resolve_bands(bands, descriptions, count, "x.tif")


def test_a_role_and_its_aliases_are_listed_once() -> None:
    with pytest.raises(InputError) as info:
        resolve_bands(("green", "nir"), ("red", "blue", "swir"), 3, "x.tif")
    message = str(info.value)
    assert "(tried 'green', 'B03', 'B3')" in message, message  # 'green' was listed twice before
