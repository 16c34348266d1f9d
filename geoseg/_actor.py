"""The model actor: a :class:`~geoseg.infer.Predictor` held for a whole job (or several)."""

from __future__ import annotations

import numpy as np

from geoseg.infer import Predictor
from geoseg.models import ModelSpec

__all__ = ["ModelActor"]


class ModelActor:
    """A :class:`Predictor` held by a Ray actor for the whole job (weights load once)."""

    def __init__(self, spec: ModelSpec, batch_size: int, device: str, precision: str, threads: int | None):
        self.predictor = Predictor(spec, batch_size, device, precision, threads)  # type: ignore[arg-type]

    def predict(self, patches: np.ndarray, tag: str, labels_only: bool = False) -> np.ndarray:
        return self.predictor(patches, tag, labels_only)

    def take_counts(self) -> dict[str, int]:
        return self.predictor.take_counts()

    def take_zero_counts(self) -> dict[str, int]:
        return self.predictor.take_zero_counts()

    def describe(self) -> str:
        return str(self.predictor.device)
