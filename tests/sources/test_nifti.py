"""NIfTI cases: finding modality files, header checks, loading voxels, and clear errors."""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from geoseg.core.volume import foreground_mask
from geoseg.errors import InputError, SourceError, SpecError
from geoseg.sources._nifti import DEFAULT_PATTERNS, CaseInfo, load_case, open_case
from tests.conftest import SHARED_DATA

SHAPE = (12, 10, 8)
AFFINE = np.diag([-0.9, -0.9, 3.0, 1.0])
AFFINE[:3, 3] = (50.0, 40.0, -12.0)
BRATS = SHARED_DATA / "brats2015"


def _volume(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _case(folder: Path, names: dict[str, str], affine: np.ndarray = AFFINE) -> dict[str, np.ndarray]:
    """Write one volume per file name under ``folder``; returns the data by name."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, name in enumerate(names):
        out[name] = _volume(seed)
        _save(folder / name, out[name], affine)
    return out


def _raises(kind: type[Exception], call: Callable[[], object], *needles: str) -> str:
    """Run ``call``, expect ``kind`` with a one-line message holding every needle."""
    with pytest.raises(kind) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


NAMINGS = {
    "brats2015": {
        "flair": "Flair_subtrMeanDivStd.nii.gz",
        "t1c": "T1c_subtrMeanDivStd.nii.gz",
        None: ("brainmask.nii.gz", "OTMultiClass.nii.gz"),
    },
    "brats2021": {
        "flair": "BraTS2021_00000_flair.nii.gz",
        "t1": "BraTS2021_00000_t1.nii.gz",
        "t1c": "BraTS2021_00000_t1ce.nii.gz",
        "t2": "BraTS2021_00000_t2.nii.gz",
        None: ("BraTS2021_00000_seg.nii.gz",),
    },
    "brats2023": {
        "flair": "BraTS-GLI-00000-000-t2f.nii.gz",
        "t1": "BraTS-GLI-00000-000-t1n.nii.gz",
        "t1c": "BraTS-GLI-00000-000-t1c.nii.gz",
        "t2": "BraTS-GLI-00000-000-t2w.nii.gz",
        None: ("BraTS-GLI-00000-000-seg.nii.gz",),
    },
    "bids_like": {
        "flair": "sub-01_T2_FLAIR.nii",
        "t1": "sub-01_T1w.nii.gz",
        "t1c": "sub-01_T1_Gd.nii.gz",
        "t2": "sub-01_T2w.nii.gz",
        None: ("sub-01_brainmask.nii.gz", "sub-01_label.nii.gz", "T1_mask.nii.gz"),
    },
}


@pytest.mark.parametrize("naming", sorted(NAMINGS))
def test_default_patterns_find_each_modality(tmp_path: Path, naming: str) -> None:
    files = NAMINGS[naming]
    roles = tuple(r for r in files if r is not None)
    names = [files[r] for r in roles] + list(files[None])
    data = _case(tmp_path / "case01", dict.fromkeys(names, ""))
    (tmp_path / "case01" / "notes.txt").write_text("not an image")
    info = open_case(tmp_path / "case01", roles)
    assert [Path(f).name for f in info.files] == [files[r] for r in roles]
    assert info.name == "case01" and info.modalities == roles and not info.stacked
    vol = load_case(info)
    assert vol.shape == (len(roles), *SHAPE) and vol.dtype == np.float32
    for c, r in enumerate(roles):
        assert np.array_equal(vol[c], data[files[r]])  # file voxel order, no reorientation


def test_patterns_never_confuse_t1_with_t1c_or_labels() -> None:
    from geoseg.sources._nifti import _matches

    for name in ("x_t1ce.nii.gz", "T1c_a.nii.gz", "t1_gd.nii", "T1_post.nii.gz", "T1Gd.nii.gz"):
        assert _matches(name, DEFAULT_PATTERNS["t1c"]) and not _matches(name, DEFAULT_PATTERNS["t1"]), name
    labels = ("brainmask.nii.gz", "OTMultiClass.nii.gz", "x_seg.nii.gz", "t1_mask.nii.gz", "labels_t2.nii")
    for name in labels:
        assert not any(_matches(name, pats) for pats in DEFAULT_PATTERNS.values()), name
    assert not _matches("x_t2_flair.nii.gz", DEFAULT_PATTERNS["t2"])


def test_case_info_is_plain_and_picklable(tmp_path: Path) -> None:
    _case(tmp_path / "c", {"a_flair.nii.gz": "", "a_t1c.nii.gz": ""})
    info = open_case(tmp_path / "c", ("t1c", "flair"))
    assert [Path(f).name for f in info.files] == ["a_t1c.nii.gz", "a_flair.nii.gz"]
    assert info.shape_xyz == SHAPE
    assert np.allclose(np.asarray(info.affine), AFFINE)
    assert np.allclose(info.voxel_mm, (0.9, 0.9, 3.0))
    assert info.voxel_ml == pytest.approx(0.9 * 0.9 * 3 / 1000)
    assert info.dtype == "float32"
    assert info.orientation.codes == ("L", "P", "S")
    assert pickle.loads(pickle.dumps(info)) == info
    again = open_case(tmp_path / "c", ("t1c", "flair"))
    assert again.identity == info.identity
    # another modality order or a rewritten file changes the fingerprint
    assert open_case(tmp_path / "c", ("flair", "t1c")).identity != info.identity
    _save(tmp_path / "c" / "a_t1c.nii.gz", _volume(9))
    os.utime(tmp_path / "c" / "a_t1c.nii.gz", ns=(1, 1))
    assert open_case(tmp_path / "c", ("t1c", "flair")).identity != info.identity


def test_custom_patterns(tmp_path: Path) -> None:
    _case(tmp_path / "c", {"scanA.nii.gz": "", "scanB.nii.gz": ""})
    info = open_case(tmp_path / "c", ("flair", "pd"), {"flair": ["*A.nii*"], "pd": "*b.nii*"})
    assert [Path(f).name for f in info.files] == ["scanA.nii.gz", "scanB.nii.gz"]


@pytest.mark.parametrize("n", [1, 3])
def test_4d_file_holds_modalities_in_order(tmp_path: Path, n: int) -> None:
    stack = _volume(5, (*SHAPE, n))
    path = _save(tmp_path / "stack.nii.gz", stack)
    mods = ("flair", "t1c", "t2")[:n]
    info = open_case(path, mods)
    assert info.stacked and info.name == "stack" and info.shape_xyz == SHAPE
    assert info.files == (str(path.resolve()),) * n
    vol = load_case(info)
    assert vol.shape == (n, *SHAPE)
    assert np.array_equal(vol, np.moveaxis(stack, -1, 0))


def test_single_3d_file_and_4d_of_length_1_in_folder(tmp_path: Path) -> None:
    path = _save(tmp_path / "only.nii", _volume(1))
    info = open_case(path, ("flair",))
    assert np.array_equal(load_case(info)[0], _volume(1))
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "x_flair.nii.gz", _volume(2, (*SHAPE, 1)))
    assert open_case(tmp_path / "c", ("flair",)).shape_xyz == SHAPE


def test_scaled_integer_file_loads_as_float32(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "t1.nii.gz"))
    info = open_case(tmp_path / "t1.nii.gz", ("t1",))
    assert info.dtype == "int16"
    vol = load_case(info)
    assert vol.dtype == np.float32 and vol[0].flat[3] == pytest.approx(11.5)


# ---------------------------------------------------------------------------- errors


def test_missing_folder_or_file(tmp_path: Path) -> None:
    _raises(SourceError, lambda: open_case(tmp_path / "nope", ("flair",)), "nope", "no such")
    (tmp_path / "x.txt").write_text("hi")
    _raises(SourceError, lambda: open_case(tmp_path / "x.txt", ("flair",)), "x.txt", ".nii.gz")


def test_missing_modality_lists_files_and_patterns(tmp_path: Path) -> None:
    _case(tmp_path / "c", {"a_flair.nii.gz": "", "brainmask.nii.gz": ""})
    _raises(
        SourceError,
        lambda: open_case(tmp_path / "c", ("flair", "t1c")),
        str(tmp_path / "c"), "'t1c'", "a_flair.nii.gz, brainmask.nii.gz", "*t1ce*", "modality_patterns",
    )


def test_two_files_for_one_modality(tmp_path: Path) -> None:
    _case(tmp_path / "c", {"a_flair.nii.gz": "", "b_flair.nii.gz": ""})
    _raises(SourceError, lambda: open_case(tmp_path / "c", ("flair",)), "a_flair.nii.gz, b_flair.nii.gz",
            "modality_patterns")


def test_one_file_for_two_modalities(tmp_path: Path) -> None:
    _case(tmp_path / "c", {"scan.nii.gz": ""})
    _raises(SourceError, lambda: open_case(tmp_path / "c", ("a", "b"), {"a": ["scan*"], "b": ["*scan*"]}),
            "scan.nii.gz", "'a'", "'b'")


def test_bad_modality_lists(tmp_path: Path) -> None:
    _case(tmp_path / "c", {"a_flair.nii.gz": ""})
    _raises(SpecError, lambda: open_case(tmp_path / "c", ("pd",)), "'pd'", "modality_patterns")
    _raises(SpecError, lambda: open_case(tmp_path / "c", ()), "modalities")
    _raises(SpecError, lambda: open_case(tmp_path / "c", ("flair", "flair")), "repeat")


def test_modalities_of_different_shapes(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "a_flair.nii.gz", _volume(0))
    _save(tmp_path / "c" / "a_t1c.nii.gz", _volume(1, (12, 10, 9)))
    _raises(InputError, lambda: open_case(tmp_path / "c", ("flair", "t1c")),
            "a_t1c.nii.gz", "a_flair.nii.gz", "(12, 10, 9)", "(12, 10, 8)")


def test_modalities_of_different_affines(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "a_flair.nii.gz", _volume(0))
    shifted = AFFINE.copy()
    shifted[0, 3] += 1e-3
    _save(tmp_path / "c" / "a_t1c.nii.gz", _volume(1), shifted)
    _raises(InputError, lambda: open_case(tmp_path / "c", ("flair", "t1c")),
            "a_t1c.nii.gz", "a_flair.nii.gz", "50.001", "[-0.9, 0, 0, 50]")
    # within the 1e-4 tolerance is the same grid
    nearly = AFFINE.copy()
    nearly[0, 3] += 1e-5
    _save(tmp_path / "c" / "a_t1c.nii.gz", _volume(1), nearly)
    assert open_case(tmp_path / "c", ("flair", "t1c")).shape_xyz == SHAPE


def test_2d_image(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "a_flair.nii.gz", _volume(0, (12, 10)))
    _raises(InputError, lambda: open_case(tmp_path / "c", ("flair",)), "a_flair.nii.gz", "2-D", "3-D")


def test_4d_length_mismatch(tmp_path: Path) -> None:
    path = _save(tmp_path / "stack.nii.gz", _volume(0, (*SHAPE, 3)))
    _raises(InputError, lambda: open_case(path, ("flair", "t1c")), "stack.nii.gz", "3 volume", "2 modalities")
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "x_flair.nii.gz", _volume(0, (*SHAPE, 2)))
    _raises(InputError, lambda: open_case(tmp_path / "c", ("flair",)), "x_flair.nii.gz", "4-D",
            "one 3-D file per modality")


def test_singular_affine(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    singular = np.diag([1.0, 0.0, 1.0, 1.0])
    hdr.set_sform(singular, code=1)  # nibabel refuses a singular affine argument, not header fields
    img = nib.Nifti1Image(_volume(0), None, hdr)
    (tmp_path / "c").mkdir()
    img.to_filename(str(tmp_path / "c" / "a_flair.nii.gz"))
    assert np.allclose(nib.load(str(tmp_path / "c" / "a_flair.nii.gz")).affine, singular)
    _raises(InputError, lambda: open_case(tmp_path / "c", ("flair",)), "a_flair.nii.gz", "singular")


def test_not_a_nifti(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a_flair.nii.gz").write_bytes(b"this is not gzip at all")
    _raises(SourceError, lambda: open_case(tmp_path / "c", ("flair",)), "a_flair.nii.gz", "readable NIfTI")
    with gzip.open(tmp_path / "c" / "a_flair.nii.gz", "wb") as f:
        f.write(b"gzip, but no NIfTI header inside")
    _raises(SourceError, lambda: open_case(tmp_path / "c", ("flair",)), "a_flair.nii.gz", "readable NIfTI")


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("name", ["a_flair.nii.gz", "a_flair.nii"])
def test_truncated_file_fails_cleanly(tmp_path: Path, name: str) -> None:
    (tmp_path / "c").mkdir()
    path = _save(tmp_path / "c" / name, _volume(0, (40, 40, 30)))
    info = open_case(tmp_path / "c", ("flair",))
    _truncate(path)
    # the header still loads (nibabel is lazy): open_case must notice from the file itself
    nib.load(str(path))
    _raises(SourceError, lambda: open_case(tmp_path / "c", ("flair",)), name, "truncated")
    # a case opened before the damage fails on loading, with the file named
    _raises(SourceError, lambda: load_case(info), name, "truncated or corrupt")


def test_multi_member_gzip_is_not_a_false_alarm(tmp_path: Path) -> None:
    """A valid .nii.gz of two gzip members has a trailer that does not give the full size."""
    plain = _save(tmp_path / "x.nii", _volume(0))
    raw = plain.read_bytes()
    half = len(raw) // 2
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x_flair.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    info = open_case(tmp_path / "c", ("flair",))
    assert np.array_equal(load_case(info)[0], _volume(0))


def test_nan_voxels_name_file_and_modality(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    _save(tmp_path / "c" / "a_flair.nii.gz", _volume(0))
    bad = _volume(1)
    bad[3, 4, 5] = np.nan
    bad[0, 0, 0] = np.inf
    _save(tmp_path / "c" / "a_t1c.nii.gz", bad)
    info = open_case(tmp_path / "c", ("flair", "t1c"))
    _raises(InputError, lambda: load_case(info), "a_t1c.nii.gz", "'t1c'", "2 NaN/inf")
    stack = np.stack([_volume(0), bad], axis=-1)
    path = _save(tmp_path / "stack.nii", stack)
    info = open_case(path, ("flair", "t1c"))
    _raises(InputError, lambda: load_case(info), "stack.nii", "'t1c'", "volume 1")


def test_case_info_rejects_mismatched_lists() -> None:
    with pytest.raises(InputError, match="open_case"):
        CaseInfo("p", "n", ("flair", "t1c"), ("a",), False, SHAPE, tuple(map(tuple, AFFINE)), (1.0, 1.0, 1.0),
                 "float32", "")


# ---------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.skipif(
    not BRATS.is_dir(), reason=f"real BraTS data not found at {BRATS} (../shared/data is absent and GEOSEG_SHARED_DATA unset)"
)
def test_real_brats_case() -> None:
    case = BRATS / "brats_2013_pat0001_1"
    info = open_case(case, ("flair", "t1c"))
    names = [Path(f).name for f in info.files]
    assert names == ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    assert info.shape_xyz == (240, 240, 155)
    assert info.voxel_mm == (1.0, 1.0, 1.0)
    assert info.orientation.codes == ("L", "P", "S")
    vol = load_case(info)
    assert vol.shape == (2, 240, 240, 155) and vol.dtype == np.float32
    brain = np.asarray(nib.load(str(case / "brainmask.nii.gz")).dataobj) > 0
    for c, mod in enumerate(info.modalities):
        agree = float(np.mean(foreground_mask(vol[c]) == brain))
        print(f"{mod}: foreground_mask agrees with brainmask on {agree:.4%} of voxels")
        assert agree >= 0.95, mod
