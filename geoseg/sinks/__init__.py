"""Outputs: the Zarr store every run writes, and exports from it."""

from geoseg.sinks._cog import export_cog
from geoseg.sinks._zarr import (
    SceneLayout,
    complete_group,
    done_blocks,
    group_status,
    mark_block_done,
    open_group,
    prepare_group,
    write_block,
)

__all__ = [
    "export_cog",
    "SceneLayout",
    "prepare_group",
    "write_block",
    "done_blocks",
    "mark_block_done",
    "complete_group",
    "group_status",
    "open_group",
]
