"""The packaged ``buildings`` model on the SpaceNet 4 Atlanta chip, as a user runs it (docs/instances.md).

    python docs/scripts/buildings_atlanta.py OUT_FOLDER [docs/img/buildings_atlanta.png]

Runs ``geoseg run -i sample_geotiff.tif -m buildings`` into ``OUT_FOLDER/buildings.zarr``,
exports the objects as GeoParquet, matches them one-to-one with the labelled footprints
(``geotiff_labels.geojson``) by polygon IoU >= 0.5, greedily from the highest IoU, and prints
object F1 on the training rows (0-629) and on the validation rows (630-899) separately; an
object belongs to the part that holds its centroid. Draws both over the chip.
The data is read from ../shared/data beside the repository, or from $GEOSEG_SHARED_DATA.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import rasterio

from geoseg.pipeline import run_job
from geoseg.sinks import export_vectors
from geoseg.spec import parse_spec

SHARED = Path(os.environ.get("GEOSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
DATA = SHARED / "spacenet4_atlanta_buildings"
CHIP = DATA / "sample_geotiff.tif"
LABELS = DATA / "geotiff_labels.geojson"
SPLIT_ROW = 630  # jobs/train_buildings.yaml: validation is rows 0.7-1.0 of 900


def matches(ours: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, min_iou: float = 0.5) -> list[tuple[int, int, float]]:
    """(our index, label index, IoU) pairs, one-to-one, greedy by IoU."""
    pairs = []
    for i, a in enumerate(ours.geometry):
        for j, b in enumerate(truth.geometry):
            if a.intersects(b):
                iou = a.intersection(b).area / a.union(b).area
                if iou >= min_iou:
                    pairs.append((iou, i, j))
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for iou, i, j in sorted(pairs, reverse=True):
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j, iou))
    return out


def main(folder: str, picture: str | None = None) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "buildings.zarr"
    spec = {"inputs": [str(CHIP)], "output": str(store), "model": {"name": "buildings"}, "progress": False}
    report = run_job(parse_spec(spec))
    assert report.ok, report.summary()
    print(report.summary())
    parquet = out / "buildings.parquet"
    print(export_vectors(store, CHIP.stem, parquet, "geoparquet").line())
    ours = gpd.read_parquet(parquet)
    with rasterio.open(CHIP) as src:
        transform, crs = src.transform, src.crs
        img = src.read(1).astype(np.float32)
        left, bottom, right, top = src.bounds
    truth = gpd.read_file(LABELS).to_crs(crs)
    split_y = (transform * (0, SPLIT_ROW))[1]
    pairs = matches(ours, truth)
    for part, inside in (("training rows 0-629", lambda g: g.centroid.y > split_y),
                         ("validation rows 630-899", lambda g: g.centroid.y <= split_y)):  # fmt: skip
        mine = {i for i, g in enumerate(ours.geometry) if inside(g)}
        theirs = {j for j, g in enumerate(truth.geometry) if inside(g)}
        tp = sum(1 for i, j, _ in pairs if j in theirs)
        fp, fn = len(mine) - sum(1 for i, _, _ in pairs if i in mine), len(theirs) - tp
        f1 = 2 * tp / max(1, 2 * tp + fp + fn)
        print(f"{part}: {len(theirs)} labelled, {len(mine)} found, tp {tp} fp {fp} fn {fn}, object F1@0.5 {f1:.2f}")
    if picture:
        lo, hi = np.percentile(img[img > 0], (2, 98))
        fig, ax = plt.subplots(figsize=(8, 8.4))
        ax.imshow(np.clip((img - lo) / (hi - lo), 0, 1), cmap="gray", extent=(left, right, bottom, top))
        truth.boundary.plot(ax=ax, color="#ffd400", linewidth=3, alpha=0.7)
        hit = {i for i, _, _ in pairs}
        colours = ["#2aff2a" if i in hit else "#ff2a2a" for i in range(len(ours))]
        ours.boundary.plot(ax=ax, color=colours, linewidth=1.3)
        ax.axhline(split_y, color="#00c8ff", linewidth=1, linestyle="--")
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_axis_off()
        ax.set_title("SpaceNet 4 Atlanta, the buildings model: labelled footprints (yellow), its objects\n"
                     "(green: IoU >= 0.5 with a label, red: not); validation below the dashed line")  # fmt: skip
        fig.tight_layout()
        fig.savefig(picture, dpi=80)
        print(f"wrote {picture}")


if __name__ == "__main__":
    main(*sys.argv[1:])
