"""GPU check of what every model actor runs (:class:`geoseg.infer.Predictor`), on a lent GPU.

1. Throughput: patches/s of the Predictor (numpy patches in, probabilities or labels out,
   host<->GPU copies included) against the bare model fed tensors already on the GPU, in fp32
   and under geoseg's autocast (bf16), for a U-Net and two torchvision networks (random
   weights: speed does not depend on them). Ratios are Predictor / bare and bf16 / fp32.
2. Accuracy under autocast: the packaged ``mri-tumour`` model on BraTS pat0004 (``--brats``),
   whole-volume Dice (WT/TC/ET) on the CPU in fp32 and on the GPU in fp32 / bf16 / fp16, and
   the share of voxels whose label equals the CPU fp32 one.
3. Packing: the same patches answered in one call, in parts of uneven sizes that share
   batches (as the scheduler packs blocks), and part by part; they must agree bit for bit.

    python bench/gpu_predictor.py --brats ../shared/data/brats2015 [--json out.json]

Needs torch with CUDA; no Ray (the actor is a thin wrapper around the Predictor).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import unet_bench_card  # bench/ is sys.path[0] when run as a script

from geoseg.core.grid import Tiling
from geoseg.evaluate import brats_regions, dice
from geoseg.infer import Predictor
from geoseg.models import (
    ModelCard,
    ModelSpec,
    build_model,
    load_model,
    model_card,
    save_checkpoint,
)

UNET_CARD = unet_bench_card()


def timed(fn, reps: int) -> float:
    fn()  # warm-up (cuDNN autotune, allocator)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def bench_throughput(name: str, ckpt: Path, n: int, batch: int) -> dict:
    spec = ModelSpec(checkpoint=ckpt)
    model, card = load_model(spec)
    model = model.eval().cuda()
    c = len(card.bands)
    rng = np.random.default_rng(0)
    raw = (rng.random((n, c, 256, 256), dtype=np.float32) * 2000).astype(np.float32)
    norm = card.normalisation
    x_gpu = torch.from_numpy(raw).cuda()
    if norm.kind == "affine":
        off = torch.tensor(norm.offset, device="cuda").view(1, -1, 1, 1)
        sc = torch.tensor(norm.scale, device="cuda").view(1, -1, 1, 1)
        x_gpu = (x_gpu - off) / sc

    def bare(dtype: torch.dtype | None) -> None:
        with torch.inference_mode():
            for k in range(0, n, batch):
                if dtype is None:
                    torch.softmax(model(x_gpu[k : k + batch]), 1)
                else:
                    with torch.autocast("cuda", dtype=dtype):
                        torch.softmax(model(x_gpu[k : k + batch]).float(), 1)

    row: dict = {"model": name, "patches": n, "batch": batch}
    row["bare_fp32"] = n / timed(lambda: bare(None), 3)
    row["bare_bf16"] = n / timed(lambda: bare(torch.bfloat16), 3)
    for prec in ("fp32", "bf16"):
        pred = Predictor(spec, batch_size=batch, device="cuda", precision=prec)
        row[f"geoseg_{prec}_probs"] = n / timed(lambda p=pred: p(raw), 3)
        row[f"geoseg_{prec}_labels"] = n / timed(lambda p=pred: p(raw, labels_only=True), 3)
    row["ratio_geoseg_labels_vs_bare_fp32"] = row["geoseg_fp32_labels"] / row["bare_fp32"]
    row["ratio_geoseg_labels_vs_bare_bf16"] = row["geoseg_bf16_labels"] / row["bare_bf16"]
    row["ratio_bf16_vs_fp32_geoseg_labels"] = row["geoseg_bf16_labels"] / row["geoseg_fp32_labels"]
    return row


def packing_check(ckpt: Path, batch: int) -> dict:
    """Is a patch's answer independent of the packing of blocks into calls on this GPU? The
    same 3 * batch + 5 patches as one call, as parts of uneven sizes sharing batches, and one
    part at a time; max |difference| of the probabilities and pixels whose label differs."""
    spec = ModelSpec(checkpoint=ckpt)
    rng = np.random.default_rng(1)
    _, card = load_model(spec)
    x = (rng.random((3 * batch + 5, len(card.bands), 256, 256), dtype=np.float32) * 2000).astype(np.float32)
    cuts = [0, 7, batch + 3, 2 * batch + 1, len(x)]
    parts = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    out: dict = {}
    for prec in ("fp32", "bf16"):
        pred = Predictor(spec, batch_size=batch, device="cuda", precision=prec)
        whole = pred.predict([x])[0]
        packed = pred.predict(parts)[0]
        alone = np.concatenate([pred.predict([p])[0] for p in parts])
        labels = [pred.predict(v, labels_only=True)[0] for v in ([x], parts)]
        out[prec] = {
            "numerics": pred.numerics,
            "max_diff_packed": float(np.abs(whole - packed).max()),
            "max_diff_alone": float(np.abs(whole - alone).max()),
            "labels_differ_packed": int((labels[0] != labels[1]).sum()),
        }
    return out


def bench_mri(brats: Path) -> dict:
    import nibabel as nib

    from geoseg.sources import load_case, open_case
    from geoseg.train import BRATS_LABEL_MAP, normalise_case, predict_volume
    from geoseg.train._data import map_labels

    case = brats / "brats_2013_pat0004_1"
    model, card = load_model(ModelSpec(name="mri-tumour"))
    model.eval()
    info = open_case(case, card.bands)
    image, _ = normalise_case(load_case(info))
    image_ras = np.ascontiguousarray(info.orientation.to_ras(image))
    raw_truth = np.asarray(nib.load(str(case / "OTMultiClass.nii.gz")).dataobj)
    truth_file = map_labels(raw_truth, BRATS_LABEL_MAP, "truth")
    truth = brats_regions(np.ascontiguousarray(info.orientation.to_ras(truth_file)))
    tiling = Tiling(card.patch_px, 32)
    out: dict = {}
    ref = None
    for label, device, precision in (
        ("cpu_fp32", "cpu", "fp32"),
        ("gpu_fp32", "cuda", "fp32"),
        ("gpu_bf16", "cuda", "bf16"),
        ("gpu_fp16", "cuda", "fp16"),
    ):
        predictor = Predictor(model, batch_size=32, device=device, precision=precision, card=card)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        pred = predict_volume(predictor, image_ras, tiling)
        secs = time.perf_counter() - t0
        regions = brats_regions(pred)
        row = {k: round(dice(v, truth[k]), 4) for k, v in regions.items()}
        row["seconds"] = round(secs, 2)
        if ref is None:
            ref = pred
        row["voxels_equal_to_cpu_fp32"] = float((pred == ref).mean())
        out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--brats", type=Path, help="folder holding brats_2013_pat0004_1 (skip the Dice check without it)"
    )
    ap.add_argument("--patches", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_predictor.py needs a CUDA GPU; none is visible")
    result: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "throughput": []}
    print(f"GPU {result['gpu']}, torch {result['torch']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cards = {"unet-32": UNET_CARD}
        for arch in ("deeplabv3_resnet50", "lraspp_mobilenet_v3_large"):
            base = model_card(arch)
            affine = {"kind": "affine", "offset": [1000.0] * 3, "scale": [1000.0] * 3}
            cards[arch] = ModelCard.from_dict(
                {**base.to_dict(), "bands": ["B04", "B03", "B02"], "normalisation": affine}
            )
        for name, card in cards.items():
            ckpt = Path(tmp) / f"{name}.pt"
            torch.manual_seed(0)
            save_checkpoint(ckpt, build_model(card), card)
            row = bench_throughput(name, ckpt, args.patches, args.batch)
            row["packing"] = packing_check(ckpt, 16)
            result["throughput"].append(row)
            print(
                json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}),
                flush=True,
            )
    if args.brats:
        result["mri_amp"] = bench_mri(args.brats)
        for k, v in result["mri_amp"].items():
            print(k, v, flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
