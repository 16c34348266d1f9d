"""geoseg.infer.Predictor: fixed batch shape, zero patches answered from one forward pass, CPU optimisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.errors import ModelError
from geoseg.infer import Predictor, optimise_for_cpu
from geoseg.models import ModelCard, ModelSpec, Normalisation, build_model, save_checkpoint

UNET = ModelCard(
    name="unet-test",
    architecture="unet",
    classes=("a", "b", "c"),
    bands=("B02", "B03"),
    normalisation=Normalisation("affine", (100.0, 50.0), (30.0, 20.0)),
    patch_px=32,
    params={"base_channels": 4, "depth": 2},
)


@pytest.fixture
def unet(tmp_path: Path) -> ModelSpec:
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "u.pt", build_model(UNET), UNET)
    return ModelSpec(checkpoint=tmp_path / "u.pt")


def _patches(n: int, zero_rows: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 2, 32, 32)) * 200).astype(np.float32)
    x[zero_rows] = 0
    return x


@pytest.mark.parametrize("labels_only", [False, True])
def test_zero_patches_get_exactly_the_forward_pass_answer(unet: ModelSpec, labels_only: bool) -> None:
    pred = Predictor(unet, batch_size=4, device="cpu")
    x = _patches(11, [0, 3, 4, 10])
    got, zero, _ = pred.predict([x], labels_only=labels_only)
    full = pred._forward(x, labels_only)  # every patch through the model, zero ones too
    assert np.array_equal(got, full)
    assert zero.tolist() == [i in (0, 3, 4, 10) for i in range(11)], "the count comes back with the result"
    # a zero patch's answer does not depend on where it sits in its batch
    for row in range(4):
        batch = _patches(4, [row], seed=row + 1)
        assert np.array_equal(pred._forward(batch, labels_only)[row], got[0])


def test_zero_patches_skip_the_model(unet: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    pred = Predictor(unet, batch_size=4, device="cpu")
    calls = []
    real = pred.model.forward
    monkeypatch.setattr(pred.model, "forward", lambda x: calls.append(x.shape[0]) or real(x))
    pred(_patches(8, list(range(8))))  # all zero: one batch, for the cached answer
    assert calls == [4]
    pred(_patches(8, [1, 2, 5, 6]))  # 4 non-zero patches: one batch; the zero answer is cached
    assert calls == [4, 4]
    pred(_patches(3, []), labels_only=True)  # nothing zero: as before
    assert calls == [4, 4, 4]


def test_no_patches_give_an_empty_answer(unet: ModelSpec) -> None:
    pred = Predictor(unet, batch_size=4, device="cpu")
    assert pred(np.zeros((0, 2, 32, 32), np.float32)).shape == (0, 3, 32, 32)
    assert pred(np.zeros((0, 2, 32, 32), np.float32), labels_only=True).shape == (0, 1, 32, 32)


def test_nan_patches_are_not_zero(unet: ModelSpec) -> None:
    pred = Predictor(unet, batch_size=4, device="cpu")
    x = _patches(2, [0, 1])
    x[1, 0, 0, 0] = np.nan
    got, zero, _ = pred.predict([x])
    assert zero.tolist() == [True, False] and np.isnan(got[1]).any() and not np.isnan(got[0]).any()


def test_parts_share_batches_and_answers_do_not_depend_on_packing(unet: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """Patches of consecutive blocks fill whole batches (only the very last is padded), and each
    patch's answer is the same however the blocks were cut into parts."""
    pred = Predictor(unet, batch_size=4, device="cpu")
    x = _patches(11, [5])
    alone = np.concatenate([pred(x[:3]), pred(x[3:9]), pred(x[9:])])  # three calls: three padded batches
    calls = []
    real = pred.model.forward
    monkeypatch.setattr(pred.model, "forward", lambda t: calls.append(t.shape[0]) or real(t))
    packed, zero, padded = pred.predict([x[:3], x[3:9], x[9:]])
    assert calls == [4, 4, 4], "10 non-zero patches in 3 batches of 4, one padded, not 3 + 2 + 2 batches"
    assert np.array_equal(packed, alone) and zero.sum() == 1 and padded == 2


def test_predictor_takes_a_module_and_leaves_it_untouched() -> None:
    """Training validates with the same Predictor as a run; optimising must not change the module it trains."""
    model = _unet_with_statistics()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    pred = Predictor(model, batch_size=4, device="cpu", card=UNET)
    assert pred.channels_last and sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    x = _patches(3, [])
    with torch.inference_mode():
        xin = (torch.from_numpy(x) - torch.tensor([100.0, 50.0]).view(1, 2, 1, 1)) / torch.tensor([30.0, 20.0]).view(1, 2, 1, 1)
        want = torch.softmax(model(xin), dim=1).numpy()
    np.testing.assert_allclose(pred(x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="needs its card"):
        Predictor(model, device="cpu")


def _unet_with_statistics(seed: int = 0) -> torch.nn.Module:
    """The test U-Net in eval mode, its BatchNorms given non-trivial running statistics and affines."""
    torch.manual_seed(seed)
    model = build_model(UNET)
    for bn in [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_optimise_for_cpu_folds_batchnorm_and_keeps_the_function() -> None:
    model = _unet_with_statistics()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(3, 2, 32, 32)
    with torch.inference_mode():
        before = model(x)
    assert n_bn > 0 and optimise_for_cpu(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        after = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")  # TorchScript files are still accepted
def test_optimise_for_cpu_refuses_training_mode_and_leaves_scripts_alone() -> None:
    model = _unet_with_statistics().train()
    with pytest.raises(ModelError, match="training mode; call model.eval"):
        optimise_for_cpu(model)
    scripted = torch.jit.trace(_unet_with_statistics(), torch.zeros(1, 2, 32, 32))
    assert not optimise_for_cpu(scripted)
    no_conv = torch.nn.Sequential(torch.nn.Identity())  # e.g. ndwi: nothing to gain, inputs stay as they are
    assert not optimise_for_cpu(no_conv.eval())


def test_predictor_optimised_agrees_with_the_model_as_loaded(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "s.pt", _unet_with_statistics(1), UNET)
    spec = ModelSpec(checkpoint=tmp_path / "s.pt")
    fast, plain = Predictor(spec, batch_size=4, device="cpu"), Predictor(spec, batch_size=4, device="cpu", optimise=False)
    assert fast.channels_last and not plain.channels_last
    x = _patches(6, [2])
    np.testing.assert_allclose(fast(x), plain(x), rtol=1e-4, atol=1e-5)
