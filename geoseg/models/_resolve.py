"""A model spec's card and the identity of its weights, without building the model.

The driver plans a job from these alone: band matching, patch size, output kind and the
fingerprint. torch is imported only to read a card stored inside a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from geoseg.errors import ModelError

from ._builtin import INDEX_ARCHITECTURES, OTSU
from ._card import ModelCard
from ._files import archive_kind, file_digest, require_file
from ._params import INSTANCE_PARAMS, OUTPUT_PARAMS
from ._registry import factory_identity, registered_model
from ._spec import ModelSpec

__all__ = ["resolve_card", "weights_identity", "card_path_beside", "checkpoint_card"]


def card_path_beside(path: Path) -> Path:
    """Where a card for ``path`` lives by default: ``<stem>.card.yaml`` in the same folder.

    >>> card_path_beside(Path("runs/water.pt")).as_posix()
    'runs/water.card.yaml'
    """
    return path.with_name(f"{path.stem}.card.yaml")


def resolve_card(spec: ModelSpec) -> ModelCard:
    """The card of the model ``spec`` names, with ``spec.params`` applied and checked.

    For a checkpoint without an explicit card or one beside it, the card stored in the
    checkpoint is read (this imports torch).

    Raises:
        ModelError: an unknown name, a missing file or card, params the card does not take.
    """
    if spec.file is not None:
        require_file(spec.file, "model.file")
        extra = sorted(set(spec.params) - {"bands"} - OUTPUT_PARAMS)
        if extra:
            raise ModelError(f"model.file {spec.file} is compiled, so params {extra} cannot change it: drop them")
        card = _explicit_card(spec) or _card_beside(spec.file, "model.file", "a compiled program")
        if archive_kind(spec.file) == "checkpoint":
            raise ModelError(
                f"model.file {spec.file} is neither TorchScript nor a torch.export .pt2 program: save it with "
                "torch.jit.save or torch.export.save (weights go in model.checkpoint)"
            )
        return with_params(card, spec.params)
    if spec.checkpoint is not None:
        require_file(spec.checkpoint, "model.checkpoint")
        found = _explicit_card(spec) or _beside_or_none(spec.checkpoint)
        if found is None:
            from ._checkpoint import read_checkpoint  # noqa: PLC0415  (torch: only for a card inside a checkpoint)

            found = checkpoint_card(spec, read_checkpoint(spec.checkpoint)[0])
        return _checked(spec, found, f"checkpoint {spec.checkpoint}")
    entry = registered_model(str(spec.name))  # ModelSpec guarantees a name here
    if entry.needs_checkpoint:
        raise ModelError(f"model {spec.name!r} needs trained weights: give model.checkpoint")
    card = _explicit_card(spec) or entry.card
    return _checked(spec, card, f"model card {spec.card}")


def checkpoint_card(spec: ModelSpec, stored: ModelCard | None) -> ModelCard:
    """The card for a checkpoint: the explicit one, else the one beside it, else ``stored``."""
    assert spec.checkpoint is not None
    card = _explicit_card(spec) or _beside_or_none(spec.checkpoint) or stored
    if card is None:
        beside = card_path_beside(spec.checkpoint)
        raise ModelError(
            f"model.checkpoint {spec.checkpoint} is a bare state_dict with no card: write {beside} or give model.card"
        )
    return card


def weights_identity(spec: ModelSpec) -> str:
    """What the weights are, by content: sha256 of the checkpoint, the model file or the packaged
    weights of a named model; a weightless named model is known by its builder.

    Part of every job's fingerprint, so a store is resumed only by the same weights, wherever
    the file lies and whatever its timestamps.
    """
    if spec.file is not None:
        return "file:" + file_digest(spec.file, "model.file")
    if spec.checkpoint is not None:
        return "checkpoint:" + file_digest(spec.checkpoint, "model.checkpoint")
    entry = registered_model(str(spec.name))
    if entry.weights is not None:
        return "packaged:" + file_digest(entry.weights, f"the weights of model {spec.name!r}")
    return "builder:" + factory_identity(entry.factory)


def _checked(spec: ModelSpec, card: ModelCard, source: str) -> ModelCard:
    if spec.name is not None:
        want = registered_model(spec.name).card.architecture
        if card.architecture != want:
            raise ModelError(
                f"{source} is architecture {card.architecture!r} but model.name {spec.name!r} is {want!r}: "
                "drop model.name or fix the card"
            )
    return with_params(card, spec.params)


def _explicit_card(spec: ModelSpec) -> ModelCard | None:
    if spec.card is None:
        return None
    require_file(spec.card, "model.card")
    return ModelCard.from_yaml(spec.card)


def _beside_or_none(path: Path) -> ModelCard | None:
    beside = card_path_beside(path)
    return ModelCard.from_yaml(beside) if beside.is_file() else None


def _card_beside(path: Path, field_name: str, what: str) -> ModelCard:
    card = _beside_or_none(path)
    if card is None:
        raise ModelError(f"{field_name} {path} is {what} with no card: write {card_path_beside(path)} or give model.card")
    return card


def _same_kind(card: ModelCard, key: str, value: Any) -> Any:
    """``value`` as the type of the card's default for ``key`` where YAML spelt it otherwise: a
    float param given as ``0`` is ``0.0``, so both spellings make one fingerprint. A value of
    another kind than a numeric default (``threshold=abc``) is refused here, when the job is
    planned, not when the model is built on an actor.

    Raises:
        ModelError: naming ``model.params.<key>`` (``--param <key>=...``) and the kind wanted.
    """
    default = card.params.get(key)
    if key == "threshold" and value == OTSU and card.architecture in INDEX_ARCHITECTURES:
        return value
    numeric = isinstance(default, int | float) and not isinstance(default, bool)
    if not numeric:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        want = "a whole number" if isinstance(default, int) else "a number"
        raise ModelError(
            f"model.params.{key} (--param {key}=...): {value!r} is not {want}; model {card.name!r} takes e.g. "
            f"{key}={default!r}"
        )
    if isinstance(default, float):
        return float(value)
    if value != int(value):
        raise ModelError(f"model.params.{key} (--param {key}=...): {value!r} is not a whole number; e.g. {key}={default!r}")
    return int(value)


def with_params(card: ModelCard, params: Mapping[str, Any]) -> ModelCard:
    """``card`` with ``params`` applied: ``bands`` replaces bands, other keys the card's params."""
    others = {k: _same_kind(card, k, v) for k, v in params.items() if k != "bands"}
    unknown = sorted(set(others) - set(card.params) - OUTPUT_PARAMS)
    instance_only = sorted(set(others) & INSTANCE_PARAMS) if card.task != "instance" else []
    if instance_only:
        raise ModelError(
            f"model {card.name!r} is a semantic model: params {instance_only} are for instance models "
            "(task: instance); drop them"
        )
    if unknown:
        raise ModelError(
            f"model {card.name!r} has no params {unknown}: it takes bands" + "".join(f", {k}" for k in card.params)
        )
    bands = _bands_param(card, params["bands"]) if "bands" in params else card.bands
    if not others and bands == card.bands:
        return card
    return replace(card, bands=bands, params={**card.params, **others})


def _bands_param(card: ModelCard, value: Any) -> tuple[str, ...]:
    example = "[" + ", ".join(str(i + 1) for i in range(len(card.bands))) + "]"
    fix = (
        f"give {len(card.bands)} bands as a list or as {{{', '.join(f'{b}: ...' for b in card.bands)}}} "
        f"(on the command line: --param 'bands={example}')"
    )
    if isinstance(value, Mapping):
        unknown = [k for k in value if str(k) not in card.bands]
        if unknown:
            raise ModelError(f"model.params.bands names {unknown}, which model {card.name!r} does not take: {fix}")
        given = {str(k): str(v) for k, v in value.items()}
        return tuple(given.get(b, b) for b in card.bands)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == len(card.bands):
        return tuple(str(v) for v in value)
    raise ModelError(f"model.params.bands {value!r} does not fit model {card.name!r}: {fix}")
