"""load_model: checkpoints (safe loading only), cards beside files, user programs, errors."""

from __future__ import annotations

import copy
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from geoseg.errors import ModelError
from geoseg.models import ModelCard, ModelSpec, build_model, card_path_beside, load_model, save_checkpoint

UNET_CARD = ModelCard(
    name="water-unet",
    architecture="unet",
    classes=("land", "water", "cloud"),
    bands=("blue", "green", "red", "nir"),
    params={"base_channels": 4, "depth": 2},
    description="test U-Net",
)


class NotAWeight:
    """An arbitrary object: pickling it needs code, so safe loading must refuse it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def _trained(card: ModelCard, seed: int = 0) -> torch.nn.Module:
    """A model with non-default weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(card).train()
    with torch.no_grad():
        model(torch.randn(2, len(card.bands), 32, 32) * 3 + 1)  # moves BN running stats
    return model.eval()


def _write_card(path: Path, card: ModelCard) -> Path:
    path.write_text(yaml.safe_dump(card.to_dict()))
    return path


def _outputs(model: torch.nn.Module, n_bands: int, size: int = 32) -> torch.Tensor:
    torch.manual_seed(123)
    with torch.no_grad():
        return model(torch.randn(2, n_bands, size, size))


def test_save_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = _trained(UNET_CARD)
    path = save_checkpoint(tmp_path / "water.pt", model, UNET_CARD, extra={"epoch": 12, "iou": [0.5, 0.75]})
    assert path == tmp_path / "water.pt" and sorted(p.name for p in tmp_path.iterdir()) == ["water.pt"]
    loaded, card = load_model(ModelSpec(checkpoint=path))
    assert card == UNET_CARD and not loaded.training
    assert torch.equal(_outputs(loaded, 4), _outputs(model, 4))
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["extra"] == {"epoch": 12, "iou": [0.5, 0.75]}
    # naming the model as well is fine when the architectures agree
    again, _ = load_model(ModelSpec(name="unet", checkpoint=path))
    assert torch.equal(_outputs(again, 4), _outputs(model, 4))


def test_torchvision_round_trip_with_4_bands(tmp_path: Path) -> None:
    card = ModelCard("water-lraspp", "lraspp_mobilenet_v3_large", ("land", "water"), ("blue", "green", "red", "nir"))
    model = _trained(card)
    path = save_checkpoint(tmp_path / "lraspp.ckpt", model, card)
    loaded, loaded_card = load_model(ModelSpec(checkpoint=path))
    assert loaded_card == card
    assert torch.equal(_outputs(loaded, 4, 64), _outputs(model, 4, 64))


def test_save_checkpoint_refuses_unsafe_extra(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"extra holds a NotAWeight"):
        save_checkpoint(tmp_path / "x.pt", _trained(UNET_CARD), UNET_CARD, extra={"obj": NotAWeight()})
    assert list(tmp_path.iterdir()) == []


def test_bare_state_dict_with_card_beside(tmp_path: Path) -> None:
    model = _trained(UNET_CARD, seed=1)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelError, match=r"bare state_dict with no card: write .*bare\.card\.yaml or give model\.card"):
        load_model(ModelSpec(checkpoint=path))
    _write_card(card_path_beside(path), UNET_CARD)
    loaded, card = load_model(ModelSpec(checkpoint=path))
    assert card == UNET_CARD
    assert torch.equal(_outputs(loaded, 4), _outputs(model, 4))


def test_bare_state_dict_with_explicit_card_and_band_override(tmp_path: Path) -> None:
    model = _trained(UNET_CARD, seed=2)
    path = tmp_path / "weights" / "model.pt"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    card_path = _write_card(tmp_path / "elsewhere.yaml", UNET_CARD)
    loaded, card = load_model(ModelSpec(checkpoint=path, card=card_path, params={"bands": ["1", "2", "3", "4"]}))
    assert card.bands == ("1", "2", "3", "4")
    assert torch.equal(_outputs(loaded, 4), _outputs(model, 4))


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(NotAWeight(), path)
    with pytest.raises(ModelError) as info:
        load_model(ModelSpec(checkpoint=path))
    message = str(info.value)
    assert str(path) in message and "NotAWeight" in message and "weights_only" in message
    assert "\n" not in message
    # hidden next to real weights, it is refused too
    torch.save({"state_dict": _trained(UNET_CARD).state_dict(), "optim": NotAWeight()}, path)
    _write_card(card_path_beside(path), UNET_CARD)
    with pytest.raises(ModelError, match="weights_only"):
        load_model(ModelSpec(checkpoint=path))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"is not a torch checkpoint"),
        (b"hello, not a pickle" * 10, r"is not a torch checkpoint"),
        # "c" is pickle's GLOBAL opcode: safe loading refuses the "global" it names
        (b"certainly not a pickle" * 10, r"holds pickled Python objects, which safe loading"),
    ],
)
def test_junk_checkpoint(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=match) as info:
        load_model(ModelSpec(checkpoint=path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelError, match=r"holds a list, not a state_dict"):
        load_model(ModelSpec(checkpoint=path, card=_write_card(tmp_path / "c.yaml", UNET_CARD)))


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model.checkpoint .*nope.pt does not exist: check the path"):
        load_model(ModelSpec(checkpoint=tmp_path / "nope.pt"))
    with pytest.raises(ModelError, match=r"model.checkpoint .* is a folder"):
        load_model(ModelSpec(checkpoint=tmp_path))
    with pytest.raises(ModelError, match=r"model.file .*nope.pt2 does not exist"):
        load_model(ModelSpec(file=tmp_path / "nope.pt2"))
    with pytest.raises(ModelError, match=r"model.card .*nope.yaml does not exist"):
        load_model(ModelSpec(name="ndwi", card=tmp_path / "nope.yaml"))


def test_state_dict_mismatch_names_file_and_keys(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "four.pt", _trained(UNET_CARD), UNET_CARD)
    three_bands = ModelCard("rgb", "unet", UNET_CARD.classes, ("red", "green", "blue"), params=UNET_CARD.params)
    with pytest.raises(ModelError) as info:
        load_model(ModelSpec(checkpoint=path, card=_write_card(tmp_path / "rgb.yaml", three_bands)))
    message = str(info.value)
    assert str(path) in message and "3 bands" in message and "\n" not in message
    assert "encoders.0.0.weight (4, 4, 3, 3) vs (4, 3, 3, 3)" in message

    state = dict(_trained(UNET_CARD).state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    torch.save(state, tmp_path / "keys.pt")
    _write_card(tmp_path / "keys.card.yaml", UNET_CARD)
    with pytest.raises(ModelError, match=r"missing keys \['head.bias'\]; unexpected keys \['extra.weight'\]"):
        load_model(ModelSpec(checkpoint=tmp_path / "keys.pt"))


def test_name_and_checkpoint_architecture_must_agree(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "u.pt", _trained(UNET_CARD), UNET_CARD)
    with pytest.raises(ModelError, match=r"architecture 'unet' but model.name 'fcn_resnet50' is 'fcn_resnet50'"):
        load_model(ModelSpec(name="fcn_resnet50", checkpoint=path))


def test_torchscript_file_with_card_beside(tmp_path: Path) -> None:
    model = _trained(UNET_CARD, seed=3)
    path = tmp_path / "scripted.pt"
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, still supported
        torch.jit.save(torch.jit.trace(model, torch.zeros(1, 4, 32, 32)), str(path))
    with pytest.raises(ModelError, match=r"model.file .* is a compiled program with no card"):
        load_model(ModelSpec(file=path))
    _write_card(card_path_beside(path), UNET_CARD)
    loaded, card = load_model(ModelSpec(file=path))
    assert card == UNET_CARD
    assert torch.equal(_outputs(loaded, 4), _outputs(model, 4))
    with pytest.raises(ModelError, match=r"is a TorchScript file, not a checkpoint: give it as model.file"):
        load_model(ModelSpec(checkpoint=path))


def test_export_program_with_card(tmp_path: Path) -> None:
    model = _trained(UNET_CARD, seed=4)
    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.export.export(model, (torch.zeros(2, 4, 32, 32),), dynamic_shapes={"x": {0: batch}})
    path = tmp_path / "exported.pt2"
    torch.export.save(program, path)
    card_32px = replace(UNET_CARD, patch_px=32)
    loaded, card = load_model(ModelSpec(file=path, card=_write_card(tmp_path / "card.yaml", card_32px)))
    assert card == card_32px
    torch.testing.assert_close(_outputs(loaded, 4), _outputs(model, 4), rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelError, match=r"is a torch.export program, not a checkpoint"):
        load_model(ModelSpec(checkpoint=path))
    with pytest.raises(ModelError, match=r"params \['threshold'\] cannot change it"):
        load_model(ModelSpec(file=path, card=tmp_path / "card.yaml", params={"threshold": 1}))


def test_program_with_wrong_output_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.pt"
    conv = torch.nn.Conv2d(4, 2, 1)
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(conv), str(path))
    _write_card(card_path_beside(path), replace(UNET_CARD, patch_px=16))
    with pytest.raises(ModelError, match=r"returns \(1, 2, 16, 16\) for a \(1, 4, 16, 16\) input, .* wants logits \(1, 3, 16, 16\)"):
        load_model(ModelSpec(file=path))
    _write_card(card_path_beside(path), replace(UNET_CARD, bands=("red",), patch_px=16))
    with pytest.raises(ModelError, match=r"fails on a \(1, 1, 16, 16\) float32 input \(RuntimeError"):
        load_model(ModelSpec(file=path))


def test_checkpoint_given_as_file_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "w.pt", _trained(UNET_CARD), UNET_CARD)
    with pytest.raises(ModelError, match=r"neither TorchScript nor a torch.export .pt2 program"):
        load_model(ModelSpec(file=path, card=_write_card(tmp_path / "c.yaml", UNET_CARD)))


def test_model_spec_validation() -> None:
    with pytest.raises(ModelError, match="names no model"):
        ModelSpec()
    with pytest.raises(ModelError, match="drop model.name and model.checkpoint"):
        ModelSpec(name="ndwi", file=Path("m.pt2"))
    spec = ModelSpec(checkpoint="runs/w.pt", params={"threshold": 1})  # type: ignore[arg-type]
    assert spec.checkpoint == Path("runs/w.pt")
    with pytest.raises(TypeError):
        spec.params["threshold"] = 2  # type: ignore[index]
    assert pickle.loads(pickle.dumps(spec)) == spec  # ships to Ray workers
    assert copy.deepcopy(spec) == spec


def test_explicit_card_must_match_named_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"is architecture 'unet' but model.name 'ndwi' is 'ndwi'"):
        load_model(ModelSpec(name="ndwi", card=_write_card(tmp_path / "u.yaml", UNET_CARD)))
    ndwi_s2 = ModelCard("ndwi-s2", "ndwi", ("other", "water"), ("B03", "B08"), params={"threshold": 0.1})
    model, card = load_model(ModelSpec(name="ndwi", card=_write_card(tmp_path / "n.yaml", ndwi_s2)))
    assert card == ndwi_s2 and model.threshold == 0.1
