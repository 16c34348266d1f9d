"""The run report: what happened to each input and to the job, for people and for machines.

:meth:`JobReport.to_dict` is the JSON the pipeline writes into the output store at
``.geoseg/report.json`` (:data:`geoseg.sinks.REPORT_KEY`) after every run that ran something;
docs/spec.md lists its fields.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from geoseg import __version__

__all__ = ["InputReport", "JobReport", "versions"]


def versions() -> dict[str, str]:
    """geoseg's and its engine's versions as installed here (without importing torch or Ray)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {"geoseg": __version__, "python": platform.python_version()}
    for dist in ("ray", "torch", "numpy", "zarr", "rasterio"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = ""
    return out


def _num(x: float) -> str:
    """Three significant digits, or a whole number from 1000 up (53,050 not 5.305e+04)."""
    return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"


@dataclass
class InputReport:
    """One input of a job.

    ``patches_forwarded`` counts the patches the model answered in successful calls (each
    grid patch once: ``inference_ratio`` is 1.00 when exactly-once holds); of those,
    ``patches_zero`` were all-zero and answered from the actor's one cached pass.
    ``patches_retried`` are patches of calls that failed and were sent again, counted apart;
    ``blocks_retried`` the read, write or later-phase tasks run again; ``actor_failures`` the
    model calls of this input lost with their actor, and ``restarts`` the model actors started
    anew after such a loss. ``area_km2`` (rasters with a CRS) and ``kind`` give the throughput
    in the input's own unit: km² per hour for rasters, cases per hour for volumes.
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
    restarts: int = 0
    seconds: float = 0.0
    already: bool = False  # complete from an earlier run of the same job
    threshold: float | None = None  # an index model's threshold chosen for this input (threshold: otsu)
    kind: str = ""  # raster | volume
    area_km2: float | None = None  # the raster's ground area; None without a CRS

    @property
    def patches_per_s(self) -> float:
        return self.patches_forwarded / self.seconds if self.seconds else 0.0

    @property
    def km2_run(self) -> float | None:
        """The ground area this run computed: the raster's area times the share of its blocks
        run now (a resumed run computed only the blocks without a marker)."""
        if self.kind != "raster" or self.area_km2 is None or self.already or not self.blocks_run:
            return None
        return self.area_km2 * self.blocks_run / max(self.blocks_total, 1)

    @property
    def km2_per_hour(self) -> float | None:
        area = self.km2_run
        return None if area is None or not self.seconds else area * 3600.0 / self.seconds

    @property
    def cases_per_hour(self) -> float | None:
        if self.kind != "volume" or not self.seconds or self.already:
            return None
        return 3600.0 / self.seconds

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: every field and the derived rates."""
        return {
            **asdict(self),
            "inference_ratio": self.inference_ratio,
            "patches_per_s": self.patches_per_s,
            "km2_per_hour": self.km2_per_hour,
            "cases_per_hour": self.cases_per_hour,
        }

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
                (self.restarts, "model actors restarted"),
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
    blocks_in_flight: int = 0  # the scheduler's bound on blocks read and not yet released
    peak_blocks_in_flight: int = 0  # the most it held at once
    batch_size: int = 0
    calls_per_worker: list[int] = field(default_factory=list)  # successful model calls of each actor slot
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

    @property
    def patches_retried(self) -> int:
        return sum(s.patches_retried for s in self.scenes)

    @property
    def blocks_retried(self) -> int:
        return sum(s.blocks_retried for s in self.scenes)

    def summary(self) -> str:
        lines = [s.line() for s in self.scenes]
        done = sum(s.status == "complete" for s in self.scenes)
        if not self.workers:
            lines.append(f"{done}/{len(self.scenes)} inputs complete, nothing to run")
            return "\n".join(lines)
        rate = self.patches_forwarded / self.run_seconds if self.run_seconds else 0.0
        restarted = f", {self.actors_restarted} model actor(s) restarted" if self.actors_restarted else ""
        if self.patches_retried or self.blocks_retried:
            restarted += f", redone: {self.patches_retried} patches, {self.blocks_retried} block tasks"
        lines.append(
            f"{done}/{len(self.scenes)} inputs complete, {self.patches_forwarded} patches in {self.seconds:.1f} s "
            f"wall (Ray start and model load included), {rate:.1f} patches/s{self._rate_text()} while running, "
            f"on {self.workers} "
            f"{self.device + ' ' if self.device else ''}worker(s){restarted}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON: every input and the job's figures, with versions."""
        return {
            "ok": self.ok,
            "inputs": [s.to_dict() for s in self.scenes],
            "seconds": self.seconds,
            "run_seconds": self.run_seconds,
            "workers": self.workers,
            "device": self.device,
            "numerics": self.numerics,
            "actors_restarted": self.actors_restarted,
            "patches_padded": self.patches_padded,
            "patches_retried": self.patches_retried,
            "blocks_retried": self.blocks_retried,
            "blocks_in_flight": self.blocks_in_flight,
            "peak_blocks_in_flight": self.peak_blocks_in_flight,
            "batch_size": self.batch_size,
            "calls_per_worker": list(self.calls_per_worker),
            "patches_per_s": self.patches_forwarded / self.run_seconds if self.run_seconds else 0.0,
            **self._rates(),
            "notes": list(self.notes),
            "versions": versions(),
        }

    def _rate_text(self) -> str:
        rates = self._rates()
        text = ""
        if rates["km2_per_hour"] is not None:
            text += f", {_num(rates['km2_per_hour'])} km²/h"
        if rates["cases_per_hour"] is not None:
            text += f", {_num(rates['cases_per_hour'])} cases/h"
        return text

    def _rates(self) -> dict[str, float | None]:
        """The job's km² per hour (rasters run now) and cases per hour (volumes run now), over
        the time the scheduler ran: inputs overlap in time, so their own rates do not add up."""
        ran = [s for s in self.scenes if s.status == "complete" and not s.already]
        area = [a for a in (s.km2_run for s in ran) if a is not None]
        cases = sum(s.kind == "volume" for s in ran)
        hours = self.run_seconds / 3600.0
        return {
            "km2_per_hour": sum(area) / hours if area and hours else None,
            "cases_per_hour": cases / hours if cases and hours else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)
