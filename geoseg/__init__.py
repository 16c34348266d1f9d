"""geoseg: distributed batch segmentation of satellite scenes and MRI volumes on Ray."""

__version__ = "0.1.0"

from geoseg.errors import GeosegError, InputError, ModelError, SourceError, SpecError, StoreError  # noqa: E402
from geoseg.core.grid import Block, PatchGrid, Tiling, blocks, patch_grid  # noqa: E402

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


def __getattr__(name: str):  # noqa: ANN202  (lazy: importing geoseg must not import Ray or torch)
    if name == "run_job":
        from geoseg.pipeline import run_job

        return run_job
    if name in ("load_spec", "parse_spec", "JobSpec"):
        from geoseg import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
