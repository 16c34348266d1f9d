"""Job specs: YAML (or CLI flags) parsed once, at the boundary, into a frozen :class:`JobSpec`.

Every validation error names the field, the value and the fix::

    spec.yaml: stitch: 'blend' is not one of 'crop', 'gaussian'
"""

from __future__ import annotations

import glob
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from geoseg._remote import is_url
from geoseg.core.grid import Tiling
from geoseg.errors import SpecError
from geoseg.models import ModelCard, ModelSpec

__all__ = ["JobSpec", "ModelSpec", "TilingSection", "load_spec", "parse_spec"]


def _numeric(annotation: Any) -> bool:
    """int, float, or an optional / union of them."""
    if annotation in (int, float):
        return True
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and any(a in (int, float) for a in typing.get_args(annotation))


class StrictFrozen(BaseModel):
    """A frozen spec section with no unknown fields, where YAML's true/false is never a number
    (pydantic's lax mode would read ``epochs: true`` as 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if field is not None and isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{name}: {str(value).lower()} is not a number; give a number")
        return data


_Frozen = StrictFrozen


class TilingSection(_Frozen):
    """Patch size and overlap; each defaults to the model card's (a pointwise model such as
    ``ndwi`` needs no overlap: its card says 0)."""

    patch_px: int | None = Field(default=None, ge=8, description="patch edge; default: the model card's")
    overlap_px: int | None = Field(default=None, ge=0, description="overlap of neighbouring patches; default: the card's")

    def resolve(self, card: ModelCard) -> Tiling:
        """The tiling of a job of ``card``'s model: this section's values, else the card's.

        Raises:
            SpecError: an overlap that does not fit the patch.
        """
        return Tiling(self.patch_px or card.patch_px, card.overlap_px if self.overlap_px is None else self.overlap_px)


_ONE_SLASH = re.compile(r"^(s3|gs|az):/(?!/)", re.IGNORECASE)


def _location(v: Any) -> Any:
    """A URL (``s3://...``, its scheme in any case) stays the string it is, the scheme in lower
    case; anything else is a local path. ``s3:/bucket`` (one slash) is refused as a typo, and
    credentials written into a URL are refused without repeating them."""
    if isinstance(v, str) and _ONE_SLASH.match(v):
        scheme = v.split(":", 1)[0].lower()
        raise ValueError(f"{v} has one slash after {scheme}:, which would be a local folder; write {scheme}://BUCKET/...")
    if isinstance(v, str) and is_url(v):
        scheme, rest = v.split("://", 1)
        netloc = rest.split("/", 1)[0]
        if "@" in netloc:
            raise ValueError(
                f"{scheme}://***@{rest.split('@', 1)[1]}: credentials in the URL are never used (they would travel "
                "with the spec and the tasks); remove them and set them in the environment (AWS_ACCESS_KEY_ID...)"
            )
        return f"{scheme.lower()}://{rest}".rstrip("/")
    return Path(v) if isinstance(v, str | os.PathLike) else v


Location = Annotated[Path | str, BeforeValidator(_location)]
"""A local path (:class:`~pathlib.Path`) or an object-store URL (``str``, e.g. ``s3://b/k``)."""


class JobSpec(_Frozen):
    """A whole job. Relative paths are relative to the spec file (or the working directory);
    URLs (``s3://``, ``gs://``, ``az://``) are kept as written."""

    inputs: tuple[Location, ...] = Field(min_length=1)
    output: Location
    model: ModelSpec
    tiling: TilingSection = TilingSection()
    stitch: Literal["crop", "gaussian"] = "crop"
    block_px: int | None = Field(default=None, ge=1, description="block edge; default 4 Zarr chunks (1792 px for 256/32)")
    workers: int | None = Field(
        default=None, ge=1, description="model actors; default actors_per_gpu per GPU, else one per node with CPUs"
    )
    actors_per_gpu: int = Field(default=1, ge=1, description="model actors sharing each GPU (each takes 1/N of it)")
    cpus_per_worker: float | None = Field(
        default=None, gt=0, description="CPUs each model actor reserves; default 1, less where the cluster has fewer"
    )
    threads_per_worker: int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    batch_size: int = Field(default=16, ge=1)
    write_probs: bool = False
    instances: Literal["none", "components"] = Field(
        default="none", description="components: one id per connected object of instance_classes (scenes)"
    )
    instance_classes: tuple[str, ...] | None = Field(
        default=None, description="classes whose connected components are objects; default every class but the first"
    )
    on_error: Literal["skip", "fail"] = "skip"
    overwrite: bool = False
    max_blocks_in_flight: int | None = Field(default=None, ge=1)
    retries: int = Field(default=2, ge=0, description="attempts after the first for a block whose task or actor fails")
    ray_address: str | None = None
    progress: bool = True
    modality_patterns: dict[str, tuple[str, ...]] | None = Field(
        default=None, description="MRI: filename globs per modality, e.g. {flair: ['*FLAIR*']}"
    )

    _from_patterns: frozenset[Path | str] = PrivateAttr(default_factory=frozenset)

    @field_validator("inputs", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | os.PathLike) else v

    def from_pattern(self, path: Path | str) -> bool:
        """Whether ``path`` came from a glob of ``inputs`` (not named one by one): a path a
        pattern caught that is no input of the model's kind is skipped, not an error."""
        return path in self._from_patterns


def _expand(
    paths: tuple[Path | str, ...], base: Path, source: str
) -> tuple[tuple[Path | str, ...], frozenset[Path | str]]:
    """Resolve against ``base`` and expand globs (a glob that matches nothing is an error);
    URLs are kept, their globs expanded in the object store.

    Returns the inputs, and which of them came from a pattern.
    """
    out: list[Path | str] = []
    globbed: set[Path | str] = set()
    for p in paths:
        pattern = any(ch in str(p) for ch in "*?[")
        if isinstance(p, str):
            hits: list[Path | str] = list(_glob_url(p, source)) if pattern else [p]
            out.extend(hits)
            globbed.update(hits if pattern else [])
            continue
        full = p if p.is_absolute() else base / p
        if pattern:
            found = sorted(glob.glob(str(full), recursive=True))
            if not found:
                raise SpecError(f"{source}: inputs: pattern {str(p)!r} matches no file under {base}; check the pattern")
            out.extend(Path(h) for h in found)
            globbed.update(Path(h) for h in found)
        else:
            out.append(full)
    return tuple(out), frozenset(globbed)


def _glob_url(pattern: str, source: str) -> list[str]:
    """The object URLs matching ``pattern`` (e.g. ``s3://bucket/scenes/*.tif``), sorted."""
    from geoseg._remote import check_bucket, explain  # noqa: PLC0415  (fsspec: only for URL inputs)

    fs = check_bucket(pattern, SpecError, "input")
    scheme = pattern.split("://", 1)[0]
    try:
        hits = sorted(f"{scheme}://{h}" for h in fs.glob(pattern))
    except Exception as e:  # noqa: BLE001  (each object store's library raises its own kinds)
        raise SpecError(f"{source}: inputs: {explain(pattern, e)}") from None
    if not hits:
        raise SpecError(f"{source}: inputs: pattern {pattern!r} matches no object; check the pattern")
    return hits


def _rebase(spec: JobSpec, base: Path, source: str) -> JobSpec:
    def fix(p: Path | str | None) -> Path | str | None:
        return None if p is None or isinstance(p, str) or p.is_absolute() else base / p

    model = spec.model.model_copy(
        update={k: fix(getattr(spec.model, k)) or getattr(spec.model, k) for k in ("checkpoint", "card", "file")}
    )
    inputs, globbed = _expand(spec.inputs, base, source)
    out = spec.model_copy(update={"inputs": inputs, "output": fix(spec.output) or spec.output, "model": model})
    out._from_patterns = globbed
    return out


def _models_in(annotation: Any, tag: str | None = None) -> list[tuple[str | None, type[BaseModel]]]:
    """The pydantic models an annotation can hold, each with its union ``Tag`` if it has one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(tag, annotation)]
    found: list[tuple[str | None, type[BaseModel]]] = []
    tags = [m.tag for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Tag)]
    for arg in get_args(annotation):
        found += _models_in(arg, tags[0] if tags else tag)
    return found


def _section_of(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[type[BaseModel], tuple[str, ...]]:
    """The model class that owns the last element of ``loc`` (a sub-section's, or ``root``), and
    ``loc`` as the user wrote it (without the tags pydantic adds for a tagged union)."""
    owner, path, parts = root, [], [str(p) for p in loc]
    i = 0
    while i < len(parts) - 1:
        field = owner.model_fields.get(parts[i])
        path.append(parts[i])
        i += 1
        if field is None:
            break
        models = _models_in(field.annotation)
        if not models:
            break
        tagged = dict(models)
        if len(models) > 1 and i < len(parts) - 1 and parts[i] in tagged:
            owner = tagged[parts[i]]
            i += 1  # the tag is pydantic's, not a field the user wrote
        else:
            owner = models[0][1]
    return owner, (*path, *parts[i:])


def explain_validation(err: ValidationError, source: str, root: type[BaseModel], hint: str) -> SpecError:
    """One line for a pydantic error in a spec: ``SOURCE: FIELD.PATH: problem (and N more); HINT``.

    An unknown field lists the fields its section knows; a bad value is quoted.
    """
    first = err.errors()[0]
    section, loc = _section_of(root, first["loc"])
    where = ".".join(loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(section.model_fields))
        msg = f"is not a known field (fields: {known})"
    elif first["type"] == "missing":
        msg = "is required"
    elif "input" in first and first["type"] != "value_error":
        msg = f"{first['input']!r}: {msg}"
    others = [".".join(_section_of(root, e["loc"])[1]) or "(top level)" for e in err.errors()[1:]]
    more = f" (also wrong: {', '.join(others)})" if others else ""
    if msg.startswith((f"{where}.", f"{where}:")) or (not loc and first["type"] == "value_error"):
        return SpecError(f"{source}: {msg}{more}; {hint}")  # the message names its own fields
    return SpecError(f"{source}: {where}: {msg}{more}; {hint}")


def parse_spec(data: Any, source: str = "spec", base: Path | None = None) -> JobSpec:
    """Validate a mapping (from YAML or CLI flags) into a :class:`JobSpec`."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}; see docs/spec.md")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        raise explain_validation(e, source, JobSpec, "see docs/spec.md") from None
    return _rebase(spec, base or working_dir(source), source)


def working_dir(source: str) -> Path:
    """The working directory relative paths start at; one line where it no longer exists."""
    try:
        return Path(os.getcwd())
    except FileNotFoundError:
        raise SpecError(f"{source}: the working directory no longer exists; cd to a folder and run again") from None


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path``; a missing file, a folder or bad syntax raise SpecError."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such {what} file; check the path") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; give a YAML {what} file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: not valid YAML ({at}{problem}); fix the syntax") from None


def load_spec(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read a YAML job spec; relative paths in it are relative to the file's folder."""
    p = Path(path)
    data = read_yaml(p, "spec")
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_spec(data, source=str(p), base=p.resolve().parent)
