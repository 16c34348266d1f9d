"""The errors geoseg raises: one root, each also a built-in, each message naming value and fix."""

from __future__ import annotations

__all__ = [
    "GeosegError",
    "InputError",
    "SourceError",
    "SpecError",
    "ModelError",
    "StoreError",
]


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
