"""geoseg.train: the model's input representation, sampling, the training loop, resume, mri-tumour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import geoseg.train._loop as loop
from geoseg.core.grid import Tiling
from geoseg.core.volume import foreground_mask, zscore_foreground
from geoseg.errors import InputError, SourceError, SpecError
from geoseg.infer import Predictor
from geoseg.models import ModelCard, ModelSpec, load_model, model_card
from geoseg.models._mri import MRI_TUMOUR_WEIGHTS
from geoseg.sources import load_case, open_case
from geoseg.train import (
    AugmentSection,
    TrainSpec,
    load_labelled_case,
    load_train_spec,
    map_labels,
    normalise_case,
    parse_train_spec,
    predict_case,
    predict_volume,
    slice_stack,
    train,
)
from geoseg.train._sample import SliceIndex, _sampling_grid, draw_batch

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (24, 20, 8)


def write_case(folder: Path, seed: int, background: float = -2.0) -> Path:
    """A tiny BraTS-like case: brain ellipse, oedema (bright FLAIR) around a core with an enhancing rim."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    brain = ((x - 12) / 10) ** 2 + ((y - 10) / 8.5) ** 2 + ((z - 3.5) / 5) ** 2 < 1
    cx, cy = 12 + rng.integers(-3, 4), 10 + rng.integers(-2, 3)
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - 3.5) ** 2 * 2)
    labels = np.zeros(SHAPE, np.int16)
    labels[(r < 6) & brain] = 2  # oedema
    labels[r < 3.5] = 4  # enhancing rim
    labels[r < 2] = 1  # necrosis
    flair = 1.0 + 0.2 * rng.standard_normal(SHAPE) + 1.5 * (labels > 0)
    t1c = 1.0 + 0.2 * rng.standard_normal(SHAPE) + 2.0 * (labels == 4) - 0.5 * (labels == 1)
    for name, vol in (("Flair_test", flair), ("T1c_test", t1c)):
        data = np.where(brain, vol, background).astype(np.float32)
        nib.save(nib.Nifti1Image(data, LPS), str(folder / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(labels, LPS), str(folder / "OTMultiClass.nii.gz"))
    return folder


def tiny_spec(tmp_path: Path, **optimisation: Any) -> dict[str, Any]:
    cases = [write_case(tmp_path / f"case{i}", seed=i) for i in range(3)]
    return {
        "data": {"train": [str(c) for c in cases[:2]], "validation": [str(cases[2])]},
        "model": {"base_channels": 4, "depth": 2},
        "patch_px": 32,
        "val_overlap_px": 4,
        "optimisation": {
            "epochs": 2,
            "samples_per_epoch": 64,
            "batch_size": 8,
            "crop_px": 16,
            "lr": 0.01,
            **optimisation,
        },
        "output": str(tmp_path / "run"),
    }


# --- representation -------------------------------------------------------------------------


def test_slice_stack_channel_order_and_clamping() -> None:
    vol = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    assert np.array_equal(slice_stack(vol, 1, 0), vol[:, :, :, 1])
    s = slice_stack(vol, 0, 2)
    assert s.shape == (2 * 5, 3, 2)
    want = [vol[m, :, :, k] for m in range(2) for k in (0, 0, 0, 1, 2)]  # k-2, k-1 clamp to 0
    assert np.array_equal(s, np.stack(want))
    assert np.array_equal(slice_stack(vol, 3, 1)[2], vol[0, :, :, 3])  # k+1 clamps to the last slice
    with pytest.raises(InputError, match="outside"):
        slice_stack(vol, 4, 0)


def test_normalise_case_is_shared_mask_zscore_and_ignores_scanner_scaling() -> None:
    rng = np.random.default_rng(0)
    vol = np.full((2, 10, 10, 6), -3.0, np.float32)  # z-scored file: constant non-zero background
    vol[:, 2:8, 2:8, 1:5] = rng.normal(size=(2, 6, 6, 4))
    vol[1, 2, 2, 1] = -3.0  # equals the background in one channel only: still foreground via the other
    image, mask = normalise_case(vol)
    assert mask.sum() == 6 * 6 * 4 and mask[2, 2, 1]
    assert np.array_equal(image, zscore_foreground(vol, mask))
    # raw-like: each modality its own positive gain and offset, background 0, int16
    raw = np.where(mask, vol * np.array([40.0, 55.0])[:, None, None, None] + [[[[500.0]]], [[[900.0]]]], 0)
    image_raw, mask_raw = normalise_case(np.rint(raw).astype(np.int16))
    assert np.array_equal(mask_raw, mask)
    np.testing.assert_allclose(image_raw, image, atol=0.02)


def test_map_labels() -> None:
    labels = np.array([0, 1, 2, 3, 4], np.float32)
    assert map_labels(labels, {0: 0, 2: 1, 1: 2, 3: 2, 4: 3}, "x").tolist() == [0, 2, 1, 2, 3]
    with pytest.raises(InputError, match=r"labels \[4\] are not in label_map"):
        map_labels(labels, {0: 0, 1: 1, 2: 1, 3: 1}, "x.nii.gz")


def test_load_labelled_case_is_ras_and_matches_inference_preprocessing(tmp_path: Path) -> None:
    folder = write_case(tmp_path / "c", seed=0)
    spec = parse_train_spec({"data": {"train": [str(folder)], "validation": [str(folder)]}, "output": "o"})
    case = load_labelled_case(folder, spec.data)
    info = open_case(folder, ("flair", "t1c"))
    vol = load_case(info)
    mask = foreground_mask(vol[0]) | foreground_mask(vol[1])
    assert np.array_equal(case.image, info.orientation.to_ras(zscore_foreground(vol, mask)))
    assert np.array_equal(info.orientation.from_ras(case.labels), case.labels_file)
    raw = np.asarray(nib.load(str(folder / "OTMultiClass.nii.gz")).dataobj)
    assert np.array_equal(case.labels_file, map_labels(raw, {0: 0, 2: 1, 1: 2, 3: 2, 4: 3}, ""))
    # LPS -> RAS flips the first two axes
    assert np.array_equal(case.labels[:, :, 3], case.labels_file[::-1, ::-1, 3])
    (folder / "OTMultiClass_copy.nii.gz").write_bytes((folder / "OTMultiClass.nii.gz").read_bytes())
    with pytest.raises(SourceError, match="2 label files match"):
        load_labelled_case(folder, spec.data)


# --- sampling -------------------------------------------------------------------------------


def test_unaugmented_grid_reads_the_exact_crop() -> None:
    img = torch.arange(2 * 30 * 26, dtype=torch.float32).reshape(1, 2, 30, 26)
    p, x0, y0 = 16, 5, 7
    grid = _sampling_grid((30, 26), (x0 + (p - 1) / 2, y0 + (p - 1) / 2), p, None, torch.Generator())
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(out, img[:, :, x0 : x0 + p, y0 : y0 + p])


def test_draw_batch_shapes_labels_and_tumour_bias(tmp_path: Path) -> None:
    spec = parse_train_spec(tiny_spec(tmp_path))
    cases = [load_labelled_case(p, spec.data) for p in spec.data.train]
    index = SliceIndex(cases)
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    x, y = draw_batch(index, 32, 16, 1, 1.0, AugmentSection(), rng, gen)
    assert x.shape == (32, 2 * 3, 16, 16) and x.dtype == torch.float32
    assert y.shape == (32, 16, 16) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 1, 2, 3}
    assert (y > 0).flatten(1).any(dim=1).float().mean() > 0.9  # tumour_fraction 1: (almost) always tumour
    x0, y0 = draw_batch(index, 32, 16, 0, 0.0, AugmentSection(enabled=False), rng, gen)
    assert (x0 == 0).float().mean() < 0.9  # foreground-centred crops


def test_draw_class_centres_on_the_weighted_class(tmp_path: Path) -> None:
    spec = parse_train_spec(tiny_spec(tmp_path))
    cases = [load_labelled_case(p, spec.data) for p in spec.data.train]
    index = SliceIndex(cases)
    rng = np.random.default_rng(0)
    for cls in (1, 2, 3):
        for _ in range(50):
            ci, k, (x, y) = index.draw_class(rng, 1.0, {cls: 1.0})
            assert cases[ci].labels[x, y, k] == cls
    # 1:3 weights give about a quarter / three quarters of the tumour samples
    got = [index.draw_class(rng, 1.0, {1: 1.0, 3: 3.0}) for _ in range(800)]
    share = np.mean([cases[ci].labels[x, y, k] == 3 for ci, k, (x, y) in got])
    assert 0.70 < share < 0.80
    # tumour_fraction 0: any foreground voxel, mostly background in these cases
    bg = [index.draw_class(rng, 0.0, {3: 1.0}) for _ in range(200)]
    assert np.mean([cases[ci].labels[x, y, k] == 0 for ci, k, (x, y) in bg]) > 0.5
    assert all(cases[ci].mask[x, y, k] for ci, k, (x, y) in bg)


def test_region_dice_loss_scores_unions_of_classes() -> None:
    target = torch.tensor([[[0, 1], [2, 3]]])  # (1, 2, 2)
    perfect = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 50
    regions = ((1, 2, 3), (2, 3), (3,))
    assert float(loop.soft_dice_loss(perfect, target, regions=regions)) == pytest.approx(0, abs=1e-6)
    # calling class 2 class 3 is wrong per class but right for whole tumour and core
    swapped = F.one_hot(torch.tensor([[[0, 1], [3, 3]]]), 4).permute(0, 3, 1, 2).float() * 50
    per_class = float(loop.soft_dice_loss(swapped, target))
    per_region = float(loop.soft_dice_loss(swapped, target, regions=regions))
    # per region, eps 1: WT 1, TC 1, ET (2*1+1)/(2+1+1) = 0.75 -> loss (1 - 0.75) / 3
    assert per_region == pytest.approx(0.25 / 3, abs=1e-4)
    assert per_class > per_region


def test_ema_is_an_exponential_average_of_the_weights() -> None:
    model = torch.nn.BatchNorm1d(3)
    ema = loop._EMA(model, decay=0.75)
    with torch.no_grad():
        model.weight.fill_(5.0)
        model.num_batches_tracked.fill_(7)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, torch.full((3,), 0.75 * 1 + 0.25 * 5))
    assert int(ema.module.num_batches_tracked) == 7  # integer buffers are copied, not averaged
    assert not ema.module.weight.requires_grad


# --- spec -----------------------------------------------------------------------------------


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    base = tiny_spec(tmp_path)
    with pytest.raises(SpecError, match=r"optimisation\.lrate: is not a known field \(fields: .*\blr\b.*\)"):
        parse_train_spec({**base, "optimisation": {"lrate": 1}})
    with pytest.raises(SpecError, match=r"^train spec: optimisation\.crop_px 18 is not a multiple of 4"):
        parse_train_spec({**base, "optimisation": {"crop_px": 18}})
    with pytest.raises(SpecError, match=r"optimisation: epochs: true is not a number; give a number"):
        parse_train_spec({**base, "optimisation": {"epochs": True}})
    with pytest.raises(SpecError, match=r"optimisation: dense_warmup_steps: true is not a number"):
        parse_train_spec({**base, "optimisation": {"dense_warmup_steps": True}})
    with pytest.raises(SpecError, match=r"label_map sends labels to classes \[7\]"):
        parse_train_spec({**base, "data": {**base["data"], "label_map": {0: 0, 1: 7}}})
    with pytest.raises(SpecError, match=r"class 0 is background"):
        parse_train_spec({**base, "optimisation": {"class_weights": {0: 1, 2: 1}}})
    with pytest.raises(SpecError, match=r"names classes \[5\], but there are 4 classes"):
        parse_train_spec({**base, "optimisation": {"dice_regions": [[1, 5], [3]]}})
    with pytest.raises(SpecError, match=r"ce_weights \[1.0, 2.0\] must give one weight >= 0 per class \(4\)"):
        parse_train_spec({**base, "optimisation": {"ce_weights": [1, 2]}})
    with pytest.raises(SpecError, match=r"optimisation\.device: 'tpu'"):
        parse_train_spec({**base, "optimisation": {"device": "tpu"}})
    with pytest.raises(SpecError, match=r"data: is required"):
        parse_train_spec({"output": "x"})
    with pytest.raises(SpecError, match="no such training spec"):
        load_train_spec(tmp_path / "missing.yaml")


def test_repository_spec_parses() -> None:
    spec = load_train_spec(Path(__file__).resolve().parents[1] / "jobs" / "train_mri_tumour.yaml")
    assert isinstance(spec, TrainSpec)
    assert spec.data.modalities == ("flair", "t1c") and spec.patch_px == 256
    assert spec.data.label_map == {0: 0, 2: 1, 1: 2, 3: 2, 4: 3}


# --- training -------------------------------------------------------------------------------


def test_two_epochs_reduce_the_loss_and_the_checkpoint_loads(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    spec = parse_train_spec(tiny_spec(tmp_path))
    result = train(spec)
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert result.history[1]["loss"] < result.history[0]["loss"]
    assert set(result.best_dice["case2"]) == {"whole_tumour", "tumour_core", "enhancing"}
    model, card = load_model(ModelSpec(checkpoint=result.best_checkpoint))
    assert card.bands == ("flair", "t1c") and card.normalisation.kind == "zscore_foreground"
    assert card.classes == ("background", "oedema", "non-enhancing+necrosis", "enhancing")
    assert dict(card.params) == {"base_channels": 4, "depth": 2} and card.patch_px == 32
    assert "BraTS" in card.licence
    # the loaded model reproduces the validation Dice of its epoch through the public inference path
    case = load_labelled_case(spec.data.validation[0], spec.data)
    info = open_case(spec.data.validation[0], ("flair", "t1c"))
    pred = predict_case(Predictor(model, card=card), load_case(info), info.orientation, Tiling(32, 32 // 8))
    from geoseg.evaluate import brats_regions, dice

    truth = brats_regions(case.labels_file)
    got = {k: dice(v, truth[k]) for k, v in brats_regions(pred).items()}
    assert got == pytest.approx(result.history[result.best_epoch - 1]["dice"]["case2"])
    with pytest.raises(SpecError, match="already holds a run"):
        train(spec)


RECIPE = {  # the packaged model's options: region Dice, class-balanced centres, weight EMA
    "dice_regions": [[1, 2, 3], [2, 3], [3]],
    "class_weights": {1: 1, 2: 2, 3: 1},
    "ce_weights": [1, 1, 2, 1],
    "ema": 0.9,
}


@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["plain", "recipe"])
def test_resume_continues_the_epoch_count_and_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recipe: dict[str, Any]
) -> None:
    torch.set_num_threads(1)
    data = tiny_spec(tmp_path, samples_per_epoch=16, **recipe)
    whole = train(parse_train_spec({**data, "output": str(tmp_path / "whole")}))

    real_validate = loop.validate
    calls = {"n": 0}

    def crash_in_epoch_2(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", crash_in_epoch_2)
    spec = parse_train_spec({**data, "output": str(tmp_path / "split"), "resume": True})
    with pytest.raises(KeyboardInterrupt):
        train(spec)
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["extra"]["epoch"] == 1
    monkeypatch.setattr(loop, "validate", real_validate)
    resumed = train(spec)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    final = torch.load(resumed.last_checkpoint, weights_only=True)
    assert final["extra"]["epoch"] == 2
    reference = torch.load(whole.last_checkpoint, weights_only=True)["state_dict"]
    for k, v in reference.items():
        torch.testing.assert_close(final["state_dict"][k], v, rtol=1e-5, atol=1e-6)
    assert resumed.history[1]["loss"] == pytest.approx(whole.history[1]["loss"], rel=1e-5)
    assert resumed.history[1]["dice"]["case2"] == pytest.approx(whole.history[1]["dice"]["case2"])
    if recipe.get("ema"):  # the average travels with the run; best.pt holds averaged weights
        ema = final["extra"]["train_state"]["ema"]
        ref_ema = torch.load(whole.last_checkpoint, weights_only=True)["extra"]["train_state"]["ema"]
        for k, v in ref_ema.items():
            torch.testing.assert_close(ema[k], v, rtol=1e-5, atol=1e-6)
        if resumed.best_epoch == 2:
            best = torch.load(resumed.best_checkpoint, weights_only=True)["state_dict"]
            for k, v in ema.items():
                torch.testing.assert_close(best[k], v)
    changed = parse_train_spec({**data, "output": str(tmp_path / "split"), "resume": True, "seed": 3})
    with pytest.raises(SpecError, match=r"different training spec \(changed: seed 0 -> 3\)"):
        train(changed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where torch sees no GPU")
def test_cuda_training_without_a_gpu_is_one_clear_error(tmp_path: Path) -> None:
    spec = parse_train_spec(tiny_spec(tmp_path, device="cuda"))
    with pytest.raises(SpecError, match="optimisation.device is cuda, but torch sees no GPU"):
        train(spec)


def test_context_slices_train_and_load_back(tmp_path: Path) -> None:
    data = tiny_spec(tmp_path, epochs=1, samples_per_epoch=8)
    spec = parse_train_spec({**data, "model": {**data["model"], "context_slices": 1}})
    result = train(spec)
    model, card = load_model(ModelSpec(checkpoint=result.best_checkpoint))
    assert card.params["context_slices"] == 1
    assert model(torch.zeros(1, 2 * 3, 32, 32)).shape == (1, 4, 32, 32)


def test_predict_volume_equals_plain_slicewise_inference() -> None:
    torch.manual_seed(0)
    from geoseg.models import UNet

    model = UNet(2 * 3, 4, base_channels=4, depth=2).eval()
    card = ModelCard("t", "unet", ("a", "b", "c", "d"), ("flair", "t1c"), patch_px=32,
                     params={"base_channels": 4, "depth": 2, "context_slices": 1})  # fmt: skip
    vol = np.zeros((2, 20, 28, 6), np.float32)
    vol[:, 3:17, 4:24, 1:4] = np.random.default_rng(0).normal(size=(2, 14, 20, 3))
    got = predict_volume(Predictor(model, batch_size=3, card=card, optimise=False), vol, Tiling(32, 4))
    for k in range(6):
        stack = slice_stack(vol, k, 1)
        padded = np.pad(stack, ((0, 0), (0, 12), (0, 4)), mode="reflect")
        with torch.no_grad():
            want = model(torch.from_numpy(padded)[None])[0].argmax(0).numpy()[:20, :28]
        assert np.array_equal(got[:, :, k], want), k


# --- the built-in model -----------------------------------------------------------------------


def test_mri_tumour_is_registered_with_packaged_weights() -> None:
    model, card = load_model(ModelSpec(name="mri-tumour"))
    assert card == model_card("mri-tumour")
    assert card.bands == ("flair", "t1c") and card.patch_px == 256
    assert card.classes == ("background", "oedema", "non-enhancing+necrosis", "enhancing")
    assert card.normalisation.kind == "zscore_foreground" and "CC BY-NC-SA 3.0" in card.licence
    plain, plain_card = load_model(ModelSpec(checkpoint=MRI_TUMOUR_WEIGHTS))
    assert plain_card.architecture == "unet"
    assert (plain_card.bands, plain_card.classes, dict(plain_card.params)) == (
        card.bands,
        card.classes,
        dict(card.params),
    )
    assert plain_card.description == card.description
    x = torch.randn(1, 2, 256, 256)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 4, 256, 256)
        torch.testing.assert_close(out, plain(x))
    assert not model.training
