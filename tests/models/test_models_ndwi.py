"""NDWI against the McFeeters formula computed in numpy float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.errors import ModelError
from geoseg.models import NDWI, ModelSpec, load_model, model_card


def _bands(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(2, 16, 16) green and nir with zero-sum pixels and exact threshold ties planted."""
    green = rng.integers(0, 3000, (2, 16, 16)).astype(np.float32)
    nir = rng.integers(0, 3000, (2, 16, 16)).astype(np.float32)
    green[0, 0, :4] = nir[0, 0, :4] = 0  # green + nir == 0
    green[0, 1, :4], nir[0, 1, :4] = 7, 7  # ndwi == 0 exactly
    green[1, 2, :4], nir[1, 2, :4] = 6, 4  # ndwi == 0.2 exactly in float32
    green[1, 3, :4], nir[1, 3, :4] = 30, 20  # ndwi == 0.2 again
    return green, nir


def _numpy_ndwi(green: np.ndarray, nir: np.ndarray) -> np.ndarray:
    total = green + nir
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, (green - nir) / total, np.float32(0)).astype(np.float32)


@pytest.mark.parametrize("threshold", [0.0, 0.2, -0.35])
def test_ndwi_logits_match_numpy_formula(threshold: float) -> None:
    green, nir = _bands(np.random.default_rng(7))
    x = torch.from_numpy(np.stack([green, nir], axis=1))  # (N=2, 2, 16, 16)
    model = NDWI(threshold=threshold, gain=10.0)
    out = model(x)
    ndwi = _numpy_ndwi(green, nir)
    assert out.shape == (2, 2, 16, 16) and out.dtype == torch.float32
    assert not torch.isnan(out).any()
    np.testing.assert_array_equal(out[:, 0].numpy(), np.zeros_like(ndwi))
    expected = np.float32(10.0) * (ndwi - np.float32(threshold))
    np.testing.assert_array_equal(out[:, 1].numpy(), expected)
    water = out.argmax(dim=1).numpy()
    np.testing.assert_array_equal(water, (ndwi > np.float32(threshold)).astype(np.int64))


def test_ndwi_ties_and_zero_sum_are_not_water() -> None:
    green, nir = _bands(np.random.default_rng(1))
    x = torch.from_numpy(np.stack([green, nir], axis=1))
    water0 = NDWI(threshold=0.0)(x).argmax(dim=1)
    assert water0[0, 0, :4].tolist() == [0, 0, 0, 0]  # 0/0 -> ndwi 0, a tie at threshold 0
    assert water0[0, 1, :4].tolist() == [0, 0, 0, 0]  # ndwi exactly 0
    logits = NDWI(threshold=0.2)(x)
    assert logits[1, 1, 2:4, :4].eq(0).all()  # exact ties give equal logits
    assert logits.argmax(dim=1)[1, 2:4, :4].eq(0).all()
    # with the threshold one float32 step lower, the same pixels are water
    just_below = float(np.nextafter(np.float32(0.2), np.float32(0)))
    assert NDWI(threshold=just_below)(x).argmax(dim=1)[1, 2:4, :4].eq(1).all()


def test_ndwi_computes_in_float32_whatever_the_input_dtype() -> None:
    green, nir = _bands(np.random.default_rng(3))
    x = torch.from_numpy(np.stack([green, nir], axis=1))
    out = NDWI()(x.to(torch.float64))
    assert out.dtype == torch.float32
    assert torch.equal(out, NDWI()(x))


def test_ndwi_rejects_wrong_band_count() -> None:
    with pytest.raises(ModelError, match=r"\(N, 2, P, P\)"):
        NDWI()(torch.zeros(1, 3, 8, 8))


def test_ndwi_card() -> None:
    card = model_card("ndwi")
    assert (card.name, card.architecture) == ("ndwi", "ndwi")
    assert card.classes == ("other", "water") and card.bands == ("green", "nir")
    assert card.normalisation.kind == "none" and card.patch_px == 256
    assert card.params == {"threshold": 0.0, "gain": 10.0}
    assert "McFeeters" in card.description and "1996" in card.description


def test_ndwi_params_override_threshold_and_bands() -> None:
    model, card = load_model(ModelSpec(name="ndwi", params={"threshold": 0.3, "bands": ["3", "4"]}))
    assert isinstance(model, NDWI) and model.threshold == 0.3
    assert card.params["threshold"] == 0.3 and card.bands == ("3", "4")
    _, card = load_model(ModelSpec(name="ndwi", params={"bands": {"nir": "B8A"}}))
    assert card.bands == ("green", "B8A")
    assert model_card("ndwi").params["threshold"] == 0.0  # the built-in card is untouched


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"treshold": 0.1}, r"no params \['treshold'\].*threshold"),
        ({"threshold": "high"}, r"model.params.threshold \(--param threshold=...\): 'high' is not a number"),
        ({"bands": ["3"]}, r"give 2 bands"),
        ({"bands": {"swir": "5"}}, r"names \['swir'\]"),
        ({"gain": 0}, r"gain 0.0 must be > 0"),
    ],
)
def test_ndwi_bad_params(params: dict[str, object], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_model(ModelSpec(name="ndwi", params=params))
