"""Quick-look picture of a geoseg water mask over its scene (used for docs/img/).

    python docs/scripts/quicklook_water.py STORE GROUP SCENE.tif [TRUTH.tif] OUT.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import xarray as xr
from matplotlib.colors import ListedColormap


def main(store: str, group: str, scene: str, out: str, truth: str | None = None) -> None:
    mask = xr.open_zarr(store, group=group).mask.values
    with rasterio.open(scene) as src:
        names = list(src.descriptions)
        idx = [names.index(b) + 1 for b in ("B04", "B03", "B02")] if "B04" in names else [1, 2, 3][: src.count]
        rgb = src.read(idx).astype(np.float32)
    lo, hi = np.percentile(rgb[rgb > 0], (2, 98))
    rgb = np.clip((rgb - lo) / (hi - lo), 0, 1).transpose(1, 2, 0)
    panels = 3 if truth else 2
    fig, ax = plt.subplots(1, panels, figsize=(6 * panels, 6 * mask.shape[0] / mask.shape[1] + 0.6))
    ax[0].imshow(rgb)
    ax[0].set_title("scene (true colour)")
    ax[1].imshow(rgb)
    water = np.ma.masked_where(mask != 1, mask)
    ax[1].imshow(water, cmap=ListedColormap(["#00a6ff"]), alpha=0.85, interpolation="nearest")
    ax[1].set_title("geoseg ndwi: water (blue)")
    if truth:
        with rasterio.open(truth) as t:
            tm = t.read(1) == 1
        comp = np.zeros((*mask.shape, 3), np.float32) + 0.15
        comp[(mask == 1) & tm] = (0.1, 0.8, 0.2)
        comp[(mask != 1) & tm] = (0.9, 0.2, 0.2)
        comp[(mask == 1) & ~tm] = (0.3, 0.5, 1.0)
        ax[2].imshow(comp, interpolation="nearest")
        ax[2].set_title("green: OSM water found, red: missed,\nblue: water not in OSM (big lakes, river)")
    for a in ax:
        a.set_axis_off()
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[-1], a[3] if len(a) == 5 else None)
