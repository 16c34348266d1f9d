"""Road centre lines from the SpaceNet 3 Las Vegas chip, checked against its labelled centre lines
(docs/roads.md).

    python docs/scripts/roads_centrelines.py OUT_FOLDER [docs/img/roads_vegas.png]
    python docs/scripts/roads_centrelines.py OUT_FOLDER docs/img/roads_vegas_model.png roads

With ``roads`` as the third argument, the packaged ``roads`` model runs on the chip itself
(``road_mask_input.tif``) and its centre lines are drawn. Without it, a stand-in TorchScript model (``OUT_FOLDER/standin.pt``,
card name ``roads``, classes background/road) answers with the chip's labelled road mask
(``sample_road_raster_mask.tif``: a 4 m buffer of the labelled centre lines), so everything
after the model is what a mapper gets: the run, the GeoPackage of centre lines merged across
blocks, and their totals. The script prints how far the exported centre lines are from the
labelled ones (``sample_roads_for_masking.geojson``) and draws them over the chip.
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
import shapely
import torch
import yaml

from geoseg.models import ModelCard
from geoseg.pipeline import run_job
from geoseg.sinks import export_vectors
from geoseg.spec import parse_spec

SHARED = Path(os.environ.get("GEOSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
DATA = SHARED / "spacenet3_vegas_roads"
MASK = DATA / "sample_road_raster_mask.tif"
CHIP = DATA / "road_mask_input.tif"
LINES = DATA / "sample_roads_for_masking.geojson"


class LabelledRoads(torch.nn.Module):
    """(N, 1, P, P) 0/255 road mask -> (N, 2, P, P) logits: road where the mask is 255."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        road = x[:, 0:1].to(torch.float32) / 255.0 - 0.5
        return torch.cat([torch.zeros_like(road), road], dim=1)


def standin(folder: Path) -> Path:
    path = folder / "standin.pt"
    torch.jit.script(LabelledRoads()).save(str(path))
    card = ModelCard("roads", "torchscript", ("background", "road"), ("1",), patch_px=256, overlap_px=0,
                     description="stand-in: the labelled SpaceNet road mask as the model's answer")  # fmt: skip
    (folder / "standin.card.yaml").write_text(yaml.safe_dump(card.to_dict()))
    return path


def main(folder: str, picture: str | None = None, which: str = "standin") -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    source = CHIP if which == "roads" else MASK
    model = {"name": "roads"} if which == "roads" else {"file": str(standin(out))}
    store = out / f"{which}.zarr"
    spec = {"inputs": [str(source)], "output": str(store), "model": model, "progress": False, "block_px": 512}
    report = run_job(parse_spec(spec))
    assert report.ok, report.summary()
    print(report.summary())
    gpkg = out / f"{which}.gpkg"
    totals = export_vectors(store, source.stem, gpkg, "gpkg", "lines")
    print(totals.line())
    ours = gpd.read_file(gpkg, layer="road")
    truth = gpd.read_file(LINES).to_crs(ours.crs)
    metric = ours.estimate_utm_crs()
    a, b = ours.to_crs(metric), truth.to_crs(metric)
    a_lines, b_lines = shapely.union_all(list(a.geometry)), shapely.union_all(list(b.geometry))
    probe = shapely.points(shapely.get_coordinates(shapely.segmentize(a_lines, 0.5)))
    d = shapely.distance(b_lines, probe)
    back = shapely.distance(a_lines, shapely.points(shapely.get_coordinates(shapely.segmentize(b_lines, 0.5))))
    print(f"networks {len(ours)}, length {a_lines.length:.0f} m against {b_lines.length:.0f} m labelled; "
          f"exported lines to labelled: median {np.median(d):.2f} m, 95 % {np.percentile(d, 95):.2f} m; "
          f"labelled to exported: median {np.median(back):.2f} m, 95 % {np.percentile(back, 95):.2f} m")  # fmt: skip
    far = a_lines.difference(b_lines.buffer(3.0)).length
    missed = b_lines.difference(a_lines.buffer(3.0)).length
    print(f"exported line more than 3 m from a labelled one: {far:.0f} m ({far / a_lines.length:.1%}); "
          f"labelled line more than 3 m from an exported one: {missed:.0f} m ({missed / b_lines.length:.1%})")  # fmt: skip
    if picture:
        draw(ours, truth, picture, "the roads model" if which == "roads" else "geoseg")


def draw(ours: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, out: str, who: str = "geoseg") -> None:
    with rasterio.open(CHIP) as src:
        img = src.read(1).astype(np.float32)
        left, bottom, right, top = src.bounds
    lo, hi = np.percentile(img[img > 0], (2, 98))
    fig, ax = plt.subplots(figsize=(8, 8.4))
    ax.imshow(np.clip((img - lo) / (hi - lo), 0, 1), cmap="gray", extent=(left, right, bottom, top))
    truth.plot(ax=ax, color="#ffd400", linewidth=5, alpha=0.55)
    ours.plot(ax=ax, color="#ff2a2a", linewidth=1.2)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_axis_off()
    ax.set_title(f"SpaceNet 3 Las Vegas: centre lines from {who} (red) over labelled centre lines (yellow)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
