"""Export a finished case group to NIfTI on exactly the input's voxel grid and affine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from geoseg._remote import is_url
from geoseg.errors import StoreError

from ._export import finished_group, output_file, written
from ._store import StoreLike, as_store
from ._zarr import array as zarr_array

__all__ = ["export_nifti"]


def export_nifti(store: StoreLike, name: str, out: str | os.PathLike[str], array: str = "mask") -> Path | str:
    """Write ``<store>/<name>/<array>`` (``mask`` or ``lesion_id``) as ``.nii``/``.nii.gz``.

    The header is the input's first modality's (qform, sform and their codes kept), so the
    mask overlays the scan in any viewer; without that file, the stored 4x4 affine is used.

    Raises:
        StoreError: no such complete case or array, the input's affine changed, or the file
            cannot be written.
    """
    g, attrs, meta = finished_group(store, name, "volume")
    data = np.asarray(zarr_array(g, array)[...])
    affine = np.asarray(attrs["affine"], np.float64)
    files = meta.get("files") or [""]
    source = str(files[0])
    if is_url(source) or Path(source).is_file():
        from geoseg.sources import nifti_image  # noqa: PLC0415  (the input's header: only for this export)

        header: Any = nifti_image(source).header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1.0, 0.0)
        img = nib.Nifti1Image(data, header.get_best_affine(), header)
        if not np.allclose(img.affine, affine, atol=1e-6):
            raise StoreError(f"{source}: its affine changed since geoseg ran ({affine.tolist()}); rerun the job")
    else:
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    if not str(out).endswith((".nii", ".nii.gz")):
        raise StoreError(f"{out}: a NIfTI export needs a .nii or .nii.gz name (from {as_store(store).url}/{name})")
    with output_file(out, "NIfTI file") as staging:
        nib.save(img, staging)
    return written(out)
