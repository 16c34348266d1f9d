"""Shared by the benchmark scripts (run as ``python bench/NAME.py``, so this folder is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geoseg.models import ModelCard

REPO = Path(__file__).resolve().parents[1]


def unet_bench_card() -> ModelCard:
    """The benchmarks' U-Net: base 32, depth 4, 4 bands scaled around 1000, 2 classes, random weights."""
    from geoseg.models import ModelCard, Normalisation

    return ModelCard(
        name="unet-bench",
        architecture="unet",
        classes=("a", "b"),
        bands=("B02", "B03", "B04", "B08"),
        normalisation=Normalisation("affine", (1000.0,) * 4, (1000.0,) * 4),
        params={"base_channels": 32, "depth": 4},
    )


def git_state() -> str:
    """The commit measured, and whether geoseg/ differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "geoseg"], cwd=REPO, capture_output=True, text=True
        ).stdout.split("\n")
    except OSError:
        return "? (no git)"
    changed = [ln[3:] for ln in dirty if ln.strip()]
    return head.stdout.strip() + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (clean geoseg/)")


def scene_path(workdir: Path, size: int) -> Path:
    """A generated size x size 4-band scene in ``workdir`` (written once, reused after)."""
    from geoseg.example import write_scene  # noqa: PLC0415

    path = workdir / f"scene_{size}.tif"
    if not path.exists():
        part = workdir / f".scene_{size}.tif.part"
        t0 = time.perf_counter()
        write_scene(part, (size, size))
        os.replace(part, path)
        print(f"wrote {path} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path
