"""What the model sees of each BraTS label: voxel counts and mean normalised intensity per case.

    python docs/scripts/brats_label_intensities.py [jobs/train_mri_tumour.yaml]

For every case of a training spec (training cases first, then validation), each BraTS label's
voxel count and the mean of each modality after geoseg's own normalisation (``zscore_foreground``,
the model's input). It shows why the tumour core of the validation case is hard for
``mri-tumour``: see docs/mri.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from geoseg.train import load_labelled_case, load_train_spec

ROOT = Path(__file__).resolve().parents[2]
BRATS_LABELS = {2: "oedema", 1: "necrosis", 3: "non-enhancing", 4: "enhancing"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", type=Path, default=ROOT / "jobs" / "train_mri_tumour.yaml")
    args = ap.parse_args()
    spec = load_train_spec(args.spec)
    mods = spec.data.modalities
    head = " | ".join(f"{name} (BraTS {k}): voxels, " + ", ".join(mods) for k, name in BRATS_LABELS.items())
    print(f"| case | split | {head} |")
    print("|---" * (2 + len(BRATS_LABELS)) + "|")
    for split, folders in (("train", spec.data.train), ("validation", spec.data.validation)):
        for folder in folders:
            case = load_labelled_case(Path(folder), spec.data)
            label_file = next(Path(folder).glob(spec.data.labels))
            raw = case.orientation.to_ras(np.asarray(nib.load(str(label_file)).dataobj).astype(np.int16))
            cells = []
            for k in BRATS_LABELS:
                sel = raw == k
                n = int(np.count_nonzero(sel))
                means = ", ".join(f"{case.image[c][sel].mean():+.2f}" if n else "-" for c in range(len(mods)))
                cells.append(f"{n}: {means}")
            print(f"| {case.name} | {split} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
