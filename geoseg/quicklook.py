"""Quicklooks: one PNG per output, to check thousands of results by eye.

A scene: the input at reduced resolution (decimated reads, which use the file's overviews when
it has them; memory bounded by the picture, not the scene), as RGB where the file's bands name
red, green and blue (else one band), with a 2-98 percentile stretch; the mask over it in the
legend's class colours, nodata in grey. An MRI case: the slices through the largest lesion in
three planes (sagittal, coronal, axial, in RAS orientation), the mask over the first modality.

Pictures are composed as arrays (Pillow only writes them and draws the legend's text), so a
pixel of the picture is a known pixel of the output: the tests check the colours where the mask is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from geoseg._remote import is_url, url_name
from geoseg.errors import SourceError, StoreError
from geoseg.sinks import StoreLike, array, attrs, open_group
from geoseg.sinks._export import finished_group, output_file
from geoseg.sinks._zarr import INSTANCE_FILL

__all__ = ["quicklook", "class_colours", "NODATA_COLOUR"]

NODATA_COLOUR = (128, 128, 128)
_PALETTE = np.array(
    [  # class 0 is left see-through; the rest take these in turn (Tableau 10, no grey)
        (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
        (23, 190, 207), (227, 119, 194), (140, 86, 75), (188, 189, 34),
    ],
    np.uint8,
)  # fmt: skip
_ALPHA = 0.55
_LEGEND_ROW = 18


def class_colours(n_classes: int) -> np.ndarray:
    """(n_classes, 3) uint8 RGB: class 0 black (drawn see-through), then a fixed palette in turn."""
    out = np.zeros((n_classes, 3), np.uint8)
    for k in range(1, n_classes):
        out[k] = _PALETTE[(k - 1) % len(_PALETTE)]
    return out


def _stretch(band: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(h, w) to uint8 by the 2nd and 98th percentiles of the valid pixels."""
    values = band[valid] if valid.any() else band.ravel()
    lo, hi = (np.percentile(values, (2, 98)) if values.size else (0.0, 1.0))
    scaled = (band.astype(np.float64) - lo) / max(float(hi - lo), 1e-12)
    return np.clip(scaled * 255, 0, 255).astype(np.uint8)


def _overlay(base: np.ndarray, labels: np.ndarray, colours: np.ndarray, nodata: int | None) -> np.ndarray:
    """(h, w, 3) uint8 ``base`` with every label > 0 blended in its colour, nodata in grey."""
    out = base.astype(np.float64)
    idx = labels.astype(np.int64)
    shown = (idx > 0) & (idx < len(colours))
    if nodata is not None:
        shown &= idx != nodata
    out[shown] = (1 - _ALPHA) * out[shown] + _ALPHA * colours[idx[shown]]
    if nodata is not None:
        out[idx == nodata] = NODATA_COLOUR
    return np.rint(out).astype(np.uint8)


def _legend(width: int, entries: list[tuple[str, tuple[int, int, int]]], title: str) -> np.ndarray:
    """A strip (h, width, 3) uint8: the title, then a swatch and a name per entry."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415  (only pictures need Pillow)

    font = ImageFont.load_default(size=12)
    rows = 1 + len(entries)
    img = Image.new("RGB", (max(width, 1), rows * _LEGEND_ROW + 4), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for k, (name, colour) in enumerate(entries, start=1):
        y = k * _LEGEND_ROW + 3
        draw.rectangle([4, y, 16, y + 12], fill=colour, outline=(0, 0, 0))
        draw.text((22, y), name, fill=(0, 0, 0), font=font)
    return np.asarray(img)


def _save(picture: np.ndarray, out: str | os.PathLike[str]) -> Path:
    from PIL import Image  # noqa: PLC0415

    if not str(out).lower().endswith(".png"):
        raise StoreError(f"{out}: quicklooks are PNG pictures; give a .png name with --out")
    with output_file(out, "picture") as staging:
        Image.fromarray(picture).save(staging, format="PNG")
    return Path(out)


def _nearest(n_src: int, n_dst: int) -> np.ndarray:
    """Source indices of a nearest-neighbour resampling from ``n_src`` to ``n_dst`` pixels
    (GDAL's: the pixel under each destination pixel's centre)."""
    return np.minimum(((np.arange(n_dst) + 0.5) * n_src / n_dst).astype(np.int64), n_src - 1)


def _instance_labels(ids: np.ndarray) -> np.ndarray:
    """Instance ids as palette indices 1..9 (0 background, 255 nodata), scattered so that
    neighbouring ids (numbered in raster order) mostly differ in colour."""
    out = np.where(ids > 0, (ids.astype(np.int64) * 7919) % len(_PALETTE) + 1, 0)
    return np.where(ids == INSTANCE_FILL, 255, out)


def _scene(
    g: Any, a: dict[str, Any], meta: dict[str, Any], out: str | os.PathLike[str], max_px: int, layer: str = "mask"
) -> Path:
    import rasterio  # noqa: PLC0415
    from rasterio.enums import Resampling  # noqa: PLC0415

    from geoseg.models import resolve_bands  # noqa: PLC0415

    mask = array(g, "mask")
    h, w = (int(v) for v in mask.shape)
    scale = max(1.0, max(h, w) / max_px)
    oh, ow = max(1, round(h / scale)), max(1, round(w / scale))
    rows, cols = _nearest(h, oh), _nearest(w, ow)
    if layer == "instance_id":
        labels = _instance_labels(np.asarray(array(g, "instance_id").get_orthogonal_selection((rows, cols))))
    else:
        labels = np.asarray(mask.get_orthogonal_selection((rows, cols)))
    from geoseg.sources import opened  # noqa: PLC0415  (rasterio, or GDAL's /vsis3/ for an input on S3)

    source = str(meta.get("source", ""))
    classes = list((meta.get("model") or {}).get("classes") or [])
    try:
        with opened(source) as src:
            try:
                bands = resolve_bands(("red", "green", "blue"), src.descriptions, src.count, source)
                what = "RGB"
            except Exception:  # noqa: BLE001  (no RGB roles: one band of those the model read)
                bands = (int((meta.get("bands") or [0])[0]),)
                what = f"band {bands[0] + 1}"
            pixels = src.read([b + 1 for b in bands], out_shape=(len(bands), oh, ow), resampling=Resampling.nearest)
            valid = np.all(src.read_masks([b + 1 for b in bands], out_shape=(len(bands), oh, ow)) > 0, axis=0)
    except (OSError, rasterio.errors.RasterioError) as e:
        raise SourceError(f"{source}: cannot read the input for the picture ({e}); is it where geoseg read it?") from None
    base = np.stack([_stretch(p, valid) for p in pixels], axis=-1)
    if base.shape[-1] == 1:
        base = np.repeat(base, 3, axis=-1)
    if layer == "instance_id":
        colours = class_colours(len(_PALETTE) + 1)
        n = int(array(g, "objects/instance_id").shape[0]) if "objects" in g else 0
        entries = [(f"{n} objects (colours repeat)", tuple(int(v) for v in colours[1]))]
    else:
        colours = class_colours(max(len(classes), int(labels[labels != 255].max(initial=0)) + 1))
        entries = [(c, tuple(int(v) for v in colours[k])) for k, c in enumerate(classes) if k > 0]
    picture = _overlay(base, labels, colours, nodata=255)
    entries.append(("nodata", NODATA_COLOUR))
    shown = "full" if scale <= 1 else f"1/{scale:.3g}"
    title = f"{g.basename}: {what} of {url_name(source)}, {shown} resolution"
    legend = _legend(ow, entries, title)  # type: ignore[arg-type]
    width = max(ow, legend.shape[1])
    canvas = np.full((oh + legend.shape[0], width, 3), 255, np.uint8)
    canvas[:oh, :ow] = picture
    canvas[oh:, : legend.shape[1]] = legend
    return _save(canvas, out)


def _case(g: Any, a: dict[str, Any], meta: dict[str, Any], out: str | os.PathLike[str], zoom: int) -> Path:

    from geoseg.core.volume import orientation_of  # noqa: PLC0415

    mask = np.asarray(array(g, "mask")[...])
    ids = np.asarray(array(g, "lesion_id")[...])
    files = list(meta.get("files") or [])
    if not files or not (is_url(str(files[0])) or Path(str(files[0])).is_file()):
        where = files[0] if files else g.basename
        raise SourceError(f"{where}: the case's first modality is gone; it is the picture's background, restore it")
    from geoseg.sources import nifti_image  # noqa: PLC0415

    scan: Any = nifti_image(str(files[0]))
    data = np.asarray(scan.dataobj, np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    orient = orientation_of(np.asarray(a["affine"], np.float64))
    scan_ras, mask_ras, ids_ras = (np.asarray(orient.to_ras(v)) for v in (data, mask, ids))
    if ids_ras.max() > 0:
        sizes = np.bincount(ids_ras.ravel())
        sizes[0] = 0
        where = np.argwhere(ids_ras == int(np.argmax(sizes)))
        centre = tuple(int(v) for v in np.rint(where.mean(axis=0)))
        what = f"largest lesion ({int(sizes.max())} voxels)"
    else:
        centre = tuple(s // 2 for s in ids_ras.shape)
        what = "no lesion: centre slices"
    i, j, k = centre
    views = [
        (scan_ras[i, :, :], mask_ras[i, :, :]),  # sagittal: (A, S)
        (scan_ras[:, j, :], mask_ras[:, j, :]),  # coronal: (R, S)
        (scan_ras[:, :, k], mask_ras[:, :, k]),  # axial: (R, A)
    ]
    classes = list((meta.get("model") or {}).get("classes") or [])
    colours = class_colours(max(len(classes), int(mask.max()) + 1))
    panels = []
    for img, lab in views:
        img, lab = np.rot90(img), np.rot90(lab)  # superior / anterior up, as viewers show it
        base = np.repeat(_stretch(img, img != 0)[..., None], 3, axis=-1)
        panel = _overlay(base, lab, colours, nodata=None)
        panels.append(np.kron(panel, np.ones((zoom, zoom, 1), np.uint8)))
    height = max(p.shape[0] for p in panels)
    gap = 4
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    entries = [(c, tuple(int(v) for v in colours[n])) for n, c in enumerate(classes) if n > 0]
    legend = _legend(width, entries, f"{g.basename}: sagittal, coronal, axial through the {what}")  # type: ignore[arg-type]
    canvas = np.full((height + legend.shape[0], max(width, legend.shape[1]), 3), 255, np.uint8)
    x = 0
    for p in panels:
        canvas[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    canvas[height:, : legend.shape[1]] = legend
    return _save(canvas, out)


def quicklook(
    store: StoreLike, name: str, out: str | os.PathLike[str], max_px: int = 1024, zoom: int = 2, layer: str = "mask"
) -> Path:
    """Write a PNG quicklook of group ``name`` of ``store`` (a scene or an MRI case) to ``out``.

    Args:
        max_px: a scene's longer side in the picture (it is read decimated to that size).
        zoom: pixels per voxel of an MRI case's slices.
        layer: a scene's ``mask`` (class colours) or ``instance_id`` (a colour per object,
            from a palette of 9 that repeats).

    Raises:
        StoreError: no such complete group, or the picture cannot be written.
        SourceError: the input the group was made from is no longer readable.
    """
    g = open_group(store, name)
    if "affine" in attrs(g):
        return _case(*finished_group(store, name, "volume"), out, zoom)
    g, a, meta = finished_group(store, name, "raster")
    if layer not in ("mask", "instance_id"):
        raise StoreError(f"--array {layer!r}: a quicklook shows mask or instance_id; give one of those")
    return _scene(g, a, meta, out, max_px, layer)
