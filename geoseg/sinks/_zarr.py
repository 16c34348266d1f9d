"""Zarr v3 output: the driver lays out groups and metadata, each block task writes its chunks.

Layout of one scene group ``<store>/<name>``::

    mask         (y, x) uint8, class index, 255 where the input has no data
    instance_id  (y, x) uint32, object id, 0 background, 0xFFFFFFFF no data (``--instances``)
    objects/     the objects table (``--instances``): one row per id
    probs        (class, y, x) float32 class probabilities (optional)
    x, y         pixel-centre coordinates (CF), float64
    spatial_ref  scalar CF grid mapping (crs_wkt, spatial_ref, GeoTransform)

and of one volume group: ``mask`` and ``lesion_id`` on the file's voxel grid (i, j, k). The
group's attributes carry the GeoZarr ``proj:``/``spatial:`` conventions (or the 4x4 affine)
and a ``geoseg`` entry with the job fingerprint and status (``running`` until every block and
the metadata are written, then ``complete``). Markers and tables are keys of the same store
(:mod:`geoseg.sinks._layout`), read and written through :class:`~geoseg.sinks.Store`: no
path arithmetic, no rename, so the same code serves any store zarr can open.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.errors import GroupNotFoundError

from geoseg.core.grid import Window
from geoseg.core.instances import NODATA_ID
from geoseg.errors import StoreError

from ._layout import group_meta_prefix, marker_key, marker_name, markers_prefix
from ._store import StoreLike, as_store

__all__ = [
    "SceneLayout",
    "VolumeLayout",
    "prepare_group",
    "write_block",
    "write_volume",
    "done_blocks",
    "read_markers",
    "mark_block_done",
    "complete_group",
    "attrs",
    "array",
    "group_meta",
    "group_status",
    "list_groups",
    "open_group",
    "write_table",
    "read_table",
    "table_names",
    "consolidate",
    "consolidate_root",
    "unconsolidate_root",
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
INSTANCE_FILL = int(NODATA_ID)  # one definition: the core numbers objects, the store fills with it


@dataclass(frozen=True)
class SceneLayout:
    """Shape, chunking, georeferencing and output arrays of one raster group (plain values).

    ``write_probs`` adds the ``probs`` array beside ``mask``; ``instances`` adds
    ``instance_id`` ((y, x) uint32, 0 background, 0xFFFFFFFF where the input has no data).
    """

    name: str
    shape_yx: tuple[int, int]
    chunk_px: int
    classes: tuple[str, ...]
    crs_wkt: str
    transform: tuple[float, ...]
    write_probs: bool = False
    gcps: tuple[Mapping[str, Any], ...] = ()
    gcps_crs_wkt: str = ""
    rpcs: Mapping[str, Any] | None = None
    instances: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform[:6]))

    def create(self, g: zarr.Group) -> dict[str, Any]:
        """Create this layout's arrays in the empty group ``g``; returns the group's attributes."""
        geo, cf = _geo_attrs(self)
        h, w = self.shape_yx
        chunk = (min(self.chunk_px, h), min(self.chunk_px, w))
        mask = g.create_array(
            "mask", shape=(h, w), chunks=chunk, dtype="uint8", fill_value=MASK_FILL, dimension_names=("y", "x")
        )
        mask.attrs.update(
            {
                "grid_mapping": "spatial_ref",
                "coordinates": "spatial_ref",
                "flag_values": list(range(len(self.classes))),
                "flag_meanings": " ".join(c.replace(" ", "_") for c in self.classes),
                "nodata_value": MASK_FILL,
                "long_name": "class index",
                **geo,
            }
        )
        if self.write_probs:
            probs = g.create_array(
                "probs",
                shape=(len(self.classes), h, w),
                chunks=(len(self.classes), *chunk),
                dtype="float32",
                fill_value=float("nan"),
                dimension_names=("class", "y", "x"),
            )
            probs.attrs.update({"grid_mapping": "spatial_ref", "coordinates": "spatial_ref", **geo})
        if self.instances:
            ids = g.create_array(
                "instance_id", shape=(h, w), chunks=chunk, dtype="uint32", fill_value=INSTANCE_FILL,
                dimension_names=("y", "x"),
            )  # fmt: skip
            ids.attrs.update(
                {
                    "grid_mapping": "spatial_ref",
                    "coordinates": "spatial_ref",
                    "nodata_value": INSTANCE_FILL,
                    "long_name": "instance id (0: background; objects in the objects table)",
                    **geo,
                }
            )
        a, b, c, d, e, f = self.transform
        if b == 0 and d == 0:
            x = g.create_array("x", shape=(w,), chunks=(w,), dtype="float64", dimension_names=("x",))
            x[:] = c + a * (np.arange(w) + 0.5)
            y = g.create_array("y", shape=(h,), chunks=(h,), dtype="float64", dimension_names=("y",))
            y[:] = f + e * (np.arange(h) + 0.5)
            x.attrs.update({"standard_name": "projection_x_coordinate", "axis": "X"})
            y.attrs.update({"standard_name": "projection_y_coordinate", "axis": "Y"})
        ref = g.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0)
        ref.attrs.update(cf)
        if self.gcps:  # no affine: the input's ground control points travel with the mask
            geo["gcps"] = {"crs_wkt": self.gcps_crs_wkt, "points": [dict(p) for p in self.gcps]}
        if self.rpcs:
            geo["rpcs"] = dict(self.rpcs)
        return geo


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


def list_groups(store: StoreLike) -> list[str]:
    """Names of the groups at the store's root (one per input), sorted."""
    st = as_store(store)
    if not st.exists():
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the .geoseg keys are no Zarr node
        try:
            root = zarr.open_group(st.zarr, mode="r", zarr_format=3)
        except (GroupNotFoundError, FileNotFoundError):
            return []
        return sorted(root.group_keys())


def open_group(store: StoreLike, name: str) -> zarr.Group:
    """The group ``name`` of ``store``, read-only.

    Raises:
        StoreError: no store there, or no such group (naming the groups there are).
    """
    st = as_store(store)
    if not st.exists():
        raise StoreError(f"{st.url}: no Zarr store there; check the path (geoseg run writes it)")
    try:
        return zarr.open_group(st.zarr, path=name, mode="r", zarr_format=3)
    except (GroupNotFoundError, FileNotFoundError):
        groups = list_groups(st)
        there = f"groups there: {', '.join(groups)}" if groups else "it holds no group yet"
        raise StoreError(f"{st.url}: has no group {name!r} ({there}); give one of them with --name") from None


def attrs(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """A node's attributes as plain JSON values (zarr types them as a union of JSON kinds)."""
    return dict(node.attrs.asdict())


def array(g: zarr.Group, key: str) -> zarr.Array:
    """The array ``key`` of group ``g``; raises StoreError where it is missing or a group."""
    node = g.get(key)
    if not isinstance(node, zarr.Array):
        where = str(g.store_path).removeprefix("file://")
        there = ", ".join(sorted(g.array_keys())) or "none"
        raise StoreError(f"{where}: has no array {key!r} (arrays there: {there}); give one of those")
    return node


def group_status(store: StoreLike, name: str) -> tuple[str, str] | None:
    """``(fingerprint, status)`` of an existing group, or None where there is none."""
    st = as_store(store)
    if not st.exists() or not st.has(f"{name}/zarr.json"):
        return None
    meta = group_meta(st, name)
    if not meta.get("fingerprint"):
        return None  # created but interrupted before its metadata: never started, made anew
    return str(meta["fingerprint"]), str(meta.get("status", ""))


def group_meta(store: StoreLike, name: str) -> dict[str, Any]:
    """The group's ``geoseg`` attributes (fingerprint, status, source, model, counts...)."""
    return dict(attrs(open_group(store, name)).get("geoseg") or {})


def _set_status(store: StoreLike, name: str, status: str, extra: Mapping[str, Any] | None = None) -> None:
    st = as_store(store)
    g = zarr.open_group(st.zarr, path=name, mode="r+", zarr_format=3)
    meta = dict(attrs(g).get("geoseg") or {})
    meta.update(extra or {})
    meta["status"] = status
    g.attrs["geoseg"] = meta


def _claim(store: StoreLike, name: str, fingerprint: str, overwrite: bool) -> zarr.Group | None:
    """The store's root group to create ``name`` in, or None where a group of this fingerprint
    exists already (a resumed run keeps its arrays and markers). A group of another fingerprint
    is refused unless ``overwrite``; then it is first marked ``replacing`` (never complete
    again), and only then deleted with its markers, so an interrupted delete leaves nothing
    that looks finished."""
    st = as_store(store)
    existing = group_status(st, name)
    if existing is not None and not overwrite:
        if existing[0] == fingerprint:
            return None
        raise StoreError(
            f"{st.url}: group {name!r} was written by a different job (fingerprint "
            f"{existing[0][:12]} != {fingerprint[:12]}: other input, model or settings); "
            f"write to a new store or pass --overwrite"
        )
    if existing is not None:
        _set_status(st, name, "replacing")
        st.delete_prefix(group_meta_prefix(name))
        st.delete_prefix(f"{name}/")
    st.check_writable()
    try:
        return zarr.open_group(st.zarr, mode="a", zarr_format=3)
    except (OSError, ValueError) as e:
        raise StoreError(f"{st.url}: cannot create a Zarr store there ({e}); choose a writable path") from None


def prepare_group(
    store: StoreLike,
    layout: SceneLayout | VolumeLayout,
    fingerprint: str,
    meta: Mapping[str, Any],
    overwrite: bool = False,
) -> bool:
    """Create the group, arrays and metadata of one input before any block is written.

    Returns True where a group of the same fingerprint exists already (a resumed run: its
    arrays and markers are kept). A group written by another fingerprint raises StoreError
    unless ``overwrite``.
    """
    top = _claim(store, layout.name, fingerprint, overwrite)
    if top is None:
        return True
    # The fingerprint goes in with the group itself: no group without one is ever left behind.
    g = top.create_group(layout.name, overwrite=True, attributes={"geoseg": {"fingerprint": fingerprint, "status": "running"}})
    attrs = layout.create(g)
    g.attrs.update({**attrs, "geoseg": {"fingerprint": fingerprint, "status": "running", **meta}})
    return False


@dataclass(frozen=True)
class VolumeLayout:
    """Shape and geometry of one volume's output group, in the file's voxel order (plain values):
    ``mask`` and ``lesion_id`` on the file's voxel grid (i, j, k), the 4x4 affine, and OME-Zarr
    0.5 style ``multiscales`` giving the voxel size in mm."""

    name: str
    shape_xyz: tuple[int, int, int]
    affine: tuple[tuple[float, ...], ...]
    voxel_mm: tuple[float, float, float]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "affine", tuple(tuple(float(v) for v in row) for row in self.affine))
        object.__setattr__(self, "voxel_mm", tuple(float(v) for v in self.voxel_mm))
        object.__setattr__(self, "classes", tuple(self.classes))

    def create(self, g: zarr.Group) -> dict[str, Any]:
        """Create this layout's arrays in the empty group ``g``; returns the group's attributes."""
        chunks = tuple(min(n, 128) for n in self.shape_xyz)
        dims = ("i", "j", "k")
        mask = g.create_array("mask", shape=self.shape_xyz, chunks=chunks, dtype="uint8", fill_value=0, dimension_names=dims)
        mask.attrs.update(
            {
                "flag_values": list(range(len(self.classes))),
                "flag_meanings": " ".join(c.replace(" ", "_") for c in self.classes),
                "long_name": "class index",
            }
        )
        ids = g.create_array(
            "lesion_id", shape=self.shape_xyz, chunks=chunks, dtype="uint32", fill_value=0, dimension_names=dims
        )
        ids.attrs["long_name"] = "lesion id (3-D connected component of the tumour classes), 0 = none"
        axes = [{"name": d, "type": "space", "unit": "millimeter"} for d in dims]
        scale = [{"type": "scale", "scale": list(self.voxel_mm)}]
        return {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {"name": self.name, "axes": axes, "datasets": [{"path": "mask", "coordinateTransformations": scale}]}
                ],
            },
            "affine": [list(row) for row in self.affine],
            "voxel_mm": list(self.voxel_mm),
        }


def write_volume(store: StoreLike, name: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Write whole arrays of a case (one task per case: the only writer of its chunks)."""
    g = zarr.open_group(as_store(store).zarr, path=name, mode="r+", zarr_format=3)
    for key, values in arrays.items():
        array(g, key)[...] = values


def write_block(store: StoreLike, name: str, extent: Window, arrays: Mapping[str, np.ndarray]) -> None:
    """Write one block's chunks of each array in ``arrays`` (``(..., y, x)``, the block's extent):
    called by exactly one task per block, chunks never shared."""
    y0, x0, y1, x1 = extent
    g = zarr.open_group(as_store(store).zarr, path=name, mode="r+", zarr_format=3)
    for key, values in arrays.items():
        array(g, key)[..., y0:y1, x0:x1] = values


def write_table(store: StoreLike, name: str, table_name: str, columns: Mapping[str, np.ndarray]) -> None:
    """Driver only, at finish: a table as 1-D arrays sharing one dimension, e.g. ``<case>/lesions``."""
    g = zarr.open_group(as_store(store).zarr, path=name, mode="r+", zarr_format=3)
    t = g.create_group(table_name, overwrite=True)
    t.attrs["columns"] = list(columns)
    for col, values in columns.items():
        values = np.asarray(values)
        arr = t.create_array(
            col, shape=values.shape, chunks=(max(1, len(values)),), dtype=values.dtype, dimension_names=(table_name,)
        )
        if len(values):
            arr[:] = values


def table_names(store: StoreLike, name: str) -> list[str]:
    """The tables of group ``name`` (its sub-groups), sorted."""
    return sorted(k for k, _ in open_group(store, name).groups())


def read_table(store: StoreLike, name: str, table_name: str) -> dict[str, np.ndarray]:
    """The columns of table ``<name>/<table_name>``, in their stored order."""
    g = open_group(store, name)
    t = g.get(table_name)
    if not isinstance(t, zarr.Group):
        tables = sorted(k for k, v in g.groups())
        raise StoreError(
            f"{as_store(store).url}: group {name!r} has no table {table_name!r} (tables there: {tables or 'none'})"
        )
    columns = attrs(t).get("columns") or sorted(t.array_keys())
    return {str(c): np.asarray(array(t, str(c))[:]) for c in columns}


def mark_block_done(store: StoreLike, name: str, block_name: str, stats: Mapping[str, Any] | None = None) -> None:
    """Record a finished block after its chunks are written: one whole-object write of its JSON
    stats (readers see no marker or the whole marker, on a folder as on an object store)."""
    as_store(store).set(marker_key(name, block_name), json.dumps(dict(stats or {})).encode())


def done_blocks(store: StoreLike, name: str) -> frozenset[str]:
    """Names of the blocks of group ``name`` whose marker exists."""
    return frozenset(marker_name(k) for k in as_store(store).list_prefix(markers_prefix(name)))


def read_markers(store: StoreLike, name: str) -> dict[str, dict[str, Any]]:
    """Every marker of group ``name``: block name -> its stats."""
    st = as_store(store)
    out: dict[str, dict[str, Any]] = {}
    for key in st.list_prefix(markers_prefix(name)):
        data = st.get(key)
        out[marker_name(key)] = json.loads(data) if data else {}
    return out


def consolidate_root(store: StoreLike) -> None:
    """Consolidate the whole store's metadata into the root ``zarr.json``: xarray's
    ``open_zarr(store, group=...)`` reads it in one request."""
    st = as_store(store)
    if not st.has("zarr.json"):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # consolidated metadata is outside the v3 spec; .geoseg is no node
        zarr.consolidate_metadata(st.zarr, zarr_format=3)


def unconsolidate_root(store: StoreLike) -> None:
    """Drop the root's consolidated metadata before a run changes the hierarchy: stale, it would
    hide the groups it does not list (zarr and xarray trust it); absent, they read each node."""
    st = as_store(store)
    raw = st.get("zarr.json")
    if raw is None:
        return
    meta = json.loads(raw)
    if meta.pop("consolidated_metadata", None) is not None:
        st.set("zarr.json", json.dumps(meta, indent=2).encode())


def consolidate(store: StoreLike, name: str) -> None:
    """Consolidate group ``name``'s metadata into its own ``zarr.json`` (xarray opens it in one read)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # consolidated metadata is outside the v3 spec
        zarr.consolidate_metadata(as_store(store).zarr, path=name, zarr_format=3)


def complete_group(store: StoreLike, name: str, extra: Mapping[str, Any]) -> None:
    """Mark a group complete: only after every block's marker exists (the caller checks) and
    its metadata is consolidated, so a complete group is whole."""
    consolidate(store, name)
    _set_status(store, name, "complete", extra)
