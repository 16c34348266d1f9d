"""What ``geoseg.infer.optimise_for_cpu`` buys: the bare forward pass, as loaded against optimised.

    python bench/cpu_optimise.py [--batch 16] [--repeat 3] [--models mri-tumour unet lraspp_mobilenet_v3_large]

For each model: random 256 x 256 inputs with the model's channels, ``torch.set_num_threads(os.cpu_count())``,
``torch.inference_mode``; one warm-up pass, then the median of ``--repeat`` timed passes of one
batch, for the model as ``load_model`` returns it and for a second copy after
``optimise_for_cpu`` (BatchNorm folded into the convolution before it, ``channels_last``
weights and inputs). Prints ms per patch, the ratio, and the largest difference between the
two outputs. ``unet`` is the benchmarks' random-weight U-Net (base 32, depth 4, 4 bands); the
torchvision models have random weights too (no download), which does not change their speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import git_state, unet_bench_card  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geoseg.infer import optimise_for_cpu
from geoseg.models import ModelCard, ModelSpec, build_model, load_model, model_card


def build(name: str) -> tuple[torch.nn.Module, ModelCard]:
    if name == "unet":
        card = unet_bench_card()
        torch.manual_seed(0)
        return build_model(card).eval(), card
    if name == "mri-tumour":
        model, card = load_model(ModelSpec(name=name))
        return model.eval(), card
    card = model_card(name)
    torch.manual_seed(0)
    return build_model(card).eval(), card


def timed(model: torch.nn.Module, x: torch.Tensor, repeat: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``repeat`` passes after one warm-up, and the output."""
    with torch.inference_mode():
        y = model(x)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            y = model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), y["out"] if isinstance(y, dict) else y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        nargs="+",
        default=["mri-tumour", "unet", "lraspp_mobilenet_v3_large", "deeplabv3_resnet50"],
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"{git_state()}; torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(
        "| model | as loaded, ms/patch | optimised, ms/patch | speed-up | max abs difference |\n|---|---|---|---|---|"
    )
    for name in args.models:
        model, card = build(name)
        x = torch.randn(
            args.batch, len(card.bands) * (2 * int(card.params.get("context_slices", 0)) + 1), 256, 256
        )
        plain_s, plain_y = timed(model, x, args.repeat)
        assert optimise_for_cpu(model)
        fast_s, fast_y = timed(model, x.contiguous(memory_format=torch.channels_last), args.repeat)
        diff = (plain_y - fast_y).abs().max().item()
        ms = 1000 / args.batch
        print(
            f"| {name} | {plain_s * ms:.1f} | {fast_s * ms:.1f} | {plain_s / fast_s:.2f}x | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
