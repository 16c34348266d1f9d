"""What every export shares: a finished group of the right kind, and an output file written
whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import zarr

from geoseg._remote import check_bucket, explain, is_url, url_name
from geoseg.errors import StoreError

from ._store import StoreLike, as_store
from ._zarr import attrs, open_group

__all__ = ["finished_group", "output_file", "written"]


def finished_group(
    store: StoreLike, name: str, kind: Literal["raster", "volume"]
) -> tuple[zarr.Group, dict[str, Any], dict[str, Any]]:
    """``(group, attributes, geoseg metadata)`` of a complete group of ``kind``.

    Raises:
        StoreError: no such store or group (naming those there are), not complete, or the
            other kind (naming the export that fits it).
    """
    st = as_store(store)
    g = open_group(st, name)
    a = attrs(g)
    meta = dict(a.get("geoseg") or {})
    if meta.get("status") != "complete":
        raise StoreError(f"{st.url}: group {name!r} is not complete (status {meta.get('status')!r}); rerun the job first")
    if kind == "raster" and "spatial:transform" not in a:
        raise StoreError(f"{st.url}: group {name!r} is an MRI case, not a raster scene; export it with --format nifti")
    if kind == "volume" and "affine" not in a:
        raise StoreError(f"{st.url}: group {name!r} is a raster scene, not an MRI case; export it with --format cog")
    return g, a, meta


def written(out: str | os.PathLike[str]) -> Path | str:
    """What an export returns: the local file's Path, or the object URL as given."""
    text = os.fspath(out)
    return text if is_url(text) else Path(text)


@contextmanager
def output_file(out: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """A temporary path beside ``out`` to write; renamed to ``out`` only when the body succeeds,
    so a failed export never leaves a half-written file where ``out`` was. For an object URL
    (``s3://...``) the file is written in a local temporary folder and uploaded whole when
    the body succeeds (an object is replaced at once: no reader sees half of it).

    Raises:
        StoreError: the folder (or bucket) is missing or not writable, or the write fails (one
            line, no traceback).
    """
    text = os.fspath(out)
    if is_url(text):
        with _object_file(text) as staging:
            yield staging
        return
    target = Path(out)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise StoreError(f"{target}: folder {folder} does not exist; create it or choose another --out")
    if target.is_dir():
        raise StoreError(f"{target}: is a folder; give a file name for the {what}")
    try:
        suffix = "".join(target.suffixes[-2:]) if target.name.endswith(".nii.gz") else target.suffix
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise StoreError(f"{target}: cannot write in {folder} ({e.strerror or e}); choose a writable folder") from None
    staging = Path(tmp)
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)  # mkstemp made it 0600; an export is a file like any other
        os.replace(staging, target)
    except OSError as e:
        raise StoreError(f"{target}: cannot write the {what} ({e.strerror or e}); check the folder and free space") from None
    finally:
        staging.unlink(missing_ok=True)


@contextmanager
def _object_file(url: str) -> Iterator[Path]:
    fs = check_bucket(url, StoreError, "export")
    name = url_name(url)
    with tempfile.TemporaryDirectory(prefix="geoseg-export-") as tmp:
        staging = Path(tmp) / name
        yield staging
        try:
            fs.put_file(str(staging), url)
        except Exception as e:  # noqa: BLE001  (botocore, aiohttp, gcsfs each raise their own kinds)
            raise StoreError(f"{explain(url, e)} (while uploading the export)") from None
