"""Outputs: the store every run writes (Zarr groups, markers and tables as keys), and exports."""

from geoseg.sinks._cog import export_cog
from geoseg.sinks._layout import REPORT_KEY, part_key
from geoseg.sinks._nifti import export_nifti
from geoseg.sinks._store import Store, StoreLike, as_store
from geoseg.sinks._table import export_table
from geoseg.sinks._vectors import VectorFormat, export_objects, object_frame
from geoseg.sinks._zarr import (
    SceneLayout,
    VolumeLayout,
    array,
    attrs,
    complete_group,
    consolidate,
    consolidate_root,
    done_blocks,
    group_meta,
    group_status,
    list_groups,
    mark_block_done,
    open_group,
    prepare_group,
    read_markers,
    read_table,
    unconsolidate_root,
    write_block,
    write_table,
    write_volume,
)

__all__ = [
    "array",
    "attrs",
    "Store",
    "StoreLike",
    "as_store",
    "export_cog",
    "export_nifti",
    "export_table",
    "SceneLayout",
    "VolumeLayout",
    "prepare_group",
    "write_block",
    "write_volume",
    "done_blocks",
    "read_markers",
    "mark_block_done",
    "complete_group",
    "consolidate",
    "consolidate_root",
    "unconsolidate_root",
    "group_meta",
    "group_status",
    "list_groups",
    "open_group",
    "write_table",
    "read_table",
    "part_key",
    "REPORT_KEY",
    "export_objects",
    "object_frame",
    "VectorFormat",
]
