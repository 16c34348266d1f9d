"""The run report: what happened to each input and to the job, for people and for machines."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from geoseg import __version__

__all__ = ["InputReport", "JobReport"]


@dataclass
class InputReport:
    """One input of a job.

    ``patches_forwarded`` counts the patches the model answered in successful calls (each
    grid patch once: ``inference_ratio`` is 1.00 when exactly-once holds); of those,
    ``patches_zero`` were all-zero and answered from the actor's one cached pass.
    ``patches_retried`` are patches of calls that failed and were sent again, counted apart.
    """

    path: str
    name: str = ""
    status: str = "failed"  # complete | failed
    error: str = ""
    grid_patches: int = 0
    patches_needed: int = 0
    patches_forwarded: int = 0
    patches_zero: int = 0
    patches_retried: int = 0
    blocks_total: int = 0
    blocks_run: int = 0
    blocks_retried: int = 0
    actor_failures: int = 0
    seconds: float = 0.0
    already: bool = False  # complete from an earlier run of the same job
    threshold: float | None = None  # an index model's threshold chosen for this input (threshold: otsu)

    @property
    def inference_ratio(self) -> float:
        return self.patches_forwarded / self.patches_needed if self.patches_needed else 1.0

    def line(self) -> str:
        """One line for the summary."""
        if self.status != "complete":
            if self.error.startswith(self.path):
                return f"{self.status}: {self.error}"
            return f"{self.path}: {self.status}: {self.error}"
        if self.already:
            return f"{self.name}: complete already (an earlier run of the same job), nothing to do"
        text = (
            f"{self.name}: complete, {self.blocks_run}/{self.blocks_total} blocks run, inference "
            f"{self.patches_forwarded}/{self.patches_needed} patches = {self.inference_ratio:.2f}"
        )
        if self.patches_zero:
            text += f" ({self.patches_zero} all-zero, from one cached pass)"
        if self.threshold is not None:
            text += f"; Otsu threshold {self.threshold:.4f}"
        redone = [
            f"{n} {what}"
            for n, what in (
                (self.patches_retried, "patches sent again"),
                (self.blocks_retried, "block tasks redone"),
                (self.actor_failures, "model calls lost with their actor"),
            )
            if n
        ]
        if redone:
            text += "; after failures: " + ", ".join(redone)
        return text


@dataclass
class JobReport:
    """A whole job: one :class:`InputReport` per input, in the spec's order, and the job's figures."""

    scenes: list[InputReport] = field(default_factory=list)
    seconds: float = 0.0
    run_seconds: float = 0.0
    workers: int = 0
    device: str = ""
    numerics: str = ""
    actors_restarted: int = 0
    patches_padded: int = 0  # zero rows that filled last batches: only the job's very last, when packing works
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[InputReport]:
        return self.scenes

    @property
    def ok(self) -> bool:
        return all(s.status == "complete" for s in self.scenes)

    @property
    def patches_forwarded(self) -> int:
        return sum(s.patches_forwarded for s in self.scenes)

    def summary(self) -> str:
        lines = [s.line() for s in self.scenes]
        done = sum(s.status == "complete" for s in self.scenes)
        if not self.workers:
            lines.append(f"{done}/{len(self.scenes)} inputs complete, nothing to run")
            return "\n".join(lines)
        rate = self.patches_forwarded / self.run_seconds if self.run_seconds else 0.0
        restarted = f", {self.actors_restarted} model actor(s) restarted" if self.actors_restarted else ""
        lines.append(
            f"{done}/{len(self.scenes)} inputs complete, {self.patches_forwarded} patches in {self.seconds:.1f} s "
            f"wall (Ray start and model load included), {rate:.1f} patches/s while running, on {self.workers} "
            f"{self.device + ' ' if self.device else ''}worker(s){restarted}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: every input and the job's figures, with versions."""
        import numpy  # noqa: PLC0415

        return {
            "ok": self.ok,
            "inputs": [{**asdict(s), "inference_ratio": s.inference_ratio} for s in self.scenes],
            "seconds": self.seconds,
            "run_seconds": self.run_seconds,
            "workers": self.workers,
            "device": self.device,
            "numerics": self.numerics,
            "actors_restarted": self.actors_restarted,
            "patches_padded": self.patches_padded,
            "notes": list(self.notes),
            "versions": {"geoseg": __version__, "python": platform.python_version(), "numpy": numpy.__version__},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
