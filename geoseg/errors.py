"""The errors geoseg raises: one root, each also a built-in, each message naming value and fix."""

from __future__ import annotations

__all__ = [
    "GeosegError",
    "InputError",
    "SourceError",
    "SpecError",
    "ModelError",
    "StoreError",
    "TrainingError",
    "first_line",
]

from os import PathLike


class GeosegError(Exception):
    """Root of every error geoseg raises on purpose.

    The CLI prints ``str(error)`` on one line and exits non-zero; anything else is a bug and
    keeps its traceback.
    """


class InputError(GeosegError, ValueError):
    """An input value (a band name, a dtype, a shape) that geoseg cannot work with."""


class SourceError(GeosegError, OSError):
    """An input file that is missing, unreadable or not an image."""


class SpecError(GeosegError, ValueError):
    """A job spec or command-line option that is invalid."""


class ModelError(GeosegError, ValueError):
    """A model that is unknown, cannot be loaded, or does not fit its input."""


class StoreError(GeosegError, OSError):
    """An output store that cannot be written, or was written by a different job."""


class TrainingError(GeosegError, RuntimeError):
    """A training run whose workers failed (Ray Train) more often than it recovers from."""


def first_line(error: BaseException, path: str | PathLike[str] | None = None) -> str:
    """The first line of a library's error message, for a one-line geoseg error.

    Libraries (GDAL, nibabel, torch) put the file's path in their messages and run to many
    lines; geoseg's line names the path itself, so ``path`` (quoted or not) is cut out of the
    message. An empty message gives the exception's type name.
    """
    text = str(error).strip()
    line = text.splitlines()[0].strip() if text else ""
    if path is not None:
        p = str(path)
        for form in (f"'{p}' ", f'"{p}" ', f"'{p}'", f'"{p}"', f"{p}: ", p):
            line = line.replace(form, "")
        line = line.strip(" :")
    return line or type(error).__name__
