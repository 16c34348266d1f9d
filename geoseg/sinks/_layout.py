"""The store's layout: the one module that knows which key holds what.

::

    <name>/                    one Zarr group per input (zarr.json holds status + fingerprint)
      mask, probs, x, y, ...   its arrays (see geoseg.sinks._zarr)
      <table>/                 tables as groups of 1-D arrays (e.g. lesions)
    .geoseg/<name>/done/<block>   one marker per finished block (JSON stats), written after its chunks
    .geoseg/<name>/parts/<part>   intermediate results of later phases (e.g. a block's components, .npz)
    .geoseg/report.json        the last run's report

Markers live beside the Zarr hierarchy, not in it, so zarr and xarray never see them.
"""

from __future__ import annotations

__all__ = [
    "GEOSEG_PREFIX",
    "REPORT_KEY",
    "group_meta_prefix",
    "marker_key",
    "markers_prefix",
    "marker_name",
    "part_key",
]

GEOSEG_PREFIX = ".geoseg/"
REPORT_KEY = ".geoseg/report.json"


def group_meta_prefix(name: str) -> str:
    """Every key geoseg keeps about group ``name`` outside the Zarr hierarchy."""
    return f"{GEOSEG_PREFIX}{name}/"


def markers_prefix(name: str) -> str:
    return f"{GEOSEG_PREFIX}{name}/done/"


def marker_key(name: str, block: str) -> str:
    """The key of block ``block``'s done-marker in group ``name``."""
    return f"{markers_prefix(name)}{block}"


def marker_name(key: str) -> str:
    """The block name of a marker key."""
    return key.rsplit("/", 1)[-1]


def part_key(name: str, part: str) -> str:
    """The key of an intermediate result ``part`` of group ``name`` (deleted with the group)."""
    return f"{GEOSEG_PREFIX}{name}/parts/{part}"
