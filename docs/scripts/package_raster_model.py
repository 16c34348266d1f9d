"""Package a raster training run's checkpoint as geoseg's built-in ``roads`` or ``buildings`` weights.

    python docs/scripts/package_raster_model.py roads out/train-roads/best.pt
    python docs/scripts/package_raster_model.py buildings out/train-buildings/last.pt

Both re-read the run's spec (``jobs/train_<name>.yaml``, or ``--spec``) for the scene and its
split, and score the packaged weights on the validation part through the same code as
training's validation.

- ``roads``: the road threshold is chosen on the TRAINING part (the one maximising IoU there,
  on a 0.05 grid), then folded into the head's bias (``p(road) >= t`` is ``l1 - l0 >=
  log(t / (1 - t))``), so inference's argmax applies it; then IoU and relaxed precision/recall
  (3 px) on the validation strip.
- ``buildings``: the score threshold is chosen on the TRAINING part (the one maximising object
  F1 at IoU 0.5 there, on a 0.05 grid from 0.3 to 0.95) and written into the card's
  ``score_threshold``; then object F1 at IoU 0.5 on the validation strip.

Writes ``geoseg/models/weights/<name>.pt``: float16 weights (``load_model`` casts back), the
run's card, and the scores in ``extra``; written to the shipped path (no ``--out``), the card
takes the description of ``ROADS_CARD`` or ``BUILDINGS_CARD`` (``geoseg/models/_builtin.py``),
whose numbers are the shipped run's; elsewhere it keeps the run's own description. Keep ``<name>.card.md`` in step with what it prints.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from geoseg.core.grid import Tiling
from geoseg.infer import Predictor
from geoseg.models import build_model, save_checkpoint
from geoseg.models._builtin import BUILDINGS_CARD, BUILDINGS_WEIGHTS, ROADS_CARD, ROADS_WEIGHTS
from geoseg.models._checkpoint import load_state, read_checkpoint
from geoseg.train import RasterDataSection, load_train_spec
from geoseg.train._raster import load_raster_scene
from geoseg.train._raster_job import MIN_OBJECT_PX, predict_objects, predict_raster, raster_scores
from geoseg.train._scores import object_f1

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=["roads", "buildings"])
    ap.add_argument("checkpoint", type=Path, help="best.pt or last.pt of a geoseg train run")
    ap.add_argument("--spec", type=Path, help="the run's spec; default jobs/train_<name>.yaml")
    ap.add_argument("--out", type=Path, help="default geoseg/models/weights/<name>.pt")
    args = ap.parse_args()
    torch.set_num_threads(2)
    spec = load_train_spec(args.spec or ROOT / "jobs" / f"train_{args.name}.yaml")
    assert isinstance(spec.data, RasterDataSection)
    card, state = read_checkpoint(args.checkpoint)
    if card is None:
        raise SystemExit(f"{args.checkpoint}: no card inside; give a checkpoint written by geoseg train")
    extra = torch.load(args.checkpoint, map_location="cpu", weights_only=True).get("extra", {})
    model = build_model(card)
    load_state(model, state, args.checkpoint, card)
    model.eval()
    scene = load_raster_scene(spec.data, card.task, min_px=16)
    tiling = Tiling(card.patch_px, spec.val_overlap_px)
    r0, c0, r1, c1 = scene.validation
    val_image, val_valid = scene.image[:, r0:r1, c0:c1], scene.valid[r0:r1, c0:c1]
    report: dict[str, object] = {"epoch": extra.get("epoch")}
    if args.name == "roads":
        predictor = Predictor(model, card=card, batch_size=4)
        (t0, tc0, t1, tc1), *_ = scene.train_rects
        probs = predict_raster(predictor, scene.image[:, t0:t1, tc0:tc1], tiling)
        labels, valid = scene.labels[t0:t1, tc0:tc1], scene.valid[t0:t1, tc0:tc1]
        grid = [round(t, 2) for t in np.arange(0.05, 0.96, 0.05)]
        train_iou = {t: raster_scores(probs, labels, valid, threshold=t)[1] for t in grid}
        threshold = max(grid, key=lambda t: train_iou[t])
        head = model.head  # type: ignore[union-attr]
        with torch.no_grad():
            head.bias[1] -= math.log(threshold / (1 - threshold))
        scores, _ = raster_scores(
            predict_raster(Predictor(model, card=card, batch_size=4), val_image, tiling), scene.labels[r0:r1, c0:c1], val_valid
        )
        report.update(threshold=threshold, train_iou_at_threshold=train_iou[threshold], validation=scores)
        description, out = (card.description, args.out) if args.out else (ROADS_CARD.description, ROADS_WEIGHTS)
    else:
        assert scene.objects is not None

        def without_slivers(ids_px: np.ndarray) -> tuple[np.ndarray, int]:
            ids, counts = np.unique(ids_px[ids_px > 0], return_counts=True)
            return np.where(np.isin(ids_px, ids[counts < MIN_OBJECT_PX]), 0, ids_px), int((counts >= MIN_OBJECT_PX).sum())

        def f1_at(image: np.ndarray, truth: np.ndarray, valid: np.ndarray, threshold: float) -> dict[str, float]:
            params = {**card.params, "score_threshold": threshold}
            pred = predict_objects(model, replace(card, params=params), image, tiling, 2)
            pred[~valid] = 0
            return object_f1(pred, truth, 0.5)

        (t0, tc0, t1, tc1), *_ = scene.train_rects
        train_truth, _ = without_slivers(scene.objects[t0:t1, tc0:tc1])
        grid = [round(float(t), 2) for t in np.arange(0.3, 0.96, 0.05)]
        train_f1 = {t: f1_at(scene.image[:, t0:t1, tc0:tc1], train_truth, scene.valid[t0:t1, tc0:tc1], t)["f1"] for t in grid}
        threshold = max(grid, key=lambda t: (train_f1[t], -abs(t - 0.5)))  # ties: the one nearest 0.5
        card = replace(card, params={**card.params, "score_threshold": threshold})
        truth, n_objects = without_slivers(scene.objects[r0:r1, c0:c1])
        report.update(
            score_threshold=threshold,
            train_f1_at_threshold=train_f1[threshold],
            validation=f1_at(val_image, truth, val_valid, threshold),
            objects_in_validation=n_objects,
        )
        description, out = (card.description, args.out) if args.out else (BUILDINGS_CARD.description, BUILDINGS_WEIGHTS)
    card = replace(card, description=description)
    save_checkpoint(out, model.half(), card, extra={"scores": json.loads(json.dumps(report))})
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, **report}, indent=1))
    print("card:", json.dumps(card.to_dict()))


if __name__ == "__main__":
    main()
