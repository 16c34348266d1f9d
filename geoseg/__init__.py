"""geoseg: distributed batch segmentation of satellite scenes and MRI volumes on Ray."""

import importlib
from typing import Any

__version__ = "0.1.0"

from geoseg.core.grid import Block, PatchGrid, Tiling, blocks, patch_grid  # noqa: E402
from geoseg.errors import GeosegError, InputError, ModelError, SourceError, SpecError, StoreError  # noqa: E402

__all__ = [
    "__version__",
    "GeosegError",
    "InputError",
    "ModelError",
    "SourceError",
    "SpecError",
    "StoreError",
    "Tiling",
    "PatchGrid",
    "Block",
    "patch_grid",
    "blocks",
    "run_job",
    "load_spec",
    "parse_spec",
    "JobSpec",
]


def __getattr__(name: str) -> Any:
    """Lazy public names: importing geoseg must not import Ray (run_job) or pydantic (specs)."""
    if name == "run_job":
        return importlib.import_module("geoseg.pipeline").run_job
    if name in ("load_spec", "parse_spec", "JobSpec"):
        return getattr(importlib.import_module("geoseg.spec"), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
