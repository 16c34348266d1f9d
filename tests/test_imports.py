"""Import boundaries: the pure core imports no I/O, Ray or torch; planning imports no torch or Ray.

Each check runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("ray", "torch", "torchvision", "rasterio", "nibabel", "zarr")


def _imported(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["geoseg.core.grid", "geoseg.core.stitch", "geoseg.core.volume", "geoseg.core.lesions", "geoseg.core.water",
     "geoseg.core.lines"])
def test_core_imports_no_io_ray_or_torch(module: str) -> None:
    assert not _imported(module) & set(HEAVY), f"{module} must stay pure (numpy/scipy only)"


@pytest.mark.parametrize("module", ["geoseg", "geoseg.spec", "geoseg.models", "geoseg.plan", "geoseg.cli"])
def test_planning_imports_neither_torch_nor_ray(module: str) -> None:
    """A spec is parsed and a job planned without torch or Ray: a bad spec fails in well under 2 s."""
    got = _imported(module) & {"ray", "torch", "torchvision"}
    assert not got, f"{module} imports {sorted(got)}"
