"""Test-only fault injection: make a read or write task raise, a bounded number of times.

Off unless the environment variable ``GEOSEG_TEST_FAULTS`` names a JSON file, which the fault
tests and benchmarks write; nothing a spec or a flag can turn on. The file holds a list of
rules ``{"point": "read" | "write", "match": "substring of the task's name", "times": N}``.
A task whose name contains ``match`` raises :class:`InjectedFault` (an ``OSError``: retried
like an I/O hiccup) for the first ``times`` calls of the whole cluster: each raise claims a
slot file beside the rules file (created exclusively), so "once" holds across processes and
nodes that share the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ENV", "InjectedFault", "inject"]

ENV = "GEOSEG_TEST_FAULTS"


class InjectedFault(OSError):
    """A fault raised on purpose by a test."""


def inject(point: str, name: str) -> None:
    """Raise :class:`InjectedFault` where a rule of ``$GEOSEG_TEST_FAULTS`` says so."""
    rules_file = os.environ.get(ENV)
    if not rules_file:
        return
    path = Path(rules_file)
    try:
        rules = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for i, rule in enumerate(rules):
        if rule.get("point") != point or str(rule.get("match", "")) not in name:
            continue
        times = int(rule.get("times", 1))
        for n in range(times):
            try:
                fd = os.open(path.with_name(f"{path.name}.{i}.{n}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.close(fd)
            raise InjectedFault(f"injected {point} fault in {name} ({n + 1} of {times})")
