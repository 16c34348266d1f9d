"""Cases per hour: ``geoseg run`` on BraTS cases against MONAI's sliding-window inference of the
same model on the same slices, measured in one run, and how far the two outputs agree.

    python bench/mri_vs_monai.py [--data ../shared/data/brats2015] [--model mri-tumour | --checkpoint X.pt]

Both sides do the same work per case: load the NIfTI modalities, z-score over the foreground,
reorient to RAS, run every axial slice through the model on the 256x256 grid (overlap 32 px),
argmax, reorient back, drop components under the card's ``min_lesion_ml``. geoseg runs it on
Ray (read tasks, one model actor, stitch/write tasks, Zarr output, lesion table); MONAI runs
``sliding_window_inference`` in this process with all cores. Nothing is timed twice: each
side's wall time covers all cases. One difference in work is geoseg's own: its model actor
answers all-zero patches (the background slices of a normalised case) from one cached forward
pass, where MONAI runs every slice.

geoseg also runs the model optimised for the CPU (``geoseg.infer.optimise_for_cpu``: BatchNorm
folded into the convolutions, ``channels_last``). MONAI is timed twice: with the model as loaded
(what a MONAI user runs) and with the model optimised the same way, so the two ratios separate
what the optimisation buys from what the pipeline does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
import zarr

from geoseg.core.lesions import drop_small_lesions, label_lesions
from geoseg.core.volume import normalise_case
from geoseg.evaluate import brats_regions, dice
from geoseg.infer import optimise_for_cpu
from geoseg.models import ModelSpec, load_model
from geoseg.pipeline import release_workers, run_job
from geoseg.sources import load_case, open_case
from geoseg.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]
MONAI_AS_LOADED = "MONAI sliding_window_inference (model as loaded)"
MONAI_OPTIMISED = "MONAI sliding_window_inference (model optimised as geoseg does)"


def monai_case(
    model: torch.nn.Module,
    case: Path,
    modalities: tuple[str, ...],
    overlap_px: int,
    min_lesion_ml: float,
    channels_last: bool = False,
) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    info = open_case(case, modalities)
    image, _ = normalise_case(load_case(info), info.path)
    ras = np.ascontiguousarray(info.orientation.to_ras(image))  # (C, X, Y, Z)
    x = torch.from_numpy(ras).permute(3, 0, 1, 2).contiguous()  # (Z, C, X, Y): slices as a batch

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return model(batch.contiguous(memory_format=torch.channels_last) if channels_last else batch)

    with torch.inference_mode():
        logits = sliding_window_inference(
            x, roi_size=(256, 256), sw_batch_size=16, predictor=predictor, overlap=overlap_px / 256,
            mode="constant", padding_mode="reflect",
        )  # fmt: skip
    labels_ras = logits.argmax(1).to(torch.uint8).permute(1, 2, 0).numpy()  # (X, Y, Z)
    mask = np.ascontiguousarray(info.orientation.from_ras(labels_ras))
    # the same post-processing the model card asks geoseg for: drop components under min_lesion_ml
    ids, n = label_lesions(mask, range(1, int(logits.shape[1])))
    return drop_small_lesions(mask, ids, n, info.voxel_ml, min_lesion_ml)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "brats2015")
    ap.add_argument("--model", default="mri-tumour")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--warm-runs", type=int, default=1, help="geoseg runs after the cold one (actors reused)")
    ap.add_argument("--threads-per-worker", type=int, help="the spec's threads_per_worker (default geoseg's)")
    args = ap.parse_args()
    cases = sorted(p for p in args.data.glob("brats_*") if p.is_dir())
    if not cases:
        raise SystemExit(f"no BraTS cases under {args.data}")
    model_cfg = {"checkpoint": str(args.checkpoint)} if args.checkpoint else {"name": args.model}
    spec_model = ModelSpec(checkpoint=args.checkpoint) if args.checkpoint else ModelSpec(name=args.model)
    cpus = os.cpu_count() or 1
    print(f"{len(cases)} cases, model {model_cfg}, {cpus} CPUs, torch {torch.__version__}")

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s (not counted)")
    scratch = Path(tempfile.mkdtemp(prefix="geoseg-bench-"))
    try:
        runs = {}
        labels = ["geoseg (cold: actor start + weights)"]
        labels += [f"geoseg (warm actors, run {i + 1})" for i in range(args.warm_runs)]
        extra = {"threads_per_worker": args.threads_per_worker} if args.threads_per_worker else {}
        for label in labels:
            out = scratch / f"{len(runs)}.zarr"
            spec = parse_spec({"inputs": [str(c) for c in cases], "output": str(out), "model": model_cfg,
                               "progress": False, "tiling": {"overlap_px": args.overlap}, **extra})  # fmt: skip
            t = time.perf_counter()
            report = run_job(spec)
            runs[label] = time.perf_counter() - t
            assert report.ok, report.summary()
            print(f"{label}: {runs[label]:.1f} s; {report.summary().splitlines()[-1]}")
        release_workers()
        ray.shutdown()

        torch.set_num_threads(cpus)
        monai_masks = {}
        for label, optimised in ((MONAI_AS_LOADED, False), (MONAI_OPTIMISED, True)):
            model, card = load_model(spec_model)
            model.eval()
            channels_last = optimised and optimise_for_cpu(model)
            min_ml = float(card.params.get("min_lesion_ml", 0.0))
            t = time.perf_counter()
            monai_masks[label] = {
                c.name: monai_case(model, c, card.bands, args.overlap, min_ml, channels_last) for c in cases
            }
            runs[label] = time.perf_counter() - t
            print(f"{label}: {runs[label]:.1f} s", flush=True)

        print("\n| run | wall s | cases/hour |\n|---|---|---|")
        for label, s in runs.items():
            print(f"| {label} | {s:.1f} | {len(cases) * 3600 / s:.0f} |")
        for base in (MONAI_AS_LOADED, MONAI_OPTIMISED):
            for label in [k for k in runs if k.startswith("geoseg")]:
                print(f"speed {label} / {base}: {runs[base] / runs[label]:.2f}x")

        print(
            "\n| case | voxels equal, geoseg vs MONAI | whole-tumour Dice geoseg vs MONAI "
            "| voxels equal, MONAI optimised vs as loaded |\n|---|---|---|---|"
        )
        for c in cases:
            g = zarr.open_group(str(scratch / "1.zarr"), path=c.name, mode="r")["mask"][:]
            m = monai_masks[MONAI_AS_LOADED][c.name]
            wt = dice(brats_regions(g)["whole_tumour"], brats_regions(m)["whole_tumour"])
            same = (m == monai_masks[MONAI_OPTIMISED][c.name]).mean()
            print(f"| {c.name} | {(g == m).mean():.6f} | {wt:.4f} | {same:.6f} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
