"""NIfTI MRI cases through nibabel: find a case's files and headers once, then load its voxels.

A case is either a folder with one 3-D ``.nii``/``.nii.gz`` file per modality, found by
filename patterns (:data:`DEFAULT_PATTERNS`), or one 4-D NIfTI whose 4th axis holds the
modalities in the requested order. :func:`open_case` reads headers only (plus a cheap check
that compressed data is complete) and returns a :class:`CaseInfo` of plain values;
:func:`load_case` reads the voxels in the file's own voxel order (reorientation lives in
:mod:`geoseg.core.volume`).
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from geoseg._remote import check_bucket, check_url, explain, filesystem, is_url, join, url_name
from geoseg.core.volume import Orientation, check_affine, orientation_of, voxel_volume_mm3
from geoseg.errors import InputError, SourceError, SpecError, first_line
from geoseg.sources._identity import content_identity, relative_hint

__all__ = ["DEFAULT_PATTERNS", "CaseInfo", "open_case", "load_case", "nifti_image"]

_NOT_LABELS = ("!*mask.nii*", "!*seg*", "!*label*")
_T1C = ("*t1c*", "*t1ce*", "*t1gd*", "*t1_gd*", "*t1-gd*", "*t1post*", "*t1_post*", "*t1-post*")

DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    # Case-insensitive globs on file names, per modality role. A file belongs to a role when it
    # matches one of the role's patterns and none of its "!" patterns. Covers BraTS 2013-2015
    # (Flair_*, T1c_*), BraTS 2017-2021 (*_flair, *_t1, *_t1ce, *_t2), BraTS 2023 (*-t2f,
    # *-t1n, *-t1c, *-t2w) and BIDS-like names (*_T1w, *_T2w); never label or mask files.
    "flair": ("*flair*", "*t2f.nii*", *_NOT_LABELS),
    "t1c": (*_T1C, *_NOT_LABELS),
    "t1": ("*t1.nii*", "*t1_*.nii*", "*t1w*", "*t1n*", *("!" + p for p in _T1C), *_NOT_LABELS),
    "t2": ("*t2.nii*", "*t2_*.nii*", "*t2w*", "!*flair*", "!*t2f.nii*", *_NOT_LABELS),
}

_SUFFIXES = (".nii.gz", ".nii")
_AFFINE_ATOL = 1e-4
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, ImageFileError, HeaderDataError)
"""What nibabel, gzip and zlib raise for a file that is not a (complete) NIfTI."""


@dataclass(frozen=True)
class CaseInfo:
    """What geoseg knows of a case after reading its headers: plain values, cheap to pickle.

    ``files[c]`` holds modality ``modalities[c]``; when ``stacked`` every entry is the same
    4-D file and ``c`` is its index along the 4th axis. ``shape_xyz`` and ``affine`` (4x4,
    voxel to world in mm) are in the file's voxel order; ``voxel_mm`` are the lengths of the
    affine's voxel axes; ``dtype`` is the header's on-disk type; ``identity`` fingerprints the
    files' content (:func:`~geoseg.sources._identity.content_identity`) for resuming.
    """

    path: str
    name: str
    modalities: tuple[str, ...]
    files: tuple[str, ...]
    stacked: bool
    shape_xyz: tuple[int, int, int]
    affine: tuple[tuple[float, float, float, float], ...]
    voxel_mm: tuple[float, float, float]
    dtype: str
    identity: str

    def __post_init__(self) -> None:
        if len(self.files) != len(self.modalities) or not self.files:
            raise InputError(
                f"case {self.path}: {len(self.files)} files for modalities {list(self.modalities)}; "
                f"build it with open_case"
            )

    @property
    def orientation(self) -> Orientation:
        """How the voxel axes map onto RAS (see :class:`geoseg.core.volume.Orientation`)."""
        return orientation_of(np.asarray(self.affine), self.files[0])

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL: ``|det|`` of the affine's 3x3 part / 1000, right for sheared
        (tilted-gantry) and oblique affines, where the product of the column lengths is not."""
        return voxel_volume_mm3(np.asarray(self.affine)) / 1000.0


def _pattern_table(
    modalities: tuple[str, ...], patterns: Mapping[str, Sequence[str]] | None
) -> dict[str, tuple[str, ...]]:
    table = dict(DEFAULT_PATTERNS)
    for role, pats in (patterns or {}).items():
        table[str(role)] = (pats,) if isinstance(pats, str) else tuple(str(p) for p in pats)
    for mod in modalities:
        if mod not in table:
            raise SpecError(
                f"modality {mod!r} has no filename patterns (known: {sorted(table)}); add "
                f"modality_patterns: {{{mod}: ['*{mod}*']}} to the spec"
            )
    return table


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    low = name.lower()
    keep = [p.lower() for p in patterns if not p.startswith("!")]
    drop = [p[1:].lower() for p in patterns if p.startswith("!")]
    return any(fnmatchcase(low, p) for p in keep) and not any(fnmatchcase(low, p) for p in drop)


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(_SUFFIXES) and not name.startswith(".")


def _list_folder(folder: Path | str) -> list[str]:
    """Names of the NIfTI files in a case folder (or under an object URL's prefix), sorted."""
    if isinstance(folder, str):
        fs = filesystem(folder)
        try:
            names = [url_name(k) for k in fs.ls(folder, detail=False)]
        except FileNotFoundError:
            names = []
        except Exception as e:  # noqa: BLE001  (botocore, aiohttp, gcsfs each raise their own kinds)
            raise SourceError(explain(folder, e)) from None
        if not names:
            check_bucket(folder, SourceError, "input")
            raise SourceError(f"{folder}: no such case folder or object; check the URL")
        return sorted(n for n in names if _is_nifti(n))
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_file() and _is_nifti(e.name))
    except OSError as e:
        raise SourceError(
            f"{folder}: cannot list the case folder ({e.strerror or e}); check permissions"
        ) from None


def _find_files(
    folder: Path | str, modalities: tuple[str, ...], table: dict[str, tuple[str, ...]]
) -> list[Path | str]:
    present = _list_folder(folder)
    shown = ", ".join(present[:30]) + (f", ... ({len(present)} in all)" if len(present) > 30 else "")
    found: list[Path | str] = []
    owner: dict[str, str] = {}
    for mod in modalities:
        hits = [n for n in present if _matches(n, table[mod])]
        if not hits:
            raise SourceError(
                f"{folder}: no file for modality {mod!r} (patterns tried: {list(table[mod])}; NIfTI files "
                f"present: {shown or 'none'}); rename the file or set modality_patterns: "
                f"{{{mod}: ['*name*']}} in the spec"
            )
        if len(hits) > 1:
            raise SourceError(
                f"{folder}: {len(hits)} files match modality {mod!r} ({', '.join(hits)}; patterns "
                f"{list(table[mod])}); keep one or set a narrower modality_patterns: {{{mod}: [...]}} "
                f"in the spec"
            )
        if hits[0] in owner:
            raise SourceError(
                f"{folder}: file {hits[0]} matches both modality {owner[hits[0]]!r} and {mod!r}; set "
                f"modality_patterns in the spec so each modality has its own file"
            )
        owner[hits[0]] = mod
        found.append(join(folder, hits[0]) if isinstance(folder, str) else folder / hits[0])
    return found


def _remote_image(url: str) -> Any:
    """A NIfTI image from an object URL: its bytes through fsspec (gunzipped for ``.gz``) into
    nibabel, checked complete (a volume is small: the whole file is read once)."""
    fs = filesystem(url)
    try:
        raw = fs.cat_file(url)
    except FileNotFoundError:
        check_bucket(url, SourceError, "input")
        raise SourceError(f"{url}: no such object; check the URL") from None
    except Exception as e:  # noqa: BLE001  (botocore, aiohttp, gcsfs each raise their own kinds)
        raise SourceError(explain(url, e)) from None
    if url.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(
                f"{url}: compressed data is truncated or corrupt ({first_line(e, url)}); re-copy or re-export it"
            ) from None
    try:
        img = nib.Nifti1Image.from_bytes(raw)
    except _READ_ERRORS as e:
        raise SourceError(f"{url}: not a readable NIfTI ({first_line(e, url)}); re-export it as .nii or .nii.gz") from None
    proxy: Any = img.dataobj
    expected = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    if len(raw) < expected:
        raise SourceError(
            f"{url}: file is truncated ({len(raw)} bytes of image file, header needs {expected}); re-copy "
            f"or re-export it"
        )
    return img


def _open_image(path: Path | str) -> Any:
    """``nibabel.load`` with its failures as one-line :class:`SourceError`; reads the header
    only (of an object URL, the whole file)."""
    if isinstance(path, str) and is_url(path):
        return _remote_image(path)
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as e:
        raise SourceError(
            f"{path}: not a readable NIfTI ({first_line(e, path)}); re-export it as .nii or .nii.gz"
        ) from None
    if not isinstance(img, nib.Nifti1Image):
        raise SourceError(f"{path}: opened as {type(img).__name__}, not NIfTI; convert it to .nii.gz")
    return img


def _spatial_dims(path: Path | str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape without trailing length-1 axes past the third: (X, Y, Z) or (X, Y, Z, N)."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        raise InputError(
            f"{path}: image of shape {tuple(shape)} is {len(dims)}-D; geoseg segments 3-D volumes, "
            f"give a 3-D NIfTI (one file per modality) or a 4-D stack"
        )
    if len(dims) > 4:
        raise InputError(
            f"{path}: image of shape {tuple(shape)} has {len(dims)} axes; give 3-D volumes or one "
            f"4-D stack of modalities"
        )
    if min(dims) < 1:
        raise InputError(f"{path}: image of shape {tuple(shape)} is empty; give a non-empty volume")
    return tuple(dims)


def _check_dtype(path: Path | str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise InputError(
            f"{path}: voxel type {dtype} is not a real number type; convert to float32 "
            f"(e.g. nibabel: img.set_data_dtype('float32'))"
        )


def nifti_image(path: str) -> Any:
    """The ``Nifti1Image`` of a file or object URL (one line :class:`SourceError` where unreadable)."""
    return _open_image(path if is_url(path) else Path(path))


def _check_complete(path: Path | str, img: Any) -> None:
    """Raise if the file holds fewer bytes than its header promises, cheaply where possible.

    An uncompressed file is checked by size. A gzip file first by its trailer (the uncompressed
    size mod 2**32, which a truncated file lacks); only on a mismatch (or an unusual file with
    several gzip members) is it decompressed in full to tell truncation from a false alarm.
    """
    if isinstance(path, str):
        return  # an object URL: checked as it was read (_remote_image)
    proxy = img.dataobj  # nibabel's ArrayProxy: the offset, shape and dtype it will read
    expected = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    try:
        size = path.stat().st_size
        if path.name.lower().endswith(".gz"):
            with path.open("rb") as f:
                f.seek(max(size - 4, 0))
                isize = int.from_bytes(f.read(4), "little")
            if size >= 18 and isize == expected % (1 << 32):
                return
            size = 0
            with gzip.open(path, "rb") as g:
                while chunk := g.read(1 << 24):
                    size += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(
            f"{path}: compressed data is truncated or corrupt ({first_line(e, path)}); re-copy or re-export it"
        ) from None
    if size < expected:
        raise SourceError(
            f"{path}: file is truncated ({size} bytes of image file, header needs {expected}); re-copy "
            f"or re-export it"
        )


def _fmt_affine(a: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{float(x):.6g}" for x in row) + "]" for row in a) + "]"


def _check_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    if isinstance(modalities, str):
        modalities = (modalities,)
    mods = tuple(str(m) for m in modalities)
    if not mods:
        raise SpecError("no modalities given: list the case's channels in model order, e.g. ('flair', 't1c')")
    if len(set(mods)) != len(mods):
        raise SpecError(f"modalities {list(mods)} repeat a name: list each modality once")
    return mods


def _read_header(
    path: Path | str, n_modalities: int, stacked: bool
) -> tuple[Path | str, tuple[int, ...], np.ndarray, np.dtype]:
    """Open one file's header and check it: ``(path, (X, Y, Z), affine, on-disk dtype)``."""
    img = _open_image(path)
    dims = _spatial_dims(path, tuple(int(s) for s in img.shape))
    n = dims[3] if len(dims) == 4 else 1
    if stacked and n != n_modalities:
        raise InputError(
            f"{path}: holds {n} volume(s) along its 4th axis but {n_modalities} modalities were asked "
            f"for; list exactly one modality per volume, in file order"
        )
    if not stacked and n != 1:
        raise InputError(
            f"{path}: is 4-D with {n} volumes inside a case folder; give one 3-D file per modality, or "
            f"pass the 4-D file itself as the case"
        )
    aff = check_affine(img.affine, str(path))
    dtype = np.dtype(img.get_data_dtype())
    _check_dtype(path, dtype)
    _check_complete(path, img)
    return path, dims[:3], aff, dtype


def open_case(
    path: str | os.PathLike[str],
    modalities: Sequence[str],
    patterns: Mapping[str, Sequence[str]] | None = None,
) -> CaseInfo:
    """Find a case's files, read their headers and check they form one multi-modal volume.

    ``path`` is a case folder (one 3-D file per modality, matched by ``patterns`` merged over
    :data:`DEFAULT_PATTERNS`) or a single ``.nii``/``.nii.gz`` whose 4th axis holds
    ``modalities`` in order (a 3-D file, or a 4th axis of length 1, is one modality). Reads
    no voxels.

    Raises:
        SpecError: no or repeated modalities, or a modality without patterns.
        SourceError: a missing path or file, no or several files for a modality, a file that
            is not NIfTI, or data shorter than the header says (truncated download).
        InputError: a 2-D image, a 4-D file whose 4th axis does not match ``modalities``,
            modalities of different shapes or affines, a singular affine, a complex voxel type.
    """
    mods = _check_modalities(modalities)
    text = os.fspath(path)
    p: Path | str = text.rstrip("/") if is_url(text) else Path(path)
    files: list[Path | str]
    if isinstance(p, str):  # an object URL: a .nii/.nii.gz object, or a prefix holding a case
        check_url(p, SourceError, "input")
        name = url_name(p)
        if _is_nifti(name):
            files, stacked = [p] * len(mods), True
        else:
            files, stacked = _find_files(p, mods, _pattern_table(mods, patterns)), False
    elif not p.exists():
        raise SourceError(
            f"{p}: no such case folder or file; check the path{relative_hint(p)}"
        )
    elif p.is_dir():
        files = _find_files(p, mods, _pattern_table(mods, patterns))
        name = p.name
        stacked = False
    else:
        if not _is_nifti(p.name):
            raise SourceError(f"{p}: not a .nii or .nii.gz file; give a NIfTI file or a case folder")
        files = [p] * len(mods)
        name = p.name
        stacked = True
    if stacked:
        name = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name.rsplit(".", 1)[0]

    headers = [_read_header(f, len(mods), stacked) for f in dict.fromkeys(files)]
    f0, shape, aff, _ = headers[0]
    for f, dims, aff_f, _ in headers[1:]:
        if dims != shape:
            raise InputError(
                f"{f}: shape {dims} differs from {shape} of {f0}; every modality of a case must be on "
                f"the same voxel grid (co-register and resample them first)"
            )
        if not np.allclose(aff_f, aff, rtol=0.0, atol=_AFFINE_ATOL):
            raise InputError(
                f"{f}: affine {_fmt_affine(aff_f)} differs from {_fmt_affine(aff)} of {f0} (more than "
                f"{_AFFINE_ATOL:g}); every modality of a case must be on the same voxel grid "
                f"(co-register and resample them first)"
            )
    dtype = np.result_type(*(h[3] for h in headers))
    voxel_mm = np.linalg.norm(aff[:3, :3], axis=0)
    try:
        identity = content_identity(list(dict.fromkeys(files)), salt="modalities=" + ",".join(mods) + ";")
    except OSError as e:
        if isinstance(p, str):
            raise SourceError(explain(p, e)) from None
        raise SourceError(f"{p}: cannot read it ({e.strerror or e}); check permissions") from None
    return CaseInfo(
        path=p if isinstance(p, str) else str(p.resolve()),
        name=name,
        modalities=mods,
        files=tuple(f if isinstance(f, str) else str(f.resolve()) for f in files),
        stacked=stacked,
        shape_xyz=(int(shape[0]), int(shape[1]), int(shape[2])),
        affine=tuple(tuple(float(x) for x in row) for row in aff),  # type: ignore[misc]
        voxel_mm=(float(voxel_mm[0]), float(voxel_mm[1]), float(voxel_mm[2])),
        dtype=str(dtype),
        identity=identity,
    )


def _read_voxels(path: str, shape: tuple[int, ...]) -> np.ndarray:
    """All voxels of ``path`` as float32 (scaling applied), trailing length-1 axes dropped."""
    img = _open_image(path if is_url(path) else Path(path))
    try:
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except _READ_ERRORS as e:
        raise SourceError(
            f"{path}: voxel data is truncated or corrupt ({first_line(e, path)}); re-copy or re-export it"
        ) from None
    if data.size != int(np.prod(shape)):
        raise SourceError(
            f"{path}: shape {data.shape} is not {shape} as when the case was opened; the file changed, "
            f"open the case again"
        )
    return data.reshape(shape)


def load_case(info: CaseInfo) -> np.ndarray:
    """The case's voxels as (C, X, Y, Z) float32, channels in ``info.modalities`` order.

    Voxels are in the file's own order (no reorientation) with NIfTI scaling applied.

    Raises:
        SourceError: a file that vanished, changed shape, or whose data is truncated/corrupt.
        InputError: NaN/inf voxels (naming the file and modality).
    """
    c_n = len(info.modalities)
    out = np.empty((c_n, *info.shape_xyz), np.float32)
    if info.stacked:
        data = _read_voxels(info.files[0], (*info.shape_xyz, c_n))
        for c in range(c_n):
            out[c] = data[..., c]
        del data
    else:
        for c, f in enumerate(info.files):
            out[c] = _read_voxels(f, info.shape_xyz)
    for c, (mod, f) in enumerate(zip(info.modalities, info.files, strict=True)):
        bad = out[c].size - int(np.count_nonzero(np.isfinite(out[c])))
        if bad:
            where = f"{f} (volume {c} of the 4th axis)" if info.stacked else f
            raise InputError(
                f"{where}: modality {mod!r} has {bad} NaN/inf voxels of {out[c].size}; replace them "
                f"(e.g. numpy.nan_to_num) or fix the file"
            )
    return out
