"""MRI cases through Ray: an orientation zoo where a thresholding model's mask must equal the
same threshold computed directly on the input, voxel for voxel, and the NIfTI export must carry
the input's affine, shape and orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import zarr

from geoseg.core.volume import normalise_case
from geoseg.errors import SpecError
from geoseg.pipeline import run_job
from geoseg.sinks import export_nifti, read_table
from geoseg.spec import parse_spec

pytestmark = pytest.mark.usefixtures("ray_local")

THRESHOLD = 0.8


class _Threshold(torch.nn.Module):
    """Class 1 where the normalised FLAIR exceeds THRESHOLD: logits [0, flair - t]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.zeros_like(x[:, 0]), x[:, 0] - THRESHOLD], dim=1)


@pytest.fixture(scope="module")
def threshold_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model")
    path = d / "threshold.pt2"
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(_Threshold(), (torch.zeros(2, 2, 64, 64),), dynamic_shapes=({0: batch},)), path)
    (d / "threshold.card.yaml").write_text(
        "name: threshold\narchitecture: exported\nclasses: [background, bright]\nbands: [flair, t1c]\n"
        "normalisation: {kind: zscore_foreground}\npatch_px: 64\n"
    )
    return path


def _rotation(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.diag([-1.0, -1.0, 1.0, 1.0]),
    "oblique": np.block([[_rotation(20) @ np.diag([1.0, 1.2, 1.0]), np.array([[5.0], [-3.0], [2.0]])], [np.zeros((1, 3)), np.ones((1, 1))]]),
    "flipped_z": np.diag([1.0, 1.0, -2.0, 1.0]),
    "permuted_anisotropic": np.array([[0, 0, 3.0, 0], [0.9, 0, 0, 0], [0, 0.9, 0, 0], [0, 0, 0, 1]]),
}


def _volume(shape: tuple[int, int, int], seed: int, background: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.mgrid[: shape[0], : shape[1], : shape[2]]
    c = np.array(shape) / 2
    head = ((x - c[0]) / (0.45 * shape[0])) ** 2 + ((y - c[1]) / (0.45 * shape[1])) ** 2 + ((z - c[2]) / (0.45 * shape[2])) ** 2 < 1
    lesion = ((x - c[0] * 1.2) ** 2 + (y - c[1] * 0.8) ** 2 + (z - c[2]) ** 2) < (min(shape) / 6) ** 2
    vol = np.where(head, 100 + 20 * rng.standard_normal(shape) + 120 * lesion, background)
    return vol.astype(np.float32)


def _write_case(folder: Path, affine: np.ndarray, shape: tuple[int, int, int], seed: int, four_d: bool = False) -> Path:
    folder.mkdir(parents=True)
    flair, t1c = _volume(shape, seed), _volume(shape, seed + 1) * 0.5
    if four_d:
        nib.save(nib.Nifti1Image(np.stack([flair, t1c], axis=-1), affine), folder / "case.nii.gz")
        return folder / "case.nii.gz"
    nib.save(nib.Nifti1Image(flair, affine), folder / "sub_FLAIR.nii.gz")
    nib.save(nib.Nifti1Image(t1c, affine), folder / "sub_T1c.nii.gz")
    return folder


def _direct_threshold(case: Path) -> np.ndarray:
    if case.is_file():
        vol = np.moveaxis(np.asarray(nib.load(case).dataobj, np.float32), -1, 0)
    else:
        vol = np.stack([np.asarray(nib.load(case / f).dataobj, np.float32) for f in ("sub_FLAIR.nii.gz", "sub_T1c.nii.gz")])
    image, _ = normalise_case(vol)
    return (image[0] > THRESHOLD).astype(np.uint8)


@pytest.mark.parametrize("orient", sorted(AFFINES))
def test_orientation_zoo_matches_direct_threshold(tmp_path: Path, threshold_model: Path, orient: str) -> None:
    shape = (40, 52, 30) if orient != "permuted_anisotropic" else (70, 48, 24)  # slices larger and smaller than a patch
    case = _write_case(tmp_path / orient, AFFINES[orient], shape, seed=len(orient))
    out = tmp_path / "o.zarr"
    report = run_job(parse_spec({"inputs": [str(case)], "output": str(out), "model": {"file": str(threshold_model)}, "progress": False}))
    assert report.ok, report.summary()
    (res,) = report.scenes
    assert res.inference_ratio == 1.0 and res.patches_forwarded == res.grid_patches
    truth = _direct_threshold(case)
    assert 0 < truth.mean() < 0.5
    g = zarr.open_group(str(out), path=orient, mode="r")
    assert np.array_equal(g["mask"][:], truth), "mask differs from the threshold on the input grid"
    src = nib.load(next(case.glob("*FLAIR*")))
    assert g.attrs["affine"] == src.affine.tolist(), "the file's own affine (float32 sform), unchanged"

    nii = export_nifti(out, orient, tmp_path / "mask.nii.gz")
    exp = nib.load(nii)
    assert exp.shape == src.shape and np.array_equal(exp.affine, src.affine)
    assert nib.aff2axcodes(exp.affine) == nib.aff2axcodes(src.affine)
    assert np.array_equal(np.asarray(exp.dataobj), truth)


def test_four_d_input_and_lesion_table(tmp_path: Path, threshold_model: Path) -> None:
    case = _write_case(tmp_path / "c4", np.diag([2.0, 2.0, 2.0, 1.0]), (40, 40, 30), seed=3, four_d=True)
    out = tmp_path / "o.zarr"
    report = run_job(parse_spec({"inputs": [str(case)], "output": str(out), "model": {"file": str(threshold_model)}, "progress": False}))
    assert report.ok
    (res,) = report.scenes
    # every patch answered once; the empty end slices (background 0 after normalisation) share one pass
    assert res.patches_forwarded == res.grid_patches and 0 < res.patches_zero < res.grid_patches
    assert f"({res.patches_zero} all-zero, from one cached pass)" in report.summary()
    truth = _direct_threshold(case)
    g = zarr.open_group(str(out), path="case", mode="r")
    assert np.array_equal(g["mask"][:], truth)
    table = read_table(out, "case", "lesions")
    ids = g["lesion_id"][:]
    assert len(table["lesion_id"]) == ids.max() >= 1
    big = int(np.argmax(table["voxels"]))
    assert table["voxels"].sum() == (truth > 0).sum()
    assert table["volume_ml"][big] == pytest.approx(table["voxels"][big] * 8 / 1000)  # 2 mm isotropic voxels
    assert g.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.0, 2.0, 2.0]


def test_min_lesion_ml_drops_small_components_from_mask_ids_and_table(tmp_path: Path, threshold_model: Path) -> None:
    from scipy import ndimage

    case = _write_case(tmp_path / "c", np.diag([2.0, 2.0, 2.0, 1.0]), (40, 40, 30), seed=3)
    out = tmp_path / "o.zarr"
    model = threshold_model  # its card has no min_lesion_ml: the job's params may still set it
    spec = {"inputs": [str(case)], "output": str(out), "progress": False}
    spec["model"] = {"file": str(model), "params": {"min_lesion_ml": 0.1}}  # 0.1 mL = 12.5 voxels of 8 uL
    assert run_job(parse_spec(spec)).ok
    truth = _direct_threshold(case)
    comp, n = ndimage.label(truth > 0, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(comp.ravel())
    small = sizes * 0.008 < 0.1
    small[0] = False
    assert small.any() and (~small[1:]).any(), "the case must hold both kinds of component"
    expected = np.where(small[comp], 0, truth)
    g = zarr.open_group(str(out), path="c", mode="r")
    assert np.array_equal(g["mask"][:], expected)
    table = read_table(out, "c", "lesions")
    assert len(table["lesion_id"]) == int((~small[1:]).sum()) == g["lesion_id"][:].max()
    assert table["volume_ml"].min() >= 0.1 and table["voxels"].sum() == (expected > 0).sum()
    assert np.array_equal(g["lesion_id"][:] > 0, expected > 0)
    bad = {**spec, "output": str(tmp_path / "bad.zarr"), "model": {"file": str(model), "params": {"min_lesion_ml": -1}}}
    with pytest.raises(SpecError, match="min_lesion_ml=-1 must be a number >= 0"):
        run_job(parse_spec(bad))
    assert not (tmp_path / "bad.zarr").exists()


def test_bad_cases_are_reported_and_the_good_one_finishes(tmp_path: Path, threshold_model: Path) -> None:
    good = _write_case(tmp_path / "good", np.eye(4), (30, 30, 20), seed=1)
    missing = tmp_path / "missing_t1c"
    missing.mkdir()
    nib.save(nib.Nifti1Image(_volume((30, 30, 20), 2), np.eye(4)), missing / "x_FLAIR.nii.gz")
    mismatch = tmp_path / "mismatch"
    mismatch.mkdir()
    nib.save(nib.Nifti1Image(_volume((30, 30, 20), 2), np.eye(4)), mismatch / "x_FLAIR.nii.gz")
    nib.save(nib.Nifti1Image(_volume((30, 30, 21), 2), np.eye(4)), mismatch / "x_T1c.nii.gz")
    nans = tmp_path / "nans"
    nans.mkdir()
    v = _volume((30, 30, 20), 2)
    v[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(v, np.eye(4)), nans / "x_FLAIR.nii.gz")
    nib.save(nib.Nifti1Image(_volume((30, 30, 20), 4), np.eye(4)), nans / "x_T1c.nii.gz")
    out = tmp_path / "o.zarr"
    report = run_job(parse_spec({"inputs": [str(p) for p in (missing, good, mismatch, nans)], "output": str(out),
                                 "model": {"file": str(threshold_model)}, "progress": False}))  # fmt: skip
    status = {Path(s.path).name: (s.status, s.error) for s in report.scenes}
    assert status["good"][0] == "complete"
    assert status["missing_t1c"][0] == "failed" and "t1c" in status["missing_t1c"][1]
    assert status["mismatch"][0] == "failed" and "shape" in status["mismatch"][1]
    assert status["nans"][0] == "failed" and "NaN" in status["nans"][1]
    for name in ("missing_t1c", "mismatch"):
        assert not (out / name).exists()
    assert zarr.open_group(str(out), path="nans", mode="r").attrs["geoseg"]["status"] == "running"


def test_sheared_affine_gives_volumes_from_the_determinant(tmp_path: Path, threshold_model: Path) -> None:
    """A tilted gantry: the sform has an off-diagonal term. The voxel volume is |det| of the affine
    (not the product of its column lengths, 10 % more here), in the table and for min_lesion_ml."""
    shear = np.array([[1.0, 0.0, 0.45, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    case = _write_case(tmp_path / "tilted", shear, (40, 40, 30), seed=5)
    out = tmp_path / "o.zarr"
    assert run_job(parse_spec({"inputs": [str(case)], "output": str(out), "model": {"file": str(threshold_model)}, "progress": False})).ok
    table = read_table(out, "tilted", "lesions")
    assert len(table["volume_ml"]) >= 1
    np.testing.assert_allclose(table["volume_ml"], table["voxels"] * abs(np.linalg.det(shear[:3, :3])) / 1000)
    assert abs(np.prod(np.linalg.norm(shear[:3, :3], axis=0)) - 1.0) > 0.09, "the shear must matter"


def test_a_glob_that_also_matches_a_licence_file_finishes_the_cases(tmp_path: Path, threshold_model: Path) -> None:
    """inputs: ['cases/*'] over case folders and a LICENSE: the file is no case; the run says so
    and the cases complete with exit 0."""
    root = tmp_path / "cases"
    for i in range(2):
        _write_case(root / f"c{i}", np.eye(4), (30, 30, 20), seed=i)
    (root / "LICENSE.txt").write_text("CC BY-NC-SA 3.0")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: ['{root}/*']\noutput: {tmp_path / 'o.zarr'}\nmodel: {{file: {threshold_model}}}\nprogress: false\n")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "LICENSE.txt" in proc.stderr and "no MRI case" in proc.stderr
    assert "2/2 inputs complete" in proc.stdout
