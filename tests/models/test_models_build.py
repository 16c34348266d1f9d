"""The registry and the random-init builders: torchvision architectures and the U-Net."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import segmentation as tvseg

from geoseg.errors import ModelError
from geoseg.models import (
    NDWI,
    ModelCard,
    ModelSpec,
    UNet,
    build_model,
    list_architectures,
    list_models,
    load_model,
    model_card,
    register_model,
)
from geoseg.models._torchvision import TORCHVISION_ARCHITECTURES, TorchvisionSegmentation

TORCHVISION = sorted(TORCHVISION_ARCHITECTURES)
BUILTINS = ["ndwi", "mndwi", "unet", *TORCHVISION]


def _card(architecture: str, n_bands: int = 4, n_classes: int = 3, **params: object) -> ModelCard:
    return ModelCard(
        name=f"test-{architecture}",
        architecture=architecture,
        classes=tuple(f"c{i}" for i in range(n_classes)),
        bands=("blue", "green", "red", "nir")[:n_bands] if n_bands <= 4 else tuple(map(str, range(1, n_bands + 1))),
        params=params,
    )


def test_builtin_names_and_cards() -> None:
    assert set(BUILTINS) <= set(list_models())
    assert list_models() == sorted(list_models())
    assert set(BUILTINS) <= set(list_architectures())
    for name in BUILTINS:
        assert model_card(name).architecture == name


@pytest.mark.parametrize("architecture", TORCHVISION)
def test_torchvision_builds_with_4_bands_3_classes(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_model(_card(architecture))
    assert isinstance(model, TorchvisionSegmentation) and not model.training
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 64, 64)
    assert torch.isfinite(out).all()
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 4


@pytest.mark.parametrize("architecture", ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"])
def test_wrapper_equals_torchvision_forward_and_keeps_its_keys(architecture: str) -> None:
    torch.manual_seed(0)
    tv = getattr(tvseg, architecture)(weights=None, weights_backbone=None, num_classes=2, aux_loss=False)
    tv.eval()
    wrapped = TorchvisionSegmentation(tv)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(wrapped(x), tv(x)["out"])
    assert list(wrapped.state_dict()) == list(tv.state_dict())


def test_torchvision_refuses_aux_head() -> None:
    tv = tvseg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=2, aux_loss=True)
    with pytest.raises(ModelError, match="aux_loss=False"):
        TorchvisionSegmentation(tv)


def test_torchvision_rgb_keeps_first_conv_and_refuses_params() -> None:
    model = build_model(_card("lraspp_mobilenet_v3_large", n_bands=3, n_classes=2))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(ModelError, match=r"unknown params \['depth'\]: it takes none"):
        build_model(_card("lraspp_mobilenet_v3_large", depth=3))


@pytest.mark.parametrize(("depth", "size"), [(2, 20), (4, 64)])
def test_unet_shapes(depth: int, size: int) -> None:
    model = build_model(_card("unet", n_bands=5, n_classes=3, base_channels=4, depth=depth))
    assert isinstance(model, UNet) and model.depth == depth
    with torch.no_grad():
        out = model(torch.randn(2, 5, size, size + 2**depth))
    assert out.shape == (2, 3, size, size + 2**depth)


def test_unet_default_params_take_a_256_patch() -> None:
    model = build_model(_card("unet", n_bands=2, n_classes=2))
    assert len(model.encoders) == 5 and model.encoders[0][0].out_channels == 32
    with torch.no_grad():
        assert model(torch.zeros(1, 2, 256, 256)).shape == (1, 2, 256, 256)


def test_unet_is_fully_convolutional() -> None:
    """A pixel's logits depend on nearby input only."""
    torch.manual_seed(0)
    model = build_model(_card("unet", n_bands=1, n_classes=2, base_channels=4, depth=2))
    x = torch.randn(1, 1, 64, 64)
    y = x.clone()
    y[..., 60:, 60:] += 1.0
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[..., :32, :32], b[..., :32, :32])
    assert not torch.equal(a[..., 60:, 60:], b[..., 60:, 60:])


def test_unet_refuses_indivisible_size_and_bad_params() -> None:
    model = build_model(_card("unet", base_channels=4, depth=3))
    with pytest.raises(ModelError, match=r"divisible by 8, got \(20, 24\)"):
        model(torch.zeros(1, 4, 20, 24))
    with pytest.raises(ModelError, match=r"unknown params \['base_channel'\]: it takes base_channels, depth"):
        build_model(_card("unet", base_channel=8))
    with pytest.raises(ModelError, match=r"depth=2.5 is not a whole number"):
        build_model(_card("unet", depth=2.5))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError) as info:
        load_model(ModelSpec(name="segformer"))
    message = str(info.value)
    assert "'segformer'" in message and "\n" not in message
    for name in BUILTINS:
        assert name in message
    with pytest.raises(ModelError, match="'segformer'"):
        model_card("segformer")


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match=r"architecture 'segformer', which is unknown: use one of .*deeplabv3_resnet50"):
        build_model(_card("segformer"))


def test_checkpoint_models_need_a_checkpoint() -> None:
    with pytest.raises(ModelError, match=r"model 'unet' needs trained weights: give model.checkpoint"):
        load_model(ModelSpec(name="unet"))


def test_register_model_makes_name_and_architecture_loadable() -> None:
    card = ModelCard("always-water", "test-constant", ("other", "water"), ("green",), params={"value": 1.0})

    class Constant(torch.nn.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, _, h, w = x.shape
            return torch.stack([torch.zeros(n, h, w), torch.full((n, h, w), self.value)], dim=1)

    def factory(c: ModelCard) -> torch.nn.Module:
        return Constant(float(c.params["value"]))

    register_model("always-water", card, factory)
    assert "always-water" in list_models() and "test-constant" in list_architectures()
    model, loaded = load_model(ModelSpec(name="always-water", params={"value": 2.0}))
    assert loaded.params["value"] == 2.0
    assert model(torch.zeros(1, 1, 4, 4))[0, 1].eq(2.0).all()
    with pytest.raises(ModelError, match="already registered"):
        register_model("always-water", card, factory)
    with pytest.raises(ModelError, match="already built by"):
        register_model("other-water", card, lambda c: NDWI())
