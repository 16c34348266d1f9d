"""Checkpoint files: write them, and read them back with ``weights_only=True`` only.

geoseg writes ``{"card": <card dict>, "state_dict": {...}, "extra": {...}}``; a bare
``state_dict`` (or a dict with a ``"state_dict"`` entry) is read too, its card coming from
elsewhere. Nothing here unpickles code.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import ModelError

from ._card import ModelCard
from ._files import ArchiveKind, archive_kind, first_line, require_file

__all__ = ["ArchiveKind", "archive_kind", "read_checkpoint", "load_state", "save_checkpoint", "require_file"]



def save_checkpoint(path: Path, model: nn.Module, card: ModelCard, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"card", "state_dict", "extra"}`` for :func:`load_model`, atomically.

    ``extra`` (epoch, metrics, ...) must hold only tensors and plain values, so the file
    loads with ``weights_only=True``. Returns ``path``.
    """
    path = Path(path)
    payload: dict[str, Any] = {
        "card": card.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    _check_plain(payload["card"], f"the card of {card.name!r}")
    _check_plain(payload["extra"], "extra")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"checkpoint {path}: cannot write it ({e.strerror}); check the folder") from None
    return path


def read_checkpoint(path: Path) -> tuple[ModelCard | None, dict[str, torch.Tensor]]:
    """The card stored in a checkpoint (``None`` for a bare state_dict) and its state_dict."""
    require_file(path, "model.checkpoint")
    kind = archive_kind(path)
    if kind != "checkpoint":
        what = "a TorchScript file" if kind == "torchscript" else "a torch.export program"
        raise ModelError(f"checkpoint {path} is {what}, not a checkpoint: give it as model.file instead")
    obj = _torch_load(path)
    card = None
    if isinstance(obj, dict) and "card" in obj and "state_dict" in obj:
        if not isinstance(obj["card"], Mapping):
            raise ModelError(f"checkpoint {path}: its card is a {type(obj['card']).__name__}, not a mapping; re-save it")
        card = ModelCard.from_dict(obj["card"], source=f"checkpoint {path}")
    state = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    return card, _state_dict(state, path)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, card: ModelCard) -> None:
    """Load ``state`` into ``model`` strictly; any mismatch raises one :class:`ModelError` line."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_head(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_head(unexpected)}")
    if mismatched:
        problems.append(f"shapes (checkpoint vs model) {_head(mismatched)}")
    if problems:
        raise ModelError(
            f"checkpoint {path} does not fit architecture {card.architecture!r} with {len(card.bands)} bands, "
            f"{len(card.classes)} classes and params {dict(card.params)}: {'; '.join(problems)}; "
            "make the card match the training run"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"checkpoint {path}: {first_line(e)}; make the card match the training run") from None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL (\w+(?:\.\w+)+)", text)
            holds = f"a pickled {found.group(1)}" if found else "pickled Python objects"
            raise ModelError(
                f"checkpoint {path} holds {holds}, which safe loading (weights_only=True) refuses: "
                "save model.state_dict() (or use geoseg's save_checkpoint) and load that"
            ) from None
        raise ModelError(f"checkpoint {path} is not a torch checkpoint ({first_line(e, path)}); check the path") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError, IndexError) as e:
        raise ModelError(f"checkpoint {path} is not a torch checkpoint ({first_line(e, path)}); check the path") from None


def _state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        found = f"a dict with keys {list(state)[:5]}" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise ModelError(
            f"checkpoint {path} holds {found}, not a state_dict: save model.state_dict() or "
            "{'card': ..., 'state_dict': ...} (geoseg's save_checkpoint)"
        )
    return dict(state)


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything ``weights_only`` loading would refuse later."""
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, where)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, where)
        return
    raise ModelError(
        f"save_checkpoint: {where} holds a {type(value).__name__}, which weights_only loading refuses: "
        "use plain numbers, strings, lists, dicts or tensors"
    )


def _head(items: Sequence[str], n: int = 3) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return f"{list(items[:n])}{more}"
