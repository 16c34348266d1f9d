"""Zarr v3 output: the driver lays out groups and metadata, each block task writes its chunks.

Layout of one scene group ``<store>/<name>``::

    mask         (y, x) uint8, class index, 255 where the input has no data
    probs        (class, y, x) float32 class probabilities (optional)
    x, y         pixel-centre coordinates (CF), float64
    spatial_ref  scalar CF grid mapping (crs_wkt, spatial_ref, GeoTransform)

and one marker per finished block at ``<store>/.geoseg/<name>/done/<block>``, beside the Zarr
hierarchy rather than in it.

The group's attributes carry the GeoZarr ``proj:``/``spatial:`` conventions and a ``geoseg``
entry with the job fingerprint and status (``running`` until every block and the metadata are
written, then ``complete``). Markers and chunks are plain files: the store is a path that every
Ray node can see (local disk on one machine, a shared file system on a cluster).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.errors import GroupNotFoundError

from geoseg.errors import StoreError
from geoseg.core.grid import Window

__all__ = [
    "SceneLayout",
    "prepare_group",
    "write_block",
    "done_blocks",
    "mark_block_done",
    "complete_group",
    "group_status",
    "open_group",
]

_PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}
_SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial:",
    "description": "Spatial coordinate information",
}
MASK_FILL = 255


class SceneLayout:
    """Shape, chunking and georeferencing of one output group (plain values)."""

    def __init__(
        self,
        name: str,
        shape_yx: tuple[int, int],
        chunk_px: int,
        classes: Sequence[str],
        crs_wkt: str,
        transform: tuple[float, ...],
        write_probs: bool,
    ) -> None:
        self.name = name
        self.shape_yx = shape_yx
        self.chunk_px = chunk_px
        self.classes = tuple(classes)
        self.crs_wkt = crs_wkt
        self.transform = tuple(float(v) for v in transform[:6])
        self.write_probs = write_probs


def _geo_attrs(layout: SceneLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    """(GeoZarr attributes, CF grid-mapping attributes) for a layout."""
    a, b, c, d, e, f = layout.transform
    h, w = layout.shape_yx
    xs = [c, c + a * w + b * h, c + b * h, c + a * w]
    ys = [f, f + d * w + e * h, f + e * h, f + d * w]
    geo: dict[str, Any] = {
        "spatial:dimensions": ["y", "x"],
        "spatial:transform_type": "affine",
        "spatial:transform": [a, b, c, d, e, f],
        "spatial:shape": [h, w],
        "spatial:bbox": [min(xs), min(ys), max(xs), max(ys)],
        "spatial:registration": "pixel",
    }
    cf: dict[str, Any] = {"GeoTransform": " ".join(repr(v) for v in (c, a, b, f, d, e))}
    conventions = [_SPATIAL_CONVENTION]
    if layout.crs_wkt:
        from pyproj import CRS  # noqa: PLC0415  (only the driver needs pyproj)

        crs = CRS.from_wkt(layout.crs_wkt)
        geo["proj:wkt2"] = crs.to_wkt()
        auth = crs.to_authority(min_confidence=100)
        if auth is not None:
            geo["proj:code"] = f"{auth[0]}:{auth[1]}"
        conventions.append(_PROJ_CONVENTION)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # CF cannot hold every projection; crs_wkt does
            cf.update(crs.to_cf())
        cf["crs_wkt"] = layout.crs_wkt
        cf["spatial_ref"] = layout.crs_wkt
    geo["zarr_conventions"] = conventions
    return geo, cf


def open_group(store: str | os.PathLike[str], name: str) -> zarr.Group:
    try:
        return zarr.open_group(str(store), path=name, mode="r", zarr_format=3)
    except (GroupNotFoundError, FileNotFoundError):
        raise StoreError(f"{store}: has no group {name!r}; run geoseg on that input first") from None


def group_status(store: str | os.PathLike[str], name: str) -> tuple[str, str] | None:
    """``(fingerprint, status)`` of an existing group, or None where there is none."""
    if not (Path(store) / name / "zarr.json").exists():
        return None
    attrs = open_group(store, name).attrs.get("geoseg", {})
    return str(attrs.get("fingerprint", "")), str(attrs.get("status", ""))


def _claim(root: Path, name: str, fingerprint: str, overwrite: bool) -> zarr.Group | None:
    """The store's root group to create ``name`` in, or None where a group of this fingerprint
    exists already (a resumed run keeps its arrays and markers). A group of another fingerprint
    is refused unless ``overwrite``, then removed with its markers."""
    existing = group_status(root, name)
    if existing is not None and not overwrite:
        if existing[0] == fingerprint:
            return None
        raise StoreError(
            f"{root}: group {name!r} was written by a different job (fingerprint "
            f"{existing[0][:12]} != {fingerprint[:12]}: other input, model or settings); "
            f"write to a new store or pass --overwrite"
        )
    if existing is not None:
        shutil.rmtree(root / name)
        shutil.rmtree(_done_dir(root, name), ignore_errors=True)
    try:
        return zarr.open_group(str(root), mode="a", zarr_format=3)
    except (OSError, ValueError) as e:
        raise StoreError(f"{root}: cannot create a Zarr store there ({e}); choose a writable path") from None


def prepare_group(
    store: str | os.PathLike[str],
    layout: SceneLayout,
    fingerprint: str,
    meta: Mapping[str, Any],
    overwrite: bool = False,
) -> bool:
    """Create the group, arrays and metadata of one scene before any block is written.

    Returns True where a group of the same fingerprint exists already (a resumed run: its
    arrays and markers are kept). A group written by another fingerprint raises StoreError
    unless ``overwrite``.
    """
    root = Path(store)
    top = _claim(root, layout.name, fingerprint, overwrite)
    if top is None:
        return True
    geo, cf = _geo_attrs(layout)
    g = top.create_group(layout.name, overwrite=True)
    h, w = layout.shape_yx
    chunk = (min(layout.chunk_px, h), min(layout.chunk_px, w))
    mask = g.create_array(
        "mask", shape=(h, w), chunks=chunk, dtype="uint8", fill_value=MASK_FILL, dimension_names=("y", "x")
    )
    mask.attrs.update(
        {
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            "flag_values": list(range(len(layout.classes))),
            "flag_meanings": " ".join(c.replace(" ", "_") for c in layout.classes),
            "nodata_value": MASK_FILL,
            "long_name": "class index",
            **geo,
        }
    )
    if layout.write_probs:
        probs = g.create_array(
            "probs",
            shape=(len(layout.classes), h, w),
            chunks=(len(layout.classes), *chunk),
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=("class", "y", "x"),
        )
        probs.attrs.update({"grid_mapping": "spatial_ref", "coordinates": "spatial_ref", **geo})
    a, b, c, d, e, f = layout.transform
    if b == 0 and d == 0:
        x = g.create_array("x", shape=(w,), chunks=(w,), dtype="float64", dimension_names=("x",))
        x[:] = c + a * (np.arange(w) + 0.5)
        y = g.create_array("y", shape=(h,), chunks=(h,), dtype="float64", dimension_names=("y",))
        y[:] = f + e * (np.arange(h) + 0.5)
        x.attrs.update({"standard_name": "projection_x_coordinate", "axis": "X"})
        y.attrs.update({"standard_name": "projection_y_coordinate", "axis": "Y"})
    ref = g.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0)
    ref.attrs.update(cf)
    g.attrs.update({**geo, "geoseg": {"fingerprint": fingerprint, "status": "running", **meta}})
    _done_dir(root, layout.name).mkdir(parents=True, exist_ok=True)
    return False


class VolumeLayout:
    """Shape and geometry of one volume's output group, in the file's voxel order (plain values)."""

    def __init__(
        self,
        name: str,
        shape_xyz: tuple[int, int, int],
        affine: tuple[tuple[float, ...], ...],
        voxel_mm: tuple[float, float, float],
        classes: Sequence[str],
    ) -> None:
        self.name = name
        self.shape_xyz = shape_xyz
        self.affine = tuple(tuple(float(v) for v in row) for row in affine)
        self.voxel_mm = tuple(float(v) for v in voxel_mm)
        self.classes = tuple(classes)


def prepare_volume_group(
    store: str | os.PathLike[str],
    layout: VolumeLayout,
    fingerprint: str,
    meta: Mapping[str, Any],
    overwrite: bool = False,
) -> bool:
    """Create one case's group: ``mask`` and ``lesion_id`` on the file's voxel grid (i, j, k),
    the 4x4 affine, and OME-Zarr 0.5 style ``multiscales`` giving the voxel size in mm."""
    root = Path(store)
    top = _claim(root, layout.name, fingerprint, overwrite)
    if top is None:
        return True
    g = top.create_group(layout.name, overwrite=True)
    chunks = tuple(min(n, 128) for n in layout.shape_xyz)
    dims = ("i", "j", "k")
    mask = g.create_array("mask", shape=layout.shape_xyz, chunks=chunks, dtype="uint8", fill_value=0, dimension_names=dims)
    mask.attrs.update(
        {
            "flag_values": list(range(len(layout.classes))),
            "flag_meanings": " ".join(c.replace(" ", "_") for c in layout.classes),
            "long_name": "class index",
        }
    )
    ids = g.create_array("lesion_id", shape=layout.shape_xyz, chunks=chunks, dtype="uint32", fill_value=0, dimension_names=dims)
    ids.attrs["long_name"] = "lesion id (3-D connected component of the tumour classes), 0 = none"
    axes = [{"name": d, "type": "space", "unit": "millimeter"} for d in dims]
    scale = [{"type": "scale", "scale": list(layout.voxel_mm)}]
    g.attrs.update(
        {
            "ome": {
                "version": "0.5",
                "multiscales": [{"name": layout.name, "axes": axes, "datasets": [{"path": "mask", "coordinateTransformations": scale}]}],
            },
            "affine": [list(row) for row in layout.affine],
            "voxel_mm": list(layout.voxel_mm),
            "geoseg": {"fingerprint": fingerprint, "status": "running", **meta},
        }
    )
    _done_dir(root, layout.name).mkdir(parents=True, exist_ok=True)
    return False


def write_volume(store: str | os.PathLike[str], name: str, mask: np.ndarray, lesion_ids: np.ndarray) -> None:
    """Write a whole case (one task per case: the only writer of its chunks)."""
    g = zarr.open_group(str(store), path=name, mode="r+", zarr_format=3)
    g["mask"][...] = mask
    g["lesion_id"][...] = lesion_ids


def write_table(store: str | os.PathLike[str], name: str, table_name: str, columns: Mapping[str, np.ndarray]) -> None:
    """Driver only, at finish: a table as 1-D arrays sharing one dimension, e.g. ``<case>/lesions``."""
    g = zarr.open_group(str(store), path=name, mode="r+", zarr_format=3)
    t = g.create_group(table_name, overwrite=True)
    t.attrs["columns"] = list(columns)
    for col, values in columns.items():
        values = np.asarray(values)
        arr = t.create_array(col, shape=values.shape, chunks=(max(1, len(values)),), dtype=values.dtype, dimension_names=(table_name,))
        if len(values):
            arr[:] = values


def read_table(store: str | os.PathLike[str], name: str, table_name: str) -> dict[str, np.ndarray]:
    g = open_group(store, name)
    if table_name not in g:
        raise StoreError(f"{store}: group {name!r} has no table {table_name!r}")
    t = g[table_name]
    return {c: t[c][:] for c in t.attrs.get("columns") or sorted(t.array_keys())}


def write_block(
    store: str | os.PathLike[str],
    name: str,
    extent: Window,
    mask: np.ndarray,
    probs: np.ndarray | None = None,
) -> None:
    """Write one block's chunks: called by exactly one task per block, chunks never shared."""
    y0, x0, y1, x1 = extent
    arr = zarr.open_array(str(store), path=f"{name}/mask", mode="r+", zarr_format=3)
    arr[y0:y1, x0:x1] = mask
    if probs is not None:
        parr = zarr.open_array(str(store), path=f"{name}/probs", mode="r+", zarr_format=3)
        parr[:, y0:y1, x0:x1] = probs


def _done_dir(store: str | os.PathLike[str], name: str) -> Path:
    return Path(store) / ".geoseg" / name / "done"


def mark_block_done(store: str | os.PathLike[str], name: str, block_name: str, stats: str = "") -> None:
    """Record a finished block, atomically, after its chunks are written."""
    d = _done_dir(store, name)
    tmp = d / f".{block_name}.tmp{os.getpid()}"
    tmp.write_text(stats)
    os.replace(tmp, d / block_name)


def done_blocks(store: str | os.PathLike[str], name: str) -> frozenset[str]:
    d = _done_dir(store, name)
    return frozenset(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.exists() else frozenset()


def complete_group(store: str | os.PathLike[str], name: str, extra: Mapping[str, Any]) -> None:
    """Mark a group complete: only after every block's marker exists (the driver checks)."""
    g = zarr.open_group(str(store), path=name, mode="r+", zarr_format=3)
    meta = dict(g.attrs.get("geoseg", {}))
    meta.update(extra)
    meta["status"] = "complete"
    g.attrs["geoseg"] = meta
