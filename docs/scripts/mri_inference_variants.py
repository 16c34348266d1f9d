"""Do inference-time remedies help ``mri-tumour``'s tumour core? Flip averaging and model averaging.

    git show 63611c0:geoseg/models/weights/mri-tumour.pt > /tmp/mri-tumour-first.pt
    python docs/scripts/mri_inference_variants.py --also /tmp/mri-tumour-first.pt

Prints the BraTS-region Dice on the validation case of jobs/train_mri_tumour.yaml (pat0004) for
the packaged model alone, the mean of its softmax over the four flips of each slice, and, with
``--also``, the mean of its softmax and another checkpoint's (63611c0 is the first packaged
model). Slice-wise inference as in validation (:func:`geoseg.train.predict_volume`), without
the card's removal of components under ``min_lesion_ml``. For the packaged model it also prints
what each BraTS label of the case is predicted as. Results: docs/mri.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from geoseg.core.grid import Tiling
from geoseg.evaluate import brats_regions, dice
from geoseg.models import ModelSpec, load_model
from geoseg.train import load_labelled_case, load_train_spec, predict_volume

ROOT = Path(__file__).resolve().parents[2]
FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))


class MeanSoftmax(nn.Module):
    """Log of the mean softmax of ``models`` over ``flips`` of the input (predict_volume softmaxes it back)."""

    def __init__(self, models: list[nn.Module], flips: tuple[tuple[int, ...], ...] = ((),)) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.flips = flips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(())
        for model in self.models:
            for dims in self.flips:
                y = model(torch.flip(x, dims) if dims else x)
                total = total + torch.softmax(torch.flip(y, dims) if dims else y, dim=1)
        return torch.log(total / (len(self.models) * len(self.flips)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=ROOT / "jobs" / "train_mri_tumour.yaml")
    ap.add_argument("--also", type=Path, help="a second checkpoint to average with the packaged model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_train_spec(args.spec)
    case = load_labelled_case(Path(spec.data.validation[0]), spec.data)
    truth = brats_regions(case.labels)
    model, card = load_model(ModelSpec(name="mri-tumour"))
    variants = {"packaged model": MeanSoftmax([model]), "mean over 4 flips": MeanSoftmax([model], FLIPS)}
    if args.also:
        other, _ = load_model(ModelSpec(checkpoint=args.also))
        variants[f"mean with {args.also.name}"] = MeanSoftmax([model, other])
    context = int(card.params.get("context_slices", 0))
    print(f"{case.name}: Dice whole tumour / tumour core / enhancing")
    preds = {}
    for name, net in variants.items():
        t0 = time.perf_counter()
        preds[name] = predict_volume(
            net.eval(), case.image, context, Tiling(card.patch_px), card.n_classes, 16
        )
        scores = " / ".join(
            f"{dice(region, truth[k]):.3f}" for k, region in brats_regions(preds[name]).items()
        )
        print(f"  {name:32s} {scores}  ({time.perf_counter() - t0:.0f} s)")
    label_file = next(Path(spec.data.validation[0]).glob(spec.data.labels))
    raw = case.orientation.to_ras(np.asarray(nib.load(str(label_file)).dataobj).astype(np.int16))
    print("packaged model: share of each BraTS label predicted as " + " / ".join(card.classes))
    for label in sorted(int(v) for v in np.unique(raw) if v):
        counts = np.bincount(preds["packaged model"][raw == label], minlength=card.n_classes)
        print(
            f"  BraTS {label} ({counts.sum()} voxels): "
            + " / ".join(f"{c / counts.sum():.3f}" for c in counts)
        )


if __name__ == "__main__":
    main()
