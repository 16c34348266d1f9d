"""Finishing a group: check every block is done, write its tables, mark it complete.

Runs on the driver as soon as a group's last block is written, so an input that finished is
complete (and exportable) even if the job is interrupted later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from geoseg.plan import GroupPlan
from geoseg.sinks import Store, complete_group, read_markers, write_table

__all__ = ["finish_group"]


_COUNTS = frozenset({"voxels", "pixels"})


def _column(name: str, values: list[Any]) -> np.ndarray:
    """A table column by its name: ``*_id`` uint32, counts int64, measures float64."""
    if name.endswith("_id"):
        return np.asarray(values, np.uint32)
    return np.asarray(values, np.int64 if name in _COUNTS else np.float64)


def finish_group(store: Store, group: GroupPlan, extra: Mapping[str, Any]) -> str:
    """Complete ``group`` if every marker is in ``store``; returns "" or the reason it is not.

    Tables named in ``group.tables`` are assembled from the markers' stats (each marker holds
    its block's rows as columns) and written as ``<name>/<table>``. ``extra`` goes into the
    group's ``geoseg`` attributes (counts, numerics), and so does each marker's ``meta`` (what a
    phase chose, e.g. an Otsu ``threshold``).
    """
    markers = read_markers(store, group.name)
    missing = [k for k in group.marker_keys if k not in markers]
    if missing:
        return f"{len(missing)} blocks unfinished (e.g. {missing[0]}); rerun to resume"
    for table in group.tables:
        columns: dict[str, list[Any]] = {}
        for key in group.marker_keys:
            for col, values in markers[key].get(table, {}).items():
                columns.setdefault(col, []).extend(values)
        write_table(store, group.name, table, {c: _column(c, v) for c, v in columns.items()})
    chosen = {k: v for key in group.marker_keys for k, v in markers[key].get("meta", {}).items()}
    complete_group(store, group.name, {**extra, **chosen, "blocks": len(group.jobs)})
    return ""
