"""Model cards: what a model expects (bands, normalisation, patch size) and what it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from geoseg.errors import ModelError

__all__ = ["Normalisation", "ModelCard", "BAND_ALIASES", "Task", "TASKS"]

NormKind = Literal["none", "affine", "zscore_foreground"]
Task = Literal["semantic", "instance"]
TASKS: tuple[str, ...] = ("semantic", "instance")

BAND_ALIASES: Mapping[str, tuple[str, ...]] = {
    # Role names a card may use for bands, and the band descriptions that carry them, tried in
    # order (Sentinel-2 first, then Landsat-8). Landsat-8 B8 is panchromatic, so it is no "nir".
    "blue": ("blue", "B02", "B2"),
    "green": ("green", "B03", "B3"),
    "red": ("red", "B04", "B4"),
    "nir": ("nir", "B08", "B8A", "B5"),
    "swir1": ("swir1", "B11", "B6"),
    "swir2": ("swir2", "B12", "B7"),
}


@dataclass(frozen=True)
class Normalisation:
    """How geoseg normalises input before the model, in float32.

    - ``affine``: per-band ``(x - offset) / scale``, the same constants for every patch of every
      image, so tiling can never change a value (rasters).
    - ``zscore_foreground``: per volume and modality, ``(x - mean) / std`` over the foreground
      voxels (everything that differs from the border's background value), background set to
      0; computed once per case on the whole volume before slicing (MRI).
    """

    kind: NormKind = "none"
    offset: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("none", "affine", "zscore_foreground"):
            raise ModelError(
                f"normalisation kind {self.kind!r} is unknown: use 'none', 'affine' or 'zscore_foreground'"
            )
        if self.kind == "affine":
            if not self.offset or len(self.offset) != len(self.scale):
                raise ModelError(
                    f"affine normalisation needs one offset and one scale per band, got "
                    f"offset={list(self.offset)} scale={list(self.scale)}"
                )
            if any(s == 0 for s in self.scale):
                raise ModelError(f"normalisation scale {list(self.scale)} has a zero: use non-zero scales")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise ``x`` of shape (C, ...) in place-free float32 arithmetic."""
        x = x.astype(np.float32, copy=False)
        if self.kind != "affine":
            return x  # zscore_foreground is done per case, upstream, on the whole volume
        shape = (-1,) + (1,) * (x.ndim - 1)
        off = np.asarray(self.offset, np.float32).reshape(shape)
        scl = np.asarray(self.scale, np.float32).reshape(shape)
        return (x - off) / scl


@dataclass(frozen=True)
class ModelCard:
    """Everything geoseg needs to feed a model and read its output.

    ``bands`` are the model's input channels in order: each a role from :data:`BAND_ALIASES`
    (``"green"``), a band description (``"B03"``) or a 1-based band index as text (``"2"``).
    ``classes`` name the output channels; the mask stores the channel index. ``patch_px`` and
    ``overlap_px`` are the tiling a job uses unless its spec says otherwise: the overlap should
    cover the model's receptive field (0 for a pointwise model).

    ``task`` declares what the model returns, so that nothing downstream guesses it:

    - ``semantic``: logits (N, K, P, P) float for K = ``len(classes)``;
    - ``instance``: per patch a dict of ``boxes`` (M, 4; x1, y1, x2, y2 in patch pixels),
      ``labels`` (M,) int64 class indices, ``scores`` (M,) and ``masks`` (M, 1, P, P)
      probabilities, as torchvision's Mask R-CNN returns them.
    """

    name: str
    architecture: str
    classes: tuple[str, ...]
    bands: tuple[str, ...]
    normalisation: Normalisation = Normalisation()
    patch_px: int = 256
    overlap_px: int = 32
    task: Task = "semantic"
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    licence: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"model {self.name!r}: task {self.task!r} is unknown: use 'semantic' or 'instance'")
        if len(self.classes) < 2:
            raise ModelError(f"model {self.name!r} lists classes {list(self.classes)}: a card needs at least 2")
        if len(self.classes) > 255:
            raise ModelError(f"model {self.name!r} has {len(self.classes)} classes: at most 255 fit a uint8 mask")
        if not self.bands:
            raise ModelError(f"model {self.name!r} lists no input bands: name at least one")
        n = len(self.normalisation.offset)
        if self.normalisation.kind == "affine" and n != len(self.bands):
            raise ModelError(
                f"model {self.name!r} normalises {n} bands but takes {len(self.bands)}: give one offset/scale per band"
            )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: fit for YAML, JSON, Zarr attributes and ``weights_only`` checkpoints."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "classes": list(self.classes),
            "bands": list(self.bands),
            "normalisation": {
                "kind": self.normalisation.kind,
                "offset": list(self.normalisation.offset),
                "scale": list(self.normalisation.scale),
            },
            "patch_px": self.patch_px,
            "overlap_px": self.overlap_px,
            "task": self.task,
            "params": dict(self.params),
            "description": self.description,
            "licence": self.licence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "model card") -> ModelCard:
        """Parse a card; a missing or mistyped field raises :class:`ModelError` naming it."""
        for key in ("normalisation", "params"):
            value = data.get(key)
            if value is not None and not isinstance(value, Mapping):
                raise ModelError(
                    f"{source}: field {key!r} is {value!r}, not a mapping; write it as `{key}: {{key: value, ...}}` "
                    "(see docs/spec.md#model-cards)"
                )
        try:
            norm = dict(data.get("normalisation") or {})
            return cls(
                name=str(data["name"]),
                architecture=str(data["architecture"]),
                classes=tuple(str(c) for c in data["classes"]),
                bands=tuple(str(b) for b in data["bands"]),
                normalisation=Normalisation(
                    kind=norm.get("kind", "none"),
                    offset=tuple(float(v) for v in norm.get("offset", ())),
                    scale=tuple(float(v) for v in norm.get("scale", ())),
                ),
                patch_px=int(data.get("patch_px", 256)),
                overlap_px=int(data.get("overlap_px", 32)),
                task=str(data.get("task", "semantic")),  # type: ignore[arg-type]
                params=dict(data.get("params") or {}),
                description=str(data.get("description", "")),
                licence=str(data.get("licence", "")),
            )
        except KeyError as e:
            raise ModelError(f"{source}: field {e.args[0]!r} is missing; see docs/spec.md#model-cards") from None
        except (TypeError, ValueError) as e:
            raise ModelError(f"{source}: {e}; see docs/spec.md#model-cards") from None

    @classmethod
    def from_yaml(cls, path: Path) -> ModelCard:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise ModelError(f"model card {path}: cannot read it ({e.strerror}); check the path") from None
        except yaml.YAMLError as e:
            raise ModelError(f"model card {path}: not valid YAML ({e}); fix the file") from None
        if not isinstance(data, dict):
            raise ModelError(f"model card {path}: expected a mapping of fields, got {type(data).__name__}")
        return cls.from_dict(data, source=f"model card {path}")
