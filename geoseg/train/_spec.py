"""The training spec: YAML parsed once into a frozen :class:`TrainSpec`, errors naming the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from geoseg.errors import SpecError
from geoseg.spec import StrictFrozen as _Frozen
from geoseg.spec import explain_validation, read_yaml, working_dir

__all__ = [
    "BRATS_LABEL_MAP",
    "TUMOUR_CLASSES",
    "AugmentSection",
    "DataSection",
    "INSTANCE_ARCHITECTURES",
    "ModelSection",
    "OptimSection",
    "RasterDataSection",
    "SplitSection",
    "TrainSpec",
    "load_train_spec",
    "parse_train_spec",
]

BRATS_LABEL_MAP: dict[int, int] = {0: 0, 2: 1, 1: 2, 3: 2, 4: 3}
"""BraTS labels (0 background, 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing) -> our classes."""

TUMOUR_CLASSES = ("background", "oedema", "non-enhancing+necrosis", "enhancing")


class DataSection(_Frozen):
    """Case folders (one 3-D NIfTI per modality plus a label file) for training and validation."""

    kind: Literal["volumes"] = "volumes"
    train: tuple[Path, ...] = Field(min_length=1, description="training case folders")
    validation: tuple[Path, ...] = Field(min_length=1, description="validation case folders")
    modalities: tuple[str, ...] = Field(default=("flair", "t1c"), min_length=1, description="channel order")
    modality_patterns: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="extra filename globs per modality (see geoseg.sources)"
    )
    labels: str = Field(default="*OTMultiClass*", min_length=1, description="filename glob of the label file")
    label_map: dict[int, int] = Field(default_factory=lambda: dict(BRATS_LABEL_MAP))
    classes: tuple[str, ...] = Field(default=TUMOUR_CLASSES, min_length=2)

    @field_validator("train", "validation", "modalities", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | os.PathLike) else v

    @model_validator(mode="after")
    def _check_map(self) -> DataSection:
        bad = sorted(v for v in self.label_map.values() if not 0 <= v < len(self.classes))
        if bad:
            raise ValueError(
                f"label_map sends labels to classes {bad}, but there are {len(self.classes)} classes "
                f"(0..{len(self.classes) - 1}); fix label_map or classes"
            )
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities {list(self.modalities)} repeat a name; list each once")
        return self


class SplitSection(_Frozen):
    """The validation part of a raster: a strip of rows or columns, as fractions of the image.

    ``{axis: rows, start: 0.7, stop: 1.0}`` validates on the bottom 30 % of rows and trains on
    the rest: whole strips, never random pixels, so neighbouring pixels of one road do not sit
    on both sides of the split.
    """

    axis: Literal["rows", "cols"] = "rows"
    start: float = Field(default=0.7, ge=0, le=1)
    stop: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check_order(self) -> SplitSection:
        if not self.start < self.stop:
            raise ValueError(
                f"start {self.start} must be below stop {self.stop}: the validation strip is "
                "[start, stop) of the image, e.g. start: 0.7, stop: 1.0"
            )
        return self


class RasterDataSection(_Frozen):
    """One georeferenced image with labels: a raster on its grid, or vectors in any CRS."""

    kind: Literal["raster"]
    image: Path = Field(description="GeoTIFF (any GDAL raster), any CRS and band count")
    bands: tuple[int | str, ...] | None = Field(
        default=None, min_length=1, description="1-based band indexes or band descriptions; default all"
    )
    labels: Path = Field(
        description="a label raster on the image's grid (.tif), or vectors: GeoJSON, GeoPackage, GeoParquet"
    )
    label_map: dict[int, int] | None = Field(
        default=None, description="label raster values -> class index; default: any value > 0 is class 1"
    )
    class_field: str | None = Field(
        default=None, description="vector attribute naming each geometry's class; default: all class 1"
    )
    label_buffer_m: float = Field(default=0.0, ge=0, description="buffer of line labels each side, metres")
    classes: tuple[str, ...] = Field(default=("background", "foreground"), min_length=2)
    validation: SplitSection = SplitSection()
    normalisation: Literal["percentile", "meanstd"] = Field(
        default="percentile", description="per-band statistics of the training part written into the card"
    )
    percentiles: tuple[float, float] = Field(default=(1.0, 99.0), description="percentile: low, high -> 0, 1")
    rare_fraction: float = Field(
        default=0.5, ge=0, le=1, description="share of crops centred on a labelled (non-background) pixel"
    )

    @model_validator(mode="after")
    def _check(self) -> RasterDataSection:
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles {list(self.percentiles)} must be [low, high] with 0 <= low < high <= 100")
        if self.label_map is not None:
            bad = sorted(v for v in self.label_map.values() if not 0 <= v < len(self.classes))
            if bad:
                raise ValueError(
                    f"label_map sends labels to classes {bad}, but there are {len(self.classes)} classes; "
                    "fix label_map or classes"
                )
        return self


INSTANCE_ARCHITECTURES: tuple[str, ...] = ("maskrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn_v2")
"""Architectures trained as instance models (torchvision Mask R-CNN)."""


def _data_kind(value: Any) -> str:
    kind = value.get("kind", "volumes") if isinstance(value, dict) else getattr(value, "kind", "volumes")
    return str(kind)


class ModelSection(_Frozen):
    """The network: a U-Net (geoseg.models.UNet) of ``len(modalities) * (2 * context_slices + 1)`` inputs
    (or one input per raster band), or a Mask R-CNN for ``task: instance``."""

    name: str = Field(default="mri-tumour", min_length=1)
    architecture: Literal["unet", "maskrcnn_mobilenet_v3_large_fpn", "maskrcnn_resnet50_fpn_v2"] = "unet"
    task: Literal["semantic", "instance"] | None = Field(
        default=None, description="default: instance for a Mask R-CNN architecture, else semantic"
    )
    base_channels: int = Field(default=16, ge=1)
    depth: int = Field(default=4, ge=1, le=7)
    context_slices: int = Field(default=0, ge=0, le=8, description="neighbour slices each side as channels")
    resize_px: int = Field(
        default=0,
        ge=0,
        le=2048,
        description="Mask R-CNN: resize each patch to this edge inside the model (small objects); 0 = patch_px",
    )
    description: str = ""
    licence: str = ""

    @model_validator(mode="after")
    def _check_task(self) -> ModelSection:
        instance = self.architecture in INSTANCE_ARCHITECTURES
        if self.resize_px and not instance:
            raise ValueError(f"resize_px {self.resize_px} is for Mask R-CNN architectures; drop it for {self.architecture}")
        if self.task is not None and (self.task == "instance") != instance:
            fits = ", ".join(INSTANCE_ARCHITECTURES) if self.task == "instance" else "unet"
            raise ValueError(
                f"task {self.task} does not fit architecture {self.architecture}: use {fits}, or drop task"
            )
        return self

    @property
    def resolved_task(self) -> Literal["semantic", "instance"]:
        """``task``, or the one the architecture implies."""
        if self.task is not None:
            return self.task
        return "instance" if self.architecture in INSTANCE_ARCHITECTURES else "semantic"


class AugmentSection(_Frozen):
    """Random augmentation of each training sample, done as one warp plus an intensity change."""

    enabled: bool = True
    flip_prob: float = Field(default=0.5, ge=0, le=1, description="per in-plane axis")
    rot90_prob: float = Field(default=0.5, ge=0, le=1, description="chance of a random 90/180/270 turn")
    rotate_deg: float = Field(default=15.0, ge=0, le=180, description="uniform small rotation, +-degrees")
    scale: tuple[float, float] = Field(default=(0.85, 1.15), description="zoom range (log-uniform)")
    elastic_px: float = Field(default=4.0, ge=0, description="std of the smooth elastic displacement, px")
    elastic_grid: int = Field(default=5, ge=2, description="control points per axis of the elastic field")
    intensity_scale: float = Field(default=0.1, ge=0, lt=1, description="foreground x * (1 + U(-s, s))")
    intensity_shift: float = Field(default=0.1, ge=0, description="foreground x + U(-s, s) per channel")

    @model_validator(mode="after")
    def _check_scale(self) -> AugmentSection:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(
                f"scale {list(self.scale)} must be [low, high] with 0 < low <= high, e.g. [0.85, 1.15]"
            )
        return self


class OptimSection(_Frozen):
    """Optimisation: AdamW on cross-entropy + soft Dice, a one-cycle or cosine schedule."""

    epochs: int = Field(default=20, ge=1)
    samples_per_epoch: int = Field(default=1024, ge=1, description="training crops drawn per epoch")
    batch_size: int = Field(default=16, ge=1)
    crop_px: int = Field(default=128, ge=16, description="training crop edge; a multiple of 2**depth")
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    dice_weight: float = Field(default=1.0, ge=0, description="loss = cross-entropy + this * soft Dice")
    tumour_fraction: float = Field(default=0.67, ge=0, le=1, description="share of tumour-slice samples")
    class_weights: dict[int, float] | None = Field(
        default=None,
        description="tumour samples: chance of centring on each class (normalised); default any tumour voxel",
    )
    dice_regions: tuple[tuple[int, ...], ...] | None = Field(
        default=None,
        description="soft Dice over unions of classes (e.g. BraTS [[1,2,3],[2,3],[3]]); default each class",
    )
    ce_weights: tuple[float, ...] | None = Field(
        default=None, description="cross-entropy weight of each class (one per class); default all 1"
    )
    ema: float | None = Field(
        default=None, gt=0, lt=1, description="validate and save an exponential moving average of the weights"
    )
    dense_warmup_steps: int = Field(
        default=0, ge=0, description="instance models: first train the backbone alone on the label mask, this many steps"
    )
    dense_warmup_lr: float | None = Field(
        default=None, gt=0, description="peak lr of the dense warm-up (one-cycle); default lr"
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (per worker); default torch's")
    workers: int = Field(
        default=1, ge=1, description="training processes; above 1, data-parallel on Ray Train (geoseg train --workers)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where to train: auto = cuda when torch sees a GPU, else cpu"
    )

    @model_validator(mode="after")
    def _check_classes(self) -> OptimSection:
        if self.class_weights is not None:
            if any(w < 0 for w in self.class_weights.values()) or not sum(self.class_weights.values()) > 0:
                raise ValueError(
                    f"class_weights {dict(self.class_weights)} must be >= 0 with a positive sum"
                )
            if 0 in self.class_weights:
                raise ValueError("class_weights: class 0 is background; weight tumour classes only")
        if self.dice_regions is not None and any(not r for r in self.dice_regions):
            raise ValueError("dice_regions: each region lists at least one class, e.g. [[1, 2, 3], [2, 3], [3]]")
        return self


class TrainSpec(_Frozen):
    """A whole training run. Relative paths are relative to the spec file (or the working directory)."""

    data: Annotated[
        Annotated[DataSection, Tag("volumes")] | Annotated[RasterDataSection, Tag("raster")],
        Discriminator(_data_kind),
    ]
    model: ModelSection = ModelSection()
    patch_px: int = Field(default=256, ge=16, description="inference patch edge (validation and the card)")
    augmentation: AugmentSection = AugmentSection()
    optimisation: OptimSection = OptimSection()
    output: Path = Field(description="folder for last.pt, best.pt and history.json")
    resume: bool = Field(default=False, description="continue from output/last.pt")
    seed: int = 0
    val_batch_size: int = Field(default=8, ge=1)
    val_overlap_px: int = Field(default=32, ge=0, description="patch overlap of validation inference")

    @model_validator(mode="after")
    def _check_sizes(self) -> TrainSpec:
        step = 2**self.model.depth
        for name, px in (("optimisation.crop_px", self.optimisation.crop_px), ("patch_px", self.patch_px)):
            if px % step:
                raise ValueError(
                    f"{name} {px} is not a multiple of {step} (2**model.depth); "
                    f"use e.g. {max(step, px // step * step)}"
                )
        if self.optimisation.dense_warmup_lr is not None and not self.optimisation.dense_warmup_steps:
            raise ValueError(
                f"optimisation.dense_warmup_lr {self.optimisation.dense_warmup_lr} is set but dense_warmup_steps "
                "is 0: give dense_warmup_steps too, or drop dense_warmup_lr"
            )
        if self.optimisation.dense_warmup_steps and self.model.resolved_task != "instance":
            raise ValueError(
                f"optimisation.dense_warmup_steps {self.optimisation.dense_warmup_steps} is for instance models "
                "(Mask R-CNN); a semantic model trains on the mask already: remove it"
            )
        if isinstance(self.data, DataSection) and self.model.resolved_task == "instance":
            raise ValueError(
                f"model.architecture {self.model.architecture} is an instance model: train it on "
                "data.kind: raster (image + polygons); volumes train a unet"
            )
        n = len(self.data.classes)
        used = set(self.optimisation.class_weights or ()) | {
            c for r in self.optimisation.dice_regions or () for c in r
        }
        bad = sorted(c for c in used if not 0 <= c < n)
        if bad:
            raise ValueError(
                f"optimisation names classes {bad}, but there are {n} classes (0..{n - 1}); "
                "fix class_weights / dice_regions"
            )
        ce = self.optimisation.ce_weights
        if ce is not None and (len(ce) != n or any(w < 0 for w in ce) or not sum(ce) > 0):
            raise ValueError(
                f"optimisation.ce_weights {list(ce)} must give one weight >= 0 per class ({n}), with a positive sum"
            )
        if self.val_overlap_px > self.patch_px // 2:
            raise ValueError(
                f"val_overlap_px {self.val_overlap_px} does not fit patch_px {self.patch_px}: "
                f"use 0 to {self.patch_px // 2}"
            )
        return self


def _rebase(spec: TrainSpec, base: Path) -> TrainSpec:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    if isinstance(spec.data, RasterDataSection):
        data: DataSection | RasterDataSection = spec.data.model_copy(
            update={"image": fix(spec.data.image), "labels": fix(spec.data.labels)}
        )
    else:
        data = spec.data.model_copy(
            update={
                "train": tuple(map(fix, spec.data.train)),
                "validation": tuple(map(fix, spec.data.validation)),
            }
        )
    return spec.model_copy(update={"data": data, "output": fix(spec.output)})


def parse_train_spec(data: Any, source: str = "train spec", base: Path | None = None) -> TrainSpec:
    """Validate a mapping into a :class:`TrainSpec`; relative paths are resolved against ``base``.

    >>> data = {"data": {"train": ["a"], "validation": "b"}, "output": "runs/x"}
    >>> parse_train_spec(data, base=Path("/w")).output
    PosixPath('/w/runs/x')

    Raises:
        SpecError: one line naming the field, the value and the fix.
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
    try:
        spec = TrainSpec.model_validate(data)
    except ValidationError as e:
        raster = isinstance(data.get("data"), dict) and data["data"].get("kind") == "raster"
        model = data.get("model")
        architecture = str(model.get("architecture", "")) if isinstance(model, dict) else ""
        if raster and (architecture.startswith("maskrcnn") or (isinstance(model, dict) and model.get("task") == "instance")):
            example = "jobs/train_buildings.yaml"
        else:
            example = "jobs/train_roads.yaml" if raster else "jobs/train_mri_tumour.yaml"
        raise explain_validation(e, source, TrainSpec, f"see {example} for an example") from None
    return _rebase(spec, base or working_dir("training spec"))


def load_train_spec(path: str | os.PathLike[str]) -> TrainSpec:
    """Read a YAML training spec; relative paths in it are relative to the file's folder.

    Raises:
        SpecError: the file is missing or not YAML, or a field is invalid.
    """
    p = Path(path)
    return parse_train_spec(read_yaml(p, "training spec"), source=str(p), base=p.resolve().parent)
