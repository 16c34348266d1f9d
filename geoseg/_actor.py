"""The model actor: a :class:`~geoseg.infer.Predictor` held for a whole job (or several)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.errors import GeosegError
from geoseg.models import ModelSpec

__all__ = ["ModelActor"]


class ModelActor:
    """A :class:`Predictor` held by a Ray actor for the whole job (weights load once).

    A model that fails to load does not kill the actor: :meth:`describe` reports the error, so
    the driver prints one line instead of Ray's traceback of a dead actor.
    """

    def __init__(
        self, spec: ModelSpec, batch_size: int, device: str, precision: str, threads: int | None, max_threads: int | None
    ) -> None:
        self.error = ""
        try:
            from geoseg.infer import Predictor  # noqa: PLC0415  (torch: imported in the actor only)

            self.predictor = Predictor(
                spec, batch_size, device, precision, threads, max_threads=max_threads  # type: ignore[arg-type]
            )
        except GeosegError as e:
            self.error = str(e)

    def describe(self) -> dict[str, Any]:
        """``{"device", "numerics", "pid", "error"}``: what this actor really computes on."""
        if self.error:
            return {"error": self.error, "pid": os.getpid()}
        p = self.predictor
        return {"device": str(p.device), "numerics": p.numerics, "pid": os.getpid(), "error": ""}

    def predict(
        self, bounds: Sequence[tuple[int, int, int]], labels_only: bool, *arrays: np.ndarray
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Answer the patches ``arrays[i][start:stop]`` for each ``(i, start, stop)`` of ``bounds``,
        in that order, sharing batches across them.

        Returns:
            ``(outputs, stats)``: the answers of every patch in order, and ``{"segments":
            [(patches, all-zero patches) per bound], "padded": zero rows that filled the last
            batch}``: the counts travel with the result, not in actor state.
        """
        if self.error:
            raise GeosegError(self.error)
        parts = [arrays[i][a:b] for i, a, b in bounds]
        outputs, zero, padded = self.predictor.predict(parts, labels_only)
        segments = []
        start = 0
        for part in parts:
            n = part.shape[0]
            segments.append((n, int(zero[start : start + n].sum())))
            start += n
        return outputs, {"segments": segments, "padded": padded}
