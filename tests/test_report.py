"""The run report's derived figures and JSON, and the test-only fault hook (no Ray here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from geoseg._faults import ENV, InjectedFault, inject
from geoseg.report import InputReport, JobReport


def test_rates_in_the_inputs_own_units() -> None:
    raster = InputReport(path="a.tif", name="a", status="complete", kind="raster", area_km2=36.0, blocks_total=4,
                         blocks_run=4, patches_needed=100, patches_forwarded=100, seconds=60.0)  # fmt: skip
    volume = InputReport(path="c1", name="c1", status="complete", kind="volume", patches_needed=155,
                         patches_forwarded=155, seconds=12.0)  # fmt: skip
    assert raster.patches_per_s == pytest.approx(100 / 60)
    assert raster.km2_per_hour == pytest.approx(36.0 * 60) and raster.cases_per_hour is None
    assert volume.cases_per_hour == pytest.approx(300.0) and volume.km2_per_hour is None
    assert InputReport(path="x.tif", kind="raster", seconds=5.0).km2_per_hour is None, "no CRS: no area"
    resumed = InputReport(path="a.tif", kind="raster", area_km2=36.0, blocks_total=4, blocks_run=1, seconds=60.0)
    assert resumed.km2_per_hour == pytest.approx(9.0 * 60), "a resumed run computed a quarter of the scene"
    nothing = InputReport(path="a.tif", kind="raster", area_km2=36.0, blocks_total=4, blocks_run=0, seconds=60.0)
    assert nothing.km2_per_hour is None, "every block had its marker: no area computed"
    job = JobReport(scenes=[raster, volume], run_seconds=120.0, workers=2, device="cpu")
    d = json.loads(job.to_json())
    assert d["km2_per_hour"] == pytest.approx(36.0 * 30) and d["cases_per_hour"] == pytest.approx(30.0)
    assert d["patches_per_s"] == pytest.approx(255 / 120)
    assert set(d["versions"]) >= {"geoseg", "python", "ray", "torch"} and all(d["versions"].values())
    assert {"status", "blocks_total", "patches_forwarded", "seconds", "patches_per_s", "km2_per_hour",
            "cases_per_hour", "blocks_retried", "patches_retried", "restarts"} <= set(d["inputs"][0])  # fmt: skip
    assert "km²/h" in job.summary() and "cases/h" in job.summary()


def test_redone_work_is_in_the_summary() -> None:
    res = InputReport(path="a.tif", name="a", status="complete", blocks_total=4, blocks_run=4, patches_needed=8,
                      patches_forwarded=8, patches_retried=3, blocks_retried=1, actor_failures=1, restarts=1)  # fmt: skip
    job = JobReport(scenes=[res], run_seconds=1.0, workers=1, actors_restarted=1)
    text = job.summary()
    assert "3 patches sent again, 1 block tasks redone" in text and "1 model actors restarted" in text
    assert text.splitlines()[-1].endswith("1 model actor(s) restarted, redone: 3 patches, 1 block tasks")


def test_fault_hook_is_off_without_its_variable_and_fires_as_often_as_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    inject("read", "/data/a.tif")  # nothing set: nothing happens
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"point": "write", "match": "a/", "times": 2}]))
    monkeypatch.setenv(ENV, str(rules))
    inject("read", "a/b_0")  # another point
    inject("write", "b/b_0")  # another name
    for _ in range(2):
        with pytest.raises(InjectedFault, match="injected write fault in a/b_0"):
            inject("write", "a/b_0")
    inject("write", "a/b_0")  # spent
    assert isinstance(InjectedFault("x"), OSError), "retried like an I/O error, never a geoseg error"
