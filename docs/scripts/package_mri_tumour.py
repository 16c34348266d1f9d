"""Package a training run's best checkpoint as geoseg's built-in ``mri-tumour`` weights.

    python docs/scripts/package_mri_tumour.py out/train-mri-tumour/best.pt

Writes ``geoseg/models/weights/mri-tumour.pt``: the weights cast to float16 (half the bytes;
``load_model`` casts back to float32), with the run's plain ``unet`` card, given the
``min_lesion_ml`` param and the description of ``MRI_TUMOUR_CARD`` (``geoseg/models/_mri.py``,
the one place they are written; edit them there first). Keep ``mri-tumour.card.md`` in step.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from geoseg.models import build_model, save_checkpoint
from geoseg.models._checkpoint import load_state, read_checkpoint
from geoseg.models._mri import MRI_TUMOUR_CARD, MRI_TUMOUR_WEIGHTS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="best.pt of a geoseg train run")
    ap.add_argument("--out", type=Path, default=MRI_TUMOUR_WEIGHTS)
    args = ap.parse_args()
    card, state = read_checkpoint(args.checkpoint)
    if card is None:
        raise SystemExit(f"{args.checkpoint}: no card inside; give a checkpoint written by geoseg train")
    extra = torch.load(args.checkpoint, map_location="cpu", weights_only=True).get("extra", {})
    model = build_model(card)
    load_state(model, state, args.checkpoint, card)
    for key in ("base_channels", "depth"):
        if card.params.get(key) != MRI_TUMOUR_CARD.params.get(key):
            raise SystemExit(
                f"{key}: the run has {card.params.get(key)}, MRI_TUMOUR_CARD {MRI_TUMOUR_CARD.params.get(key)}"
            )
    card = replace(
        card,
        params={**card.params, "min_lesion_ml": MRI_TUMOUR_CARD.params["min_lesion_ml"]},
        description=MRI_TUMOUR_CARD.description,
    )
    keep = {k: extra[k] for k in ("epoch", "dice", "mean_dice") if k in extra}
    save_checkpoint(args.out, model.half(), card, extra=keep)
    print(
        f"wrote {args.out} ({args.out.stat().st_size:,} bytes) from epoch {keep.get('epoch')}: {keep.get('dice')}"
    )


if __name__ == "__main__":
    main()
