"""geoseg's instance merge against SAHI's GREEDYNMM on the same patch predictions, and the cost
of instances in a pipeline run.

1. **Merge quality.** A generated scene (tests/blob_model.py ``blob_scene``: discs and boxes
   across seams, a lake larger than a block with an island, a 3 px river across the scene, a U,
   touching objects) is cut on geoseg's 256 px grid (overlap 32). A simulated detector answers
   each patch: every blob it sees is an instance whose mask is, at random, eroded or dilated by
   one pixel or left alone, with a random score in [0.5, 1). The same patch predictions go to

   - geoseg: :func:`geoseg.core.detections.resolve_patch` per patch, then ``merge_scene``
     (mask overlap on the shared pixels, union-find), ``merge_overlap`` 0.5;
   - SAHI (the ``sahi`` package, as its sliced prediction does): ``ObjectPrediction`` per
     instance with the patch's ``shift_amount`` and ``full_shape``, shifted, then
     ``GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=False)``,
     SAHI's default postprocess for sliced inference.

   Each result is scored against the truth (the scene's 4-connected components of one value):
   object-level precision, recall and F1 at mask IoU 0.5 (a predicted object matches the truth
   object it overlaps with IoU >= 0.5; at most one can). geoseg's objects are its ids; SAHI's
   are its merged predictions' masks.

2. **The cost of instances.** Patches per second of ``geoseg run`` with the scripted blob model
   (an instance model) against the same model's bare forward pass (Predictor, in process, the
   same patches, one torch thread in both: the scripted model is many tiny ops, which extra
   threads only slow down on a busy machine), and of ``--model ndwi`` with and without ``--instances components``, each
   pair in this one run. Nothing here asserts a time.

    python bench/instances_vs_sahi.py                   # about 5 min on 2 cores
    python bench/instances_vs_sahi.py --seeds 0 1 2 --skip-cost
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import git_state

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from blob_model import blob_scene, reference_objects, write_blob_model  # noqa: E402
from scipy import ndimage  # noqa: E402

from geoseg.core.detections import merge_scene, resolve_patch  # noqa: E402
from geoseg.core.grid import Tiling, patch_grid  # noqa: E402
from geoseg.core.stitch import extract_patches  # noqa: E402

N_CLASSES = 3


def noisy_detections(patch: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, int, float]]:
    """The simulated detector on one (P, P) patch of codes: (bool mask, class, score) per blob."""
    out = []
    for c in np.unique(patch[patch > 0]):
        lab, k = ndimage.label(patch == c)
        for j in range(1, k + 1):
            m = lab == j
            noise = rng.integers(0, 3)
            if noise == 1:
                m = ndimage.binary_dilation(m)
            elif noise == 2 and m.sum() > 20:
                m = ndimage.binary_erosion(m)
            if m.any():
                out.append((m, 1 + (int(c) - 1) % (N_CLASSES - 1), float(rng.uniform(0.5, 1.0))))
    return out


def f1_at_iou(pred_masks: list[np.ndarray], truth: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float]:
    """(precision, recall, F1) of predicted object masks against truth labels at mask IoU."""
    n_truth = int(truth.max())
    sizes = np.bincount(truth.ravel(), minlength=n_truth + 1)
    matched = set()
    for m in pred_masks:
        hits = np.bincount(truth[m], minlength=n_truth + 1)
        hits[0] = 0
        k = int(np.argmax(hits))
        if k and hits[k] / (m.sum() + sizes[k] - hits[k]) >= threshold:
            matched.add(k)  # IoU >= 0.5 is one-to-one: no other mask can reach it for k
    tp = len(matched)
    p = tp / len(pred_masks) if pred_masks else 0.0
    r = tp / n_truth if n_truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def compare(seed: int, shape: tuple[int, int]) -> dict[str, float]:
    from sahi.postprocess.combine import GreedyNMMPostprocess
    from sahi.prediction import ObjectPrediction
    from sahi.utils.cv import get_coco_segmentation_from_bool_mask

    codes = blob_scene(shape, seed)
    truth = reference_objects(codes)
    grid = patch_grid(shape, Tiling(256, 32))
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    patches = extract_patches(codes[None], (0, 0), grid, ids)
    rng = np.random.default_rng(seed)
    dets = {ij: noisy_detections(p[0], rng) for ij, p in zip(ids, patches, strict=True)}

    t0 = time.perf_counter()
    records = {}
    for ij, found in dets.items():
        if not found:
            records[ij] = resolve_patch(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 1, 256, 256)), N_CLASSES)
            continue
        masks = np.stack([m for m, _, _ in found]).astype(np.float32)[:, None]
        boxes = np.array([_box(m) for m, _, _ in found], np.float64)
        records[ij] = resolve_patch(boxes, np.array([c for _, c, _ in found]), np.array([s for _, _, s in found]), masks,
                                    N_CLASSES, 0.0, 0.5)  # fmt: skip
    geo_ids, objects = merge_scene(grid, records, 0.5)
    t_geoseg = time.perf_counter() - t0
    geo_masks = [geo_ids == k for k in objects.instance_id]

    t0 = time.perf_counter()
    preds = []
    for (iy, ix), found in dets.items():
        y0, x0, y1, x1 = grid.window(iy, ix)
        for m, c, s in found:
            m = m[: y1 - y0, : x1 - x0]  # padding of a small scene's patch is not the scene
            if not m.any():
                continue
            seg = get_coco_segmentation_from_bool_mask(m)
            if not seg:
                continue
            op = ObjectPrediction(bbox=_box(m), category_id=c, category_name=f"c{c}", segmentation=seg, score=s,
                                  shift_amount=[x0, y0], full_shape=[shape[0], shape[1]])  # fmt: skip
            preds.append(op.get_shifted_object_prediction())
    merged = GreedyNMMPostprocess(match_threshold=0.5, match_metric="IOS", class_agnostic=False)(preds)
    t_sahi = time.perf_counter() - t0
    sahi_masks = [np.asarray(p.mask.bool_mask, bool) for p in merged if p.mask is not None]

    gp, gr, gf = f1_at_iou(geo_masks, truth)
    sp, sr, sf = f1_at_iou(sahi_masks, truth)
    print(f"seed {seed}: {truth.max()} objects, {sum(map(len, dets.values()))} patch detections in {len(ids)} patches")
    print(f"  geoseg  {len(geo_masks):4d} objects  P {gp:.3f}  R {gr:.3f}  F1 {gf:.3f}  merge {t_geoseg:.2f} s")
    print(f"  SAHI    {len(sahi_masks):4d} objects  P {sp:.3f}  R {sr:.3f}  F1 {sf:.3f}  merge {t_sahi:.2f} s")
    return {"geoseg_f1": gf, "sahi_f1": sf}


def _box(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def cost(workdir: Path) -> None:
    """Patches/s of instance runs against their baselines, in this process's private Ray."""
    import ray
    from conftest import write_raster

    from geoseg.example import write_scene
    from geoseg.infer import Predictor
    from geoseg.models import ModelSpec
    from geoseg.pipeline import run_job
    from geoseg.spec import parse_spec

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)

    def rate(scene: Path, model: dict, out: str, **kw: object) -> float:
        best = 0.0
        for i in range(2):  # the first run starts the actors; the second is timed warm
            spec = parse_spec({"inputs": [str(scene)], "output": str(workdir / f"{out}{i}.zarr"), "model": model,
                               "progress": False, "workers": 1, **kw})  # fmt: skip
            r = run_job(spec)
            assert r.ok, r
            best = max(best, r.patches_forwarded / r.run_seconds)
        return best

    codes = blob_scene((1536, 1536), 7)
    scene = write_raster(workdir / "blobs.tif", codes[None], descriptions=["code"])
    model = write_blob_model(workdir / "model", N_CLASSES)
    inst = rate(scene, {"file": str(model)}, "blob", threads_per_worker=1)  # as the bare pass below
    grid = patch_grid(codes.shape, Tiling(256, 32))
    ids = [(iy, ix) for iy in range(grid.n_yx[0]) for ix in range(grid.n_yx[1])]
    patches = extract_patches(codes[None], (0, 0), grid, ids)
    pred = Predictor(ModelSpec(file=model), batch_size=8, threads=1)
    t0 = time.perf_counter()
    pred(patches)
    bare = len(ids) / (time.perf_counter() - t0)
    print(f"blob instance model: geoseg run {inst:.1f} patches/s, bare forward {bare:.1f} patches/s: ratio {inst / bare:.2f}")

    water = workdir / "water.tif"
    write_scene(water, (3072, 3072))
    plain = rate(water, {"name": "ndwi"}, "ndwi")
    comps = rate(water, {"name": "ndwi"}, "ndwi_inst", instances="components")
    print(f"ndwi: {plain:.0f} patches/s without instances, {comps:.0f} with --instances components: ratio {comps / plain:.2f}")
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--shape", type=int, nargs=2, default=[1100, 1300])
    ap.add_argument("--skip-cost", action="store_true", help="only the merge comparison")
    ap.add_argument("--skip-merge", action="store_true", help="only the cost of instances")
    args = ap.parse_args()
    print(f"geoseg {git_state()}")
    if not args.skip_merge:
        rows = [compare(s, tuple(args.shape)) for s in args.seeds]
        g = np.mean([r["geoseg_f1"] for r in rows])
        s = np.mean([r["sahi_f1"] for r in rows])
        print(f"mean F1 at IoU 0.5 over {len(rows)} scenes: geoseg {g:.3f}, SAHI GREEDYNMM {s:.3f}: ratio {g / s:.2f}")
    if not args.skip_cost:
        with tempfile.TemporaryDirectory() as tmp:
            cost(Path(tmp))


if __name__ == "__main__":
    main()
