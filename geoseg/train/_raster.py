"""A labelled raster as training sees it: bands, class labels (and object ids), a spatial split.

The image is read whole (a training scene fits in memory; inference is what scales). Labels
come from a raster on the image's grid or from vectors in any CRS, rasterised on the image's
grid by :mod:`geoseg.train._labels`. The validation part is one strip of rows or columns
(:class:`~geoseg.train.SplitSection`); training reads only the rest, as rectangles, so no
training crop ever sees a validation pixel. Band statistics for the card's normalisation come
from the training part alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError, SourceError, first_line
from geoseg.models import Normalisation

from ._labels import rasterise_labels, read_vector_labels
from ._spec import RasterDataSection

__all__ = ["RasterScene", "Rect", "load_raster_scene", "split_rects", "band_normalisation"]

log = logging.getLogger("geoseg.train")

Rect = tuple[int, int, int, int]
"""``(row0, col0, row1, col1)``, end-exclusive pixel rectangle."""

_RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


@dataclass(frozen=True)
class RasterScene:
    """One image with its labels, in pixels of the image.

    Attributes:
        image: (C, H, W) float32 raw band values (nodata pixels are 0).
        valid: (H, W) bool, False where the image has no data.
        labels: (H, W) uint8 class indices.
        objects: (H, W) int32 object ids (0 none) for instance training, else None.
        object_class: (n + 1,) uint8 class of each object id (index 0 unused).
        bands: the card's band names: descriptions where the spec named bands by
            description, else 1-based indexes as text.
        validation: the validation strip; ``train_rects`` the rest.
    """

    path: Path
    image: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    objects: np.ndarray | None
    object_class: np.ndarray
    bands: tuple[str, ...]
    validation: Rect
    train_rects: tuple[Rect, ...]


def _band_indexes(src: object, data: RasterDataSection) -> tuple[list[int], tuple[str, ...]]:
    count: int = src.count  # type: ignore[attr-defined]
    if data.bands is None:
        return list(range(1, count + 1)), tuple(str(i) for i in range(1, count + 1))
    descriptions = [d or "" for d in src.descriptions]  # type: ignore[attr-defined]
    idx: list[int] = []
    for b in data.bands:
        if isinstance(b, int) or (isinstance(b, str) and b.isdigit()):
            i = int(b)
            if not 1 <= i <= count:
                raise InputError(f"{data.image}: band {i} does not exist (the image has {count}); use 1..{count}")
            idx.append(i)
        elif b in descriptions:
            idx.append(descriptions.index(b) + 1)
        else:
            raise InputError(
                f"{data.image}: no band is described {b!r} (descriptions: {descriptions}); name a band by 1-based index"
            )
    return idx, tuple(str(b) for b in data.bands)


def split_rects(shape: tuple[int, int], data: RasterDataSection, min_px: int) -> tuple[Rect, tuple[Rect, ...]]:
    """The validation strip and the training rectangles of an image of ``shape`` (H, W).

    >>> from geoseg.train import RasterDataSection
    >>> d = RasterDataSection(kind="raster", image="a.tif", labels="b.tif")
    >>> split_rects((100, 50), d, 16)
    ((70, 0, 100, 50), ((0, 0, 70, 50),))

    Raises:
        InputError: the strip holds fewer than ``min_px`` rows/columns (no validation data),
            or the rest holds no training rectangle of ``min_px``.
    """
    h, w = shape
    s = data.validation
    n = h if s.axis == "rows" else w
    a, b = round(s.start * n), round(s.stop * n)
    what = f"validation {{axis: {s.axis}, start: {s.start}, stop: {s.stop}}}"
    if b - a < min_px:
        raise InputError(
            f"{data.image}: {what} leaves {b - a} {s.axis} of {n} for validation, fewer than {min_px}; "
            "widen the strip"
        )
    parts = [(0, a), (b, n)]
    if s.axis == "rows":
        val, rects = (a, 0, b, w), [(p, 0, q, w) for p, q in parts if q - p >= min_px]
    else:
        val, rects = (0, a, h, b), [(0, p, h, q) for p, q in parts if q - p >= min_px]
    if not rects:
        raise InputError(
            f"{data.image}: {what} leaves no training strip of {min_px} {s.axis} or more; narrow the strip"
        )
    return val, tuple(rects)


def band_normalisation(image: np.ndarray, valid: np.ndarray, rects: tuple[Rect, ...], data: RasterDataSection) -> Normalisation:
    """Per-band ``affine`` normalisation from the valid pixels of the training rectangles:
    percentiles ``(lo, hi)`` to 0 and 1, or mean and standard deviation to 0 and 1."""
    offset, scale = [], []
    for band in image:
        px = np.concatenate([band[r0:r1, c0:c1][valid[r0:r1, c0:c1]] for r0, c0, r1, c1 in rects])
        if not px.size:
            raise InputError(f"{data.image}: the training part has no valid pixels; check nodata and the split")
        if data.normalisation == "percentile":
            lo, hi = np.percentile(px, data.percentiles)
            off, scl = float(lo), float(hi - lo)
        else:
            off, scl = float(px.mean()), float(px.std())
        offset.append(off)
        scale.append(scl if scl > 0 else 1.0)
    return Normalisation("affine", tuple(offset), tuple(scale))


def _raster_labels(path: Path, src: object, data: RasterDataSection) -> np.ndarray:
    import rasterio  # noqa: PLC0415

    try:
        lab = rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as e:
        raise SourceError(f"labels {path}: cannot open it ({first_line(e, path)}); give a raster or vector file") from None
    with lab:
        same = (
            lab.shape == src.shape  # type: ignore[attr-defined]
            and lab.crs == src.crs  # type: ignore[attr-defined]
            and lab.transform.almost_equals(src.transform, precision=1e-9)  # type: ignore[attr-defined]
        )
        if not same:
            raise InputError(
                f"labels {path}: grid {lab.shape[0]}x{lab.shape[1]} {lab.crs} {tuple(lab.transform)[:6]} differs from "
                f"the image's {src.shape[0]}x{src.shape[1]} {src.crs} {tuple(src.transform)[:6]}; "  # type: ignore[attr-defined]
                "give labels on the image's grid (e.g. gdalwarp -te/-ts/-t_srs) or vectors"
            )
        raw = lab.read(1)
    values = np.unique(raw)
    if data.label_map is None:
        return (raw > 0).astype(np.uint8)
    unknown = [int(v) for v in values if int(v) not in data.label_map]
    if unknown:
        raise InputError(f"labels {path}: values {unknown} are not in label_map {data.label_map}; add them")
    lut = np.zeros(int(values.max()) + 1, np.uint8)
    for k, v in data.label_map.items():
        if 0 <= k < lut.size:
            lut[k] = v
    return lut[raw.astype(np.int64)]


def _classes_of(frame: object, data: RasterDataSection, path: Path) -> np.ndarray:
    n = len(frame)  # type: ignore[arg-type]
    if data.class_field is None:
        return np.ones(n, np.uint8)
    if data.class_field not in frame.columns:  # type: ignore[attr-defined]
        raise InputError(f"labels {path}: no attribute {data.class_field!r}; fix data.class_field")
    names = [str(v) for v in frame[data.class_field]]  # type: ignore[index]
    unknown = sorted(set(names) - set(data.classes[1:]))
    if unknown:
        raise InputError(
            f"labels {path}: {data.class_field} values {unknown[:5]} are not in classes {list(data.classes[1:])}; "
            "add them to data.classes"
        )
    return np.array([data.classes.index(v) for v in names], np.uint8)


def _buffer_lines(frame: Any, metres: float) -> Any:
    """Buffer lines by ``metres`` each side, in a local UTM CRS when the frame's is geographic."""
    crs = frame.crs  # type: ignore[attr-defined]
    lines = frame.geom_type.isin(["LineString", "MultiLineString"])  # type: ignore[attr-defined]
    if metres <= 0 or not lines.any():
        return frame.geometry  # type: ignore[attr-defined]
    metric = frame.to_crs(frame.estimate_utm_crs()) if crs.is_geographic else frame  # type: ignore[attr-defined]
    geoms = metric.geometry.where(~lines, metric.geometry.buffer(metres))
    return geoms.to_crs(crs) if crs.is_geographic else geoms


def load_raster_scene(data: RasterDataSection, task: str, min_px: int) -> RasterScene:
    """Read the image, its labels and the split as ``data`` says (see :class:`RasterScene`).

    ``task`` ``"instance"`` takes polygons only, each one object (or, from a label raster, each
    connected component of a class); ``"semantic"`` takes polygons and lines (buffered by
    ``label_buffer_m``).

    Raises:
        SourceError: a missing or unreadable image or label file.
        InputError: a label raster on another grid, lines for an instance task, labels that
            touch nothing, an empty label set in the training part, a split without
            validation or training data.
    """
    import rasterio  # noqa: PLC0415

    if not data.image.is_file():
        raise SourceError(f"image {data.image}: no such file; give a GeoTIFF")
    try:
        src = rasterio.open(data.image)
    except (rasterio.errors.RasterioIOError, OSError) as e:
        raise SourceError(f"image {data.image}: cannot open it ({first_line(e, data.image)}); give a GeoTIFF") from None
    with src:
        idx, bands = _band_indexes(src, data)
        image = src.read(idx).astype(np.float32)
        valid = src.dataset_mask() > 0
        shape = (src.height, src.width)
        validation, rects = split_rects(shape, data, min_px)
        objects: np.ndarray | None = None
        object_class = np.zeros(1, np.uint8)
        if data.labels.suffix.lower() in _RASTER_SUFFIXES:
            labels = _raster_labels(data.labels, src, data)
            if task == "instance":
                from scipy import ndimage  # noqa: PLC0415

                objects = np.zeros(shape, np.int32)
                classes = [0]
                for c in range(1, len(data.classes)):
                    lab, n = ndimage.label(labels == c)
                    objects[lab > 0] = lab[lab > 0] + len(classes) - 1
                    classes += [c] * n
                object_class = np.array(classes, np.uint8)
        else:
            if src.crs is None:
                raise InputError(f"image {data.image}: it has no CRS, so vector labels cannot be placed; give a label raster")
            kind = "polygon" if task == "instance" else ("polygon", "line")
            vec = read_vector_labels(data.labels, src.crs, src.transform, shape, kind)
            cls = _classes_of(vec.frame, data, data.labels)
            geoms = list(_buffer_lines(vec.frame, data.label_buffer_m))  # type: ignore[call-overload]
            labels = rasterise_labels(geoms, cls, src.transform, shape)
            if task == "instance":
                ids = np.arange(1, len(geoms) + 1)
                objects = rasterise_labels(geoms, ids, src.transform, shape, dtype="int32")
                object_class = np.concatenate([[0], cls]).astype(np.uint8)
    image[:, ~valid] = 0
    labels[~valid] = 0
    if objects is not None:
        objects[~valid] = 0
    if not any(labels[r0:r1, c0:c1].any() for r0, c0, r1, c1 in rects):
        raise InputError(
            f"labels {data.labels}: no labelled pixel lies in the training part of {data.image}; "
            "check the labels or move the validation strip"
        )
    r0, c0, r1, c1 = validation
    if not labels[r0:r1, c0:c1].any():
        lo, hi = (r0, r1) if data.validation.axis == "rows" else (c0, c1)
        raise InputError(
            f"labels {data.labels}: no labelled pixel lies in the validation strip {data.validation.axis} {lo}-{hi - 1} "
            f"of {data.image}, so its scores would mean nothing; move data.validation to a part with labels"
        )
    return RasterScene(data.image, image, valid, labels, objects, object_class, bands, validation, rects)
