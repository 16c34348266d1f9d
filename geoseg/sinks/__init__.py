"""Outputs: the Zarr store every run writes, and exports from it."""

from geoseg.sinks._cog import export_cog
from geoseg.sinks._nifti import export_nifti
from geoseg.sinks._table import export_table
from geoseg.sinks._zarr import (
    SceneLayout,
    complete_group,
    done_blocks,
    group_status,
    mark_block_done,
    open_group,
    VolumeLayout,
    prepare_group,
    prepare_volume_group,
    read_table,
    write_block,
    write_table,
    write_volume,
)

__all__ = [
    "export_cog",
    "export_nifti",
    "export_table",
    "SceneLayout",
    "prepare_group",
    "write_block",
    "done_blocks",
    "mark_block_done",
    "complete_group",
    "group_status",
    "open_group",
    "VolumeLayout",
    "prepare_volume_group",
    "write_volume",
    "write_table",
    "read_table",
]
