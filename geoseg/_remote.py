"""Object storage URLs (``s3://``, ``gs://``, ``az://``): the one module that knows them.

Inputs and outputs may be URLs. Bytes go through fsspec (s3fs, gcsfs, adlfs), GeoTIFF reads
through GDAL's virtual file systems (``/vsis3/``, ``/vsigs/``, ``/vsiaz/``). Credentials and
the endpoint come only from the standard environment variables of each service
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_CONNECTION_STRING``...), never from a spec
or the URL, so a job spec can be shared and a Ray task on any node reads its own environment.

Every failure here is one line naming the URL, what is wrong and the fix (:func:`explain`).
fsspec and the service's library are imported on first use: local jobs never load them.
"""

from __future__ import annotations

import atexit
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from geoseg.errors import GeosegError

__all__ = [
    "SCHEMES",
    "is_url",
    "check_url",
    "filesystem",
    "storage_options",
    "check_bucket",
    "explain",
    "gdal_path",
    "gdal_options",
    "url_name",
    "join",
]


@dataclass(frozen=True)
class Scheme:
    """An object store geoseg can use: the fsspec package that serves it and GDAL's prefix."""

    package: str
    vsi: str
    env: str  # where its credentials come from, for messages


_AWS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
_GCS = "GOOGLE_APPLICATION_CREDENTIALS"
_AZ = "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY)"

SCHEMES: dict[str, Scheme] = {
    "s3": Scheme("s3fs", "/vsis3/", _AWS),
    "gs": Scheme("gcsfs", "/vsigs/", _GCS),
    "gcs": Scheme("gcsfs", "/vsigs/", _GCS),
    "az": Scheme("adlfs", "/vsiaz/", _AZ),
    "abfs": Scheme("adlfs", "/vsiaz/", _AZ),
}
"""URL schemes of object stores, each served by an fsspec package and a GDAL virtual file system."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` is a URL other than ``file://`` (which is a local path).

    >>> is_url("s3://bucket/scene.tif"), is_url("/data/scene.tif"), is_url("file:///data/x.tif")
    (True, False, False)
    """
    s = os.fspath(text)
    return isinstance(s, str) and bool(_URL.match(s)) and not s.lower().startswith("file://")


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def url_name(url: str) -> str:
    """The last part of a URL's path (its "file name").

    >>> url_name("s3://bucket/scenes/a.tif"), url_name("s3://bucket/case1/")
    ('a.tif', 'case1')
    """
    return url.rstrip("/").rsplit("/", 1)[-1]


def join(url: str, name: str) -> str:
    """``url/name``, with exactly one ``/`` between."""
    return f"{url.rstrip('/')}/{name.lstrip('/')}"


def check_url(url: str, error: type[GeosegError], role: str) -> None:
    """Raise ``error`` (one line) for a URL geoseg cannot use as ``role`` ("input", "store",
    "export"): an unknown scheme, its library not installed, credentials written into the URL,
    or no bucket named."""
    scheme = _scheme(url)
    known = ", ".join(f"{s}://" for s in ("s3", "gs", "az"))
    if scheme not in SCHEMES:
        raise error(
            f"{url}: {scheme}:// cannot be a geoseg {role} (every Ray task on every node must read and write it); "
            f"give a local path or a {known} URL"
        )
    parts = urlsplit(url)
    if parts.username or parts.password:
        shown = url.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[-1], 1)
        raise error(
            f"{shown}: credentials in the URL are never used (they would travel with the spec and the tasks); "
            f"remove them and set {SCHEMES[scheme].env} in the environment"
        )
    if not parts.netloc:
        raise error(f"{url}: names no bucket; write it as {scheme}://BUCKET/path")
    _fs_class(url, error)


def _fs_class(url: str, error: type[GeosegError]) -> Any:
    import fsspec  # noqa: PLC0415  (only for jobs that name a URL)

    scheme = _scheme(url)
    try:
        return fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError):
        pkg = SCHEMES[scheme].package if scheme in SCHEMES else f"an fsspec backend for {scheme}://"
        raise error(f"{url}: {scheme}:// needs the {pkg} package, which is not installed; pip install {pkg}") from None


def _aws_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url`` taken from the environment only (the endpoint, short
    connection timeouts and few retries, so an unreachable endpoint fails in seconds)."""
    if _scheme(url) != "s3":
        return {"use_listings_cache": False}
    opts: dict[str, Any] = {
        "use_listings_cache": False,  # markers come and go under other writers: always list afresh
        "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}},
    }
    endpoint = _aws_endpoint()
    if endpoint:
        opts["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


_ENV_KEYS = re.compile(r"^(AWS_|GOOGLE_|GCS|AZURE_)")
_FILESYSTEMS: dict[tuple[Any, ...], Any] = {}


def filesystem(url: str, asynchronous: bool = False) -> Any:
    """The fsspec file system serving ``url``, configured from the environment.

    One per scheme, kind and process while the environment stays the same (a changed
    credential or endpoint gets a new one): one connection pool, however many stores a task
    opens. ``asynchronous=True`` is the kind zarr's stores take (used on zarr's event loop).
    """
    cls = _fs_class(url, GeosegError)
    key = (_scheme(url), asynchronous, tuple(sorted((k, v) for k, v in os.environ.items() if _ENV_KEYS.match(k))))
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        fs = _FILESYSTEMS[key] = cls(asynchronous=asynchronous, skip_instance_cache=True, **storage_options(url))
        if asynchronous and not _FILESYSTEMS.get(("atexit",)):
            _FILESYSTEMS[("atexit",)] = atexit.register(_close_async)
    return fs


def _close_async() -> None:
    """Close the sessions of zarr's asynchronous file systems on zarr's event loop, before zarr
    stops it: aiohttp otherwise reports each as an "Unclosed client session" at exit."""
    from zarr.core.sync import _get_loop  # noqa: PLC0415  (zarr is loaded: it made these)

    for key, fs in list(_FILESYSTEMS.items()):
        client = getattr(fs, "_s3", None)
        if len(key) > 1 and key[1] and client is not None and hasattr(type(fs), "close_session"):
            try:
                type(fs).close_session(_get_loop(), client)
            except Exception:  # noqa: BLE001,S110  (best effort at exit: never mask the real exit status)
                pass


def bucket_of(url: str) -> str:
    return urlsplit(url).netloc


def explain(url: str, e: BaseException) -> str:
    """One line for a failure on ``url``: what went wrong and the fix.

    Tells apart an unreachable endpoint, missing or rejected credentials, a bucket that does
    not exist and a missing object; anything else keeps the library's first line.
    """
    scheme = _scheme(url)
    creds = SCHEMES[scheme].env if scheme in SCHEMES else "the service's credentials"
    name = type(e).__name__
    text = str(e).strip().splitlines()[0] if str(e).strip() else name
    low = text.lower()
    code = ""
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
    if name == "NoCredentialsError" or "unable to locate credentials" in low or "no credentials" in low:
        return f"{url}: no credentials found; set {creds} in the environment (of every Ray node)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError") or (
        "could not connect" in low or "connection refused" in low or "cannot connect" in low
    ):
        where = _aws_endpoint() if scheme == "s3" else None
        endpoint = f"endpoint {where}" if where else f"the {scheme}:// endpoint"
        hint = "check AWS_ENDPOINT_URL and that the server is up" if scheme == "s3" else "check the network"
        return f"{url}: cannot reach {endpoint}; {hint}"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken") or any(
        s in low for s in ("invalidaccesskeyid", "signaturedoesnotmatch", "access key id you provided")
    ):
        return f"{url}: the credentials were rejected ({code or text}); check {creds}"
    if isinstance(e, PermissionError) or code in ("AccessDenied", "403") or "access denied" in low or "forbidden" in low:
        return f"{url}: access denied with the credentials in the environment; check {creds} and the bucket's policy"
    if code == "NoSuchBucket" or "bucket does not exist" in low or "nosuchbucket" in low:
        b = bucket_of(url)
        return f"{url}: bucket {b!r} does not exist; create it (e.g. aws s3 mb {scheme}://{b}) or fix the URL"
    if isinstance(e, FileNotFoundError):
        return f"{url}: no such object; check the URL"
    return f"{url}: {text}"


def check_bucket(url: str, error: type[GeosegError], role: str = "store") -> Any:
    """Raise ``error`` (one line) unless the bucket of ``url`` exists and answers with the
    environment's credentials; returns the file system. Costs one request."""
    check_url(url, error, role)
    fs = filesystem(url)
    b = bucket_of(url)
    try:
        fs.ls(b, detail=False) if _scheme(url) != "s3" else fs.info(b)
    except FileNotFoundError:
        s = _scheme(url)
        raise error(f"{url}: bucket {b!r} does not exist; create it (e.g. aws s3 mb {s}://{b}) or fix the URL") from None
    except Exception as e:  # noqa: BLE001  (botocore, aiohttp and gcsfs each raise their own kinds)
        raise error(explain(url, e)) from None
    return fs


def gdal_path(url: str) -> str:
    """GDAL's name for an object URL: ``s3://b/k.tif`` -> ``/vsis3/b/k.tif``.

    >>> gdal_path("s3://bucket/scenes/a.tif")
    '/vsis3/bucket/scenes/a.tif'
    """
    scheme = _scheme(url)
    return SCHEMES[scheme].vsi + url.split("://", 1)[1]


def gdal_options(url: str) -> dict[str, str]:
    """GDAL configuration for reading ``url``: for S3, the endpoint of ``AWS_ENDPOINT_URL``
    (GDAL reads credentials and region from the environment itself, not this variable)."""
    opts = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
    endpoint = _aws_endpoint() if _scheme(url) == "s3" else None
    if endpoint:
        parts = urlsplit(endpoint)
        opts.update(
            AWS_S3_ENDPOINT=parts.netloc + parts.path.rstrip("/"),
            AWS_HTTPS="NO" if parts.scheme == "http" else "YES",
            AWS_VIRTUAL_HOSTING="FALSE",
        )
    return opts
