"""Export a finished case group to NIfTI on exactly the input's voxel grid and affine."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from geoseg.errors import StoreError
from geoseg.sinks._zarr import open_group

__all__ = ["export_nifti"]


def export_nifti(store: str | os.PathLike[str], name: str, out: str | os.PathLike[str], array: str = "mask") -> Path:
    """Write ``<store>/<name>/<array>`` (``mask`` or ``lesion_id``) as ``.nii``/``.nii.gz``.

    The header is the input's first modality's (qform, sform and their codes kept), so the
    mask overlays the scan in any viewer; without that file, the stored 4x4 affine is used.
    """
    g = open_group(store, name)
    meta = g.attrs.get("geoseg", {})
    if meta.get("status") != "complete":
        raise StoreError(f"{store}: group {name!r} is not complete (status {meta.get('status')!r}); rerun the job first")
    if "affine" not in g.attrs:
        raise StoreError(f"{store}: group {name!r} is not a volume (no affine); export rasters with --format cog")
    if array not in g:
        raise StoreError(f"{store}: group {name!r} has no array {array!r} (has {sorted(g.array_keys())})")
    data = np.asarray(g[array][...])
    affine = np.asarray(g.attrs["affine"], np.float64)
    source = Path(meta.get("files", [""])[0])
    if source.is_file():
        header = nib.load(source).header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1.0, 0.0)
        img = nib.Nifti1Image(data, header.get_best_affine(), header)
        if not np.allclose(img.affine, affine, atol=1e-6):
            raise StoreError(f"{source}: its affine changed since geoseg ran ({affine.tolist()}); rerun the job")
    else:
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    out = Path(out)
    if not out.parent.is_dir():
        raise StoreError(f"{out}: folder {out.parent} does not exist; create it or choose another --out")
    try:
        nib.save(img, out)
    except OSError as e:
        raise StoreError(f"{out}: cannot write the NIfTI file ({e.strerror}); check the folder exists") from None
    return out
