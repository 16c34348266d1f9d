"""Picture of a geoseg tumour mask over its MRI scan, beside the expert labels (for docs/img/).

    python docs/scripts/quicklook_mri.py STORE CASE_NAME OUT.png [--truth '*OTMultiClass*']

Shows the axial slice with the most predicted tumour, FLAIR underneath, in neurological view
(patient's right on the right, anterior at the top).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import zarr
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from geoseg.core.volume import orientation_of
from geoseg.train import BRATS_LABEL_MAP

COLOURS = ["#00000000", "#2ecc71", "#f1c40f", "#e74c3c"]  # background, oedema, core, enhancing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("case")
    ap.add_argument("out")
    ap.add_argument("--truth", default="*OTMultiClass*")
    a = ap.parse_args()
    g = zarr.open_group(a.store, path=a.case, mode="r")
    meta = g.attrs["geoseg"]
    flair_img = nib.load(meta["files"][0])
    orient = orientation_of(flair_img.affine)
    flair = orient.to_ras(np.asarray(flair_img.dataobj, np.float32))
    mask = orient.to_ras(g["mask"][:])
    folder = Path(meta["source"])
    truth_raw = np.rint(np.asarray(nib.load(next(folder.glob(a.truth))).dataobj)).astype(int)
    lut = np.zeros(max(BRATS_LABEL_MAP) + 1, np.uint8)
    for k, v in BRATS_LABEL_MAP.items():
        lut[k] = v
    truth = orient.to_ras(lut[truth_raw])
    k = int(np.argmax((mask > 0).sum(axis=(0, 1))))
    fig, ax = plt.subplots(1, 2, figsize=(10, 5.4))
    cmap = ListedColormap(COLOURS)
    for axis, lab, title in ((ax[0], mask, "geoseg mri-tumour"), (ax[1], truth, "expert labels (BraTS)")):
        axis.imshow(np.rot90(flair[:, :, k]), cmap="gray")
        axis.imshow(np.rot90(np.ma.masked_equal(lab[:, :, k], 0)), cmap=cmap, vmin=0, vmax=3, alpha=0.55, interpolation="nearest")
        axis.set_title(f"{title}, axial slice {k}")
        axis.set_axis_off()
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(COLOURS[1:], ["oedema", "non-enhancing + necrosis", "enhancing"], strict=True)],
               loc="lower center", ncol=3)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(a.out, dpi=80)


if __name__ == "__main__":
    main()
