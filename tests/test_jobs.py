"""The ready job specs in jobs/ are valid specs (their input paths are the user's to fill)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from geoseg.spec import JobSpec

JOBS = sorted(p for p in (Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml") if not p.name.startswith("train_"))


@pytest.mark.parametrize("path", JOBS, ids=[p.name for p in JOBS])
def test_job_spec_validates(path: Path) -> None:
    spec = JobSpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.inputs and spec.model.name or spec.model.checkpoint
