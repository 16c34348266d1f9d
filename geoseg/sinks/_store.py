"""An output store addressed by a path or URL, read and written as keys.

Everything geoseg keeps in a store (Zarr groups and arrays, block markers, status, tables,
the run report) goes through zarr's store API: the same code serves a local folder and an
object store, where no rename or create-only write exists. :mod:`geoseg.sinks._layout` is the
one place that knows which key holds what.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from zarr.abc.store import Store as ZarrStore
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from geoseg._remote import check_bucket, check_url, explain, filesystem, is_url
from geoseg.errors import GeosegError, StoreError

T = TypeVar("T")

__all__ = ["Store", "StoreLike", "as_store"]


class Store:
    """A Zarr store by URL, with the few key operations geoseg needs beyond zarr's arrays.

    ``url`` is a local folder (made absolute and normalised) or an object-store URL
    (``s3://bucket/prefix``, ``gs://``, ``az://``; see :mod:`geoseg._remote`), whose
    credentials and endpoint come from the environment. Pickles as its URL, so tasks on any
    node reopen it. Keys are ``/``-separated, relative to the store's root.

    Raises:
        StoreError: a URL geoseg cannot use (unknown scheme, its library not installed,
            credentials in the URL).
    """

    def __init__(self, url: str | os.PathLike[str]) -> None:
        text = os.fspath(url)
        self.remote = is_url(text)
        if self.remote:
            check_url(text, StoreError, "store")
            self.url = text.rstrip("/")
            self.path = Path(text)  # for messages only: never opened
        else:
            path = Path(text.removeprefix("file://")).expanduser()
            self.path = Path(os.path.normpath(path.absolute()))
            self.url = str(self.path)
        self._zarr: ZarrStore | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.url,))

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def __str__(self) -> str:
        return self.url

    @property
    def zarr(self) -> ZarrStore:
        """The zarr store object, for ``zarr.open_group(store.zarr, ...)``."""
        if self._zarr is None:
            if self.remote:
                root = self.url.split("://", 1)[1]
                self._zarr = FsspecStore(filesystem(self.url, asynchronous=True), path=root)
            else:
                self._zarr = LocalStore(self.path)
        return self._zarr

    def exists(self) -> bool:
        """Whether anything is stored yet (a store that is a file raises)."""
        if self.remote:
            return bool(self._remote_call("read", lambda fs: fs.ls(self.url, detail=False)))
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.url}: is a file, not a Zarr store folder; give a store folder")
        return self.path.is_dir()

    def _remote_call(self, what: str, call: Any) -> Any:
        """``call(fs)`` on the object store, its failures as one line (a missing prefix is empty)."""
        fs = filesystem(self.url)
        try:
            return call(fs)
        except FileNotFoundError:
            check_bucket(self.url, StoreError)  # a missing bucket, not a missing prefix: say so
            return []
        except Exception as e:  # noqa: BLE001  (botocore, aiohttp, gcsfs each raise their own kinds)
            raise StoreError(f"{explain(self.url, e)} (while trying to {what} the store)") from None

    def check_writable(self) -> None:
        """Raise one line where the store cannot be created or written: tries it (creating the
        folder, and removing it again when this call made it; on an object store, writing and
        deleting a probe key), since permission bits do not tell for root or for file systems
        such as /proc, nor bucket policies for object stores."""
        if self.remote:
            check_bucket(self.url, StoreError)
            key = f"{self.url}/.geoseg/probe-{uuid.uuid4().hex}"
            self._remote_call("write to", lambda fs: fs.pipe_file(key, b""))
            self._remote_call("write to", lambda fs: fs.rm_file(key))
            return
        if self.exists():
            if not os.access(self.path, os.W_OK | os.X_OK):
                raise StoreError(f"{self.url}: the store is not writable; check permissions or choose another --output")
            return
        made: list[Path] = []
        probe = self.path
        while not probe.exists():
            made.append(probe)
            probe = probe.parent
        try:
            self.path.mkdir(parents=True)
        except OSError as e:
            raise StoreError(
                f"{self.url}: cannot create the store ({e.strerror or e}); choose a writable --output"
            ) from None
        for p in made:  # leave nothing behind: the store is created when a group is
            try:
                p.rmdir()
            except OSError:
                break

    def _remote_errors(self, what: str, call: Callable[[], T]) -> T:
        """``call()``; on an object store, any failure of the store's library (a lost endpoint,
        a throttled bucket: botocore and aiohttp raise their own types) is one line naming the URL."""
        if not self.remote:
            return call()
        try:
            return call()
        except GeosegError:
            raise
        except Exception as e:  # noqa: BLE001  (botocore/aiohttp/fsspec errors share no base class)
            raise StoreError(f"{explain(self.url, e)} (while {what})") from None

    def get(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None where there are none."""
        buf = self._remote_errors(f"reading {key}", lambda: sync(self.zarr.get(key, default_buffer_prototype())))
        return None if buf is None else buf.to_bytes()

    def set(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (whole-object write: readers see the old or the new bytes)."""
        try:
            self._remote_errors(
                f"writing {key}", lambda: sync(self.zarr.set(key, default_buffer_prototype().buffer.from_bytes(data)))
            )
        except StoreError:
            raise
        except OSError as e:  # a local store (a remote one's errors are StoreErrors already)
            raise StoreError(f"{self.url}: cannot write {key} ({e.strerror or e}); check the store is writable") from None

    def has(self, key: str) -> bool:
        return bool(self._remote_errors(f"looking for {key}", lambda: sync(self.zarr.exists(key))))

    def list_prefix(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder-like prefix ending in ``/``), sorted."""
        if not self.remote and not self.path.is_dir():
            return []

        async def collect() -> list[str]:
            return [k async for k in self.zarr.list_prefix(prefix)]

        return sorted(self._remote_errors(f"listing {prefix}", lambda: sync(collect())))

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix``."""
        try:
            self._remote_errors(f"deleting {prefix}", lambda: sync(self.zarr.delete_dir(prefix.rstrip("/"))))
        except StoreError:
            raise
        except OSError as e:  # a local store (a remote one's errors are StoreErrors already)
            raise StoreError(f"{self.url}: cannot delete {prefix} ({e.strerror or e}); check permissions") from None


StoreLike = Store | str | os.PathLike[str]


def as_store(store: StoreLike) -> Store:
    return store if isinstance(store, Store) else Store(store)
