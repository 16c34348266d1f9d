"""The packaged mri-tumour model on the held-out BraTS case (../shared/data; skipped without it)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from geoseg.evaluate import evaluate_store
from geoseg.pipeline import run_job
from geoseg.spec import parse_spec
from geoseg.train import BRATS_LABEL_MAP
from tests.conftest import shared_data

pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.realdata]

CASE = "brats_2013_pat0004_1"  # the validation case: never trained on


def _run(cases: list[Path], out: Path) -> None:
    report = run_job(parse_spec({"inputs": [str(c) for c in cases], "output": str(out), "model": {"name": "mri-tumour"}, "progress": False}))
    assert report.ok, report.summary()


def _raw_like(case: Path, dst: Path) -> Path:
    """The case as a scanner might store it: each modality scaled and shifted by its own
    factors, background 0, int16; the truth file copied unchanged."""
    dst.mkdir()
    brain = np.asarray(nib.load(case / "brainmask.nii.gz").dataobj) > 0
    for name, scale, shift in (("Flair_subtrMeanDivStd", 173.0, 811.0), ("T1c_subtrMeanDivStd", 61.0, 402.0)):
        img = nib.load(case / f"{name}.nii.gz")
        raw = np.where(brain, np.rint(np.asarray(img.dataobj, np.float64) * scale + shift), 0).astype(np.int16)
        out = nib.Nifti1Image(raw, img.affine, img.header)
        out.set_data_dtype(np.int16)
        nib.save(out, dst / f"raw_{name.split('_')[0]}.nii.gz")
    (dst / "OTMultiClass.nii.gz").write_bytes((case / "OTMultiClass.nii.gz").read_bytes())
    return dst


def test_validation_dice_and_raw_scans(tmp_path: Path) -> None:
    case = shared_data("brats2015", CASE)
    raw = _raw_like(case, tmp_path / "raw_pat0004")
    out = tmp_path / "o.zarr"
    _run([case, raw], out)
    scores = {s.name: s for s in evaluate_store(str(out), "*OTMultiClass*", dict(BRATS_LABEL_MAP))}
    d = scores[CASE].dice
    # measured 2026-11-22 (geoseg run + evaluate): 0.9062 / 0.6323 / 0.7652; goals 0.90 / 0.70 / 0.75,
    # tumour core not met (see the model card). The margins only absorb float and thread-order noise.
    assert d["whole_tumour"] >= 0.90 and d["tumour_core"] >= 0.62 and d["enhancing"] >= 0.75, d
    assert scores[CASE].lesions.false_positive == 0  # components under 0.5 mL are dropped (card's min_lesion_ml)
    raw_wt = scores["raw_pat0004"].dice["whole_tumour"]
    assert abs(raw_wt - d["whole_tumour"]) <= 0.02, (raw_wt, d["whole_tumour"])
    assert scores[CASE].lesions.detected >= 1
