"""Which model a job runs: one torch-free type for job specs, the CLI and library calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from geoseg.errors import ModelError

__all__ = ["ModelSpec", "FrozenParams"]


class FrozenParams(dict[str, Any]):
    """A read-only dict of model params: a frozen spec cannot change under a running job.

    >>> p = FrozenParams({"threshold": 0.1})
    >>> p["threshold"] = 0.2
    Traceback (most recent call last):
    TypeError: model params are read-only; make a new ModelSpec with other params
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("model params are read-only; make a new ModelSpec with other params")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


class ModelSpec(BaseModel):
    """Which model to run: a ``name``, a ``checkpoint`` or a ``file``, plus an optional ``card``.

    - ``name`` alone: a built-in or registered model that needs no weights (``"ndwi"``), or
      one with packaged weights (``"mri-tumour"``).
    - ``checkpoint``: weights for an architecture; the card comes from the checkpoint, from
      ``card``, or from ``<checkpoint stem>.card.yaml`` beside it. With ``name`` as well, the
      card's architecture must be that model's.
    - ``file``: a TorchScript file or a ``torch.export`` ``.pt2`` program, with ``card`` or
      ``<file stem>.card.yaml`` beside it. It runs the user's code, so it loads only when named.

    An explicit ``card`` always wins over a card stored in a checkpoint or a built-in one.
    ``params`` override the card: ``bands`` (a list, or a mapping from the card's band to the
    file's band, e.g. ``{"green": "3", "nir": "4"}``) and any key the card's params already have
    (e.g. ``threshold`` for ``ndwi``). Paths given as ``str`` become :class:`Path`.

    It is the ``model`` section of a job spec and what :func:`geoseg.models.load_model` takes;
    it imports neither torch nor Ray. Built directly, a bad combination raises
    :class:`~geoseg.errors.ModelError`; inside a job spec it is a spec error naming the field.

    >>> ModelSpec(name="ndwi", params={"threshold": 0.1}).params
    {'threshold': 0.1}
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    checkpoint: Path | None = None
    card: Path | None = None
    file: Path | None = None
    params: dict[str, Any] = Field(default_factory=FrozenParams)

    def __init__(self, **data: Any) -> None:
        # Built directly or as a job spec's section (pydantic calls this for nested models too):
        # one line naming the field, e.g. "model.thresh: is not a known field (fields: ...)".
        try:
            super().__init__(**data)
        except ValidationError as e:
            first = e.errors()[0]
            where = "model" + "".join(f".{x}" for x in first["loc"])
            if first["type"] == "extra_forbidden":
                msg = f"is not a known field (fields: {', '.join(sorted(type(self).model_fields))})"
            elif "input" in first and first["type"] != "value_error":
                msg = f"{first['input']!r}: {first['msg']}"
            else:
                msg = first["msg"].removeprefix("Value error, ")
            raise ModelError(msg if msg.startswith("model.") else f"{where}: {msg}") from None

    @field_validator("params", mode="after")
    @classmethod
    def _freeze(cls, value: dict[str, Any]) -> dict[str, Any]:
        return FrozenParams(value)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if self.name is None and self.checkpoint is None and self.file is None:
            raise ValueError(
                "the model spec names no model: give model.name (e.g. ndwi, see geoseg models), "
                "model.checkpoint or model.file"
            )
        if self.file is not None and (self.checkpoint is not None or self.name is not None):
            raise ValueError(f"model.file {self.file} comes with its own weights: drop model.name and model.checkpoint")
        return self
