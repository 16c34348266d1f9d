"""NDWI and MNDWI, fixed and Otsu thresholds, against OSM water of Sentinel-2 T33UUU (docs/water.md).

    python docs/scripts/water_recall.py OUT_FOLDER [docs/img/water_mndwi_otsu.png]

The data is read from ../shared/data beside the repository, or from $GEOSEG_SHARED_DATA.

Runs geoseg four times on ../shared/data/sentinel2_T33UUU (a store each under OUT_FOLDER), prints
a Markdown table (OSM labels positives only: recall, recall on 1-px-eroded polygon interiors,
and the share of valid pixels mapped as water, which recall alone cannot see) and draws the two
Otsu masks against OSM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import xarray as xr
from scipy import ndimage

from geoseg.pipeline import run_job
from geoseg.spec import parse_spec

SHARED = Path(os.environ.get("GEOSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
DATA = SHARED / "sentinel2_T33UUU"
SCENE = DATA / "S2L1C_T33UUU_20170216_10m_B02-B03-B04-B08-B11-B12.tif"
TRUTH = DATA / "osm_water_mask_10m.tif"
RUNS = [("ndwi", 0.0), ("ndwi", "otsu"), ("mndwi", 0.0), ("mndwi", "otsu")]


def main(folder: str, picture: str | None = None) -> None:
    with rasterio.open(TRUTH) as t:
        truth = t.read(1) == 1
    interior = ndimage.binary_erosion(truth)
    masks = {}
    print("| model | threshold | chosen | recall | recall (interiors) | share mapped as water |")
    print("|---|---|---|---|---|---|")
    for model, threshold in RUNS:
        out = Path(folder) / f"{model}_{threshold}.zarr"
        spec = {"inputs": [str(SCENE)], "output": str(out), "model": {"name": model, "params": {"threshold": threshold}},
                "progress": False}  # fmt: skip
        report = run_job(parse_spec(spec))
        assert report.ok, report.summary()
        ds = xr.open_zarr(out, group=SCENE.stem)
        mask = ds.mask.values
        chosen = ds.attrs["geoseg"].get("threshold", {}).get("value", threshold)
        valid = mask != 255
        hit = (mask == 1) & valid
        recall = (hit & truth).sum() / (truth & valid).sum()
        inner = (hit & interior).sum() / (interior & valid).sum()
        share = hit.sum() / valid.sum()
        print(f"| {model} | {threshold} | {float(chosen):.4f} | {recall:.3f} | {inner:.3f} | {share:.3f} |")
        masks[(model, threshold)] = (mask, float(chosen))
    if picture:
        draw(masks, truth, picture)


def draw(masks: dict, truth: np.ndarray, out: str) -> None:
    with rasterio.open(SCENE) as src:
        names = list(src.descriptions)
        rgb = src.read([names.index(b) + 1 for b in ("B04", "B03", "B02")]).astype(np.float32)
    lo, hi = np.percentile(rgb[rgb > 0], (2, 98))
    rgb = np.clip((rgb - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
    shown = [("ndwi", "otsu"), ("mndwi", "otsu")]
    h, w = truth.shape
    fig, ax = plt.subplots(1, 3, figsize=(15, 15 * h / w / 3 + 0.8))
    ax[0].imshow(rgb)
    ax[0].set_title("Sentinel-2 T33UUU 2017-02-16 (true colour)")
    for a, key in zip(ax[1:], shown, strict=True):
        mask, t = masks[key]
        comp = np.zeros((h, w, 3), np.float32) + 0.12
        comp[(mask == 1) & ~truth] = (0.2, 0.55, 1.0)  # mapped, not in OSM (OSM lists 1-50 ha only)
        comp[(mask == 1) & truth] = (0.1, 0.85, 0.25)  # OSM water found
        comp[(mask != 1) & truth] = (1.0, 0.15, 0.1)  # OSM water missed
        comp[mask == 255] = 0.0
        a.imshow(comp, interpolation="nearest")
        a.set_title(f"{key[0]}, Otsu threshold {t:.3f}")
    for a in ax:
        a.set_axis_off()
    fig.text(0.5, 0.01, "green: OSM water found   red: OSM water missed   blue: mapped, not in OSM (unlabelled lakes, "
             "river, or false)", ha="center")  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
