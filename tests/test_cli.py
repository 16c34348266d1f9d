"""Invariant 9 and the CLI: bad input gets one clear line, a non-zero exit, nothing marked complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from geoseg.cli import main
from geoseg.sinks import group_status
from tests.conftest import water_scene, write_raster

S2 = ["B02", "B03", "B04", "B08"]


@pytest.mark.parametrize("argv", [[], ["run"], ["export"], ["models"], ["example"], ["train"], ["evaluate"]])
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: geoseg" in capsys.readouterr().out


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp / "empty.tif"
    empty.write_bytes(b"")
    text = tmp / "notes.tif"
    text.write_text("hello, not a raster")
    cplx = write_raster(tmp / "complex.tif", (np.ones((4, 20, 20)) * (1 + 2j)).astype(np.complex64), descriptions=S2)
    rgb = write_raster(tmp / "rgb.tif", np.ones((3, 40, 40), np.uint8), descriptions=["red", "green", "blue"])
    return {
        "missing": (tmp / "nowhere.tif", "no such file"),
        "zero-byte": (empty, "not a readable raster"),
        "non-raster": (text, "not a readable raster"),
        "complex dtype": (cplx, "complex64 is not supported"),
        "band missing": (rgb, "nir"),
    }


@pytest.mark.usefixtures("ray_local")
def test_each_bad_input_is_one_line_and_the_good_one_finishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad_inputs(tmp_path)
    good = write_raster(tmp_path / "good.tif", water_scene((120, 90)), descriptions=S2)
    out = tmp_path / "o.zarr"
    args = ["run", "--model", "ndwi", "--output", str(out), "--no-progress", "--input", str(good)]
    for path, _ in bad.values():
        args += ["--input", str(path)]
    code, err = _run_cli(args, capsys)
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("geoseg: error:")]
    assert len(lines) == len(bad), err
    for path, needle in bad.values():
        (line,) = [ln for ln in lines if str(path.name) in ln]
        assert needle in line, line
        assert "Traceback" not in err
    assert group_status(out, "good") is not None and group_status(out, "good")[1] == "complete"
    for path, _ in bad.values():
        assert group_status(out, path.stem) is None


def test_band_error_names_file_bands_and_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rgb = write_raster(tmp_path / "rgb.tif", np.ones((3, 40, 40), np.uint8), descriptions=["red", "green", "blue"])
    code, err = _run_cli(["run", "-i", str(rgb), "-m", "ndwi", "-o", str(tmp_path / "o.zarr"), "--on-error", "fail"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "rgb.tif" in line and "nir" in line and "bands" in line


def test_model_that_expects_other_bands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    two = write_raster(tmp_path / "two.tif", np.ones((2, 40, 40), np.uint16))
    code, err = _run_cli(
        ["run", "-i", str(two), "-m", "ndwi", "--param", "bands=[1, 5]", "-o", str(tmp_path / "o.zarr"), "--on-error", "fail"],
        capsys,
    )
    assert code == 2 and "two.tif" in err and "5" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("inputs: [a.tif]\noutput: o.zarr\nmodel: {name: ndwi}\nstitch: blend\n", "stitch"),
        ("inputs: [a.tif]\noutput: o.zarr\nmodel: {name: ndwi}\nworkerz: 2\n", "workerz: is not a known field"),
        ("output: o.zarr\nmodel: {name: ndwi}\n", "inputs: is required"),
        ("inputs: [a.tif]\noutput: o.zarr\nmodel: {name: ndwi}\nblock_px: -5\n", "block_px"),
        ("inputs: [a.tif\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("inputs: ['*.nothing']\noutput: o.zarr\nmodel: {name: ndwi}\n", "matches no file"),
    ],
)
def test_bad_spec_names_the_field(tmp_path: Path, text: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(text)
    code, err = _run_cli(["run", str(spec)], capsys)
    assert code == 2 and needle in err and "job.yaml" in err, err
    assert len(err.strip().splitlines()) == 1


def test_unknown_model_and_missing_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_cli(["run", "-i", "a.tif", "-m", "wetness", "-o", str(tmp_path / "o.zarr")], capsys)
    assert code == 2 and "wetness" in err and "ndwi" in err
    code, err = _run_cli(["run", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml" in err and "no such spec file" in err
    code, err = _run_cli(["run", "-i", "a.tif"], capsys)
    assert code == 2 and "--output" in err and "--model" in err


def test_models_lists_and_shows_cards(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    assert "ndwi" in capsys.readouterr().out
    assert main(["models", "ndwi"]) == 0
    out = capsys.readouterr().out
    assert "bands:" in out and "- green" in out and "- water" in out


def test_real_cli_process_example_run_and_export(tmp_path: Path) -> None:
    """The README path as a user runs it: example, run, export, and a bad path, all in fresh processes."""
    exe = [sys.executable, "-m", "geoseg.cli"]
    subprocess.run([*exe, "example", str(tmp_path / "ex")], check=True, capture_output=True)
    run = subprocess.run([*exe, "run", str(tmp_path / "ex" / "job.yaml"), "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "inference 70/70 patches = 1.00" in run.stdout
    exp = subprocess.run(
        [*exe, "export", str(tmp_path / "ex" / "out.zarr"), "--name", "scene", "--out", str(tmp_path / "w.tif")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert exp.returncode == 0 and (tmp_path / "w.tif").exists(), exp.stderr
    bad = subprocess.run([*exe, "export", str(tmp_path / "ex" / "out.zarr"), "--name", "nope", "--out", str(tmp_path / "x.tif")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no group 'nope'" in bad.stderr
    assert zarr.open_group(str(tmp_path / "ex" / "out.zarr"), path="scene", mode="r").attrs["geoseg"]["status"] == "complete"


@pytest.mark.usefixtures("ray_local")
def test_review_findings_stay_fixed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A complete store rerun with another block size is complete (not 'unfinished'); workers whose
    explicit CPUs would take every CPU are refused instead of hanging; a nested typo lists that
    section's fields; --param merges into the spec's params."""
    src = write_raster(tmp_path / "s.tif", water_scene((300, 300)), descriptions=S2)
    out = tmp_path / "o.zarr"
    base = ["run", "-i", str(src), "-m", "ndwi", "-o", str(out), "--no-progress"]
    assert main(base) == 0
    assert main([*base, "--block-size", "448"]) == 0
    assert "1/1 inputs complete, nothing to run" in capsys.readouterr().out
    code, err = _run_cli([*base, "--workers", "4", "--cpus-per-worker", "1", "--overwrite"], capsys)
    assert code == 2 and "leave fewer than 1" in err
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{src}]\noutput: {tmp_path / 'p.zarr'}\nmodel: {{name: ndwi, params: {{threshold: 0.5}}, thresh: 1}}\n")
    code, err = _run_cli(["run", str(spec)], capsys)
    assert code == 2 and "model.thresh: is not a known field (fields: card, checkpoint, file, name, params)" in err
    spec.write_text(f"inputs: [{src}]\noutput: {tmp_path / 'p.zarr'}\nmodel: {{name: ndwi, params: {{bands: ['2', '4']}}}}\n")
    assert main(["run", str(spec), "--param", "threshold=0.3", "--no-progress"]) == 0
    meta = zarr.open_group(str(tmp_path / "p.zarr"), path="s", mode="r").attrs["geoseg"]
    assert meta["bands"] == [1, 3] and meta["model"]["params"]["threshold"] == 0.3


FAST = """
import sys, time
t0 = time.perf_counter()
from geoseg.cli import main
code = main(sys.argv[1:])
import ray
print("RESULT", code, ray.is_initialized(), "torch" in sys.modules, round(time.perf_counter() - t0, 2))
"""


@pytest.mark.parametrize(
    ("case", "want_code", "needle"),
    [
        ("bad spec", 2, "workerz: is not a known field"),
        ("missing input", 1, "no such file"),
        ("bad flag value", 2, "invalid choice: 'blend'"),
        ("unknown model", 2, "wetness"),
    ],
)
def test_bad_spec_or_input_fails_before_ray_and_torch(tmp_path: Path, case: str, want_code: int, needle: str) -> None:
    """Validation and planning come first: Ray starts (and torch loads) only for work to do."""
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{tmp_path / 'nowhere.tif'}]\noutput: {tmp_path / 'o.zarr'}\nmodel: {{name: ndwi}}\nworkerz: 2\n")
    args = {
        "bad spec": [str(spec)],
        "missing input": ["-i", str(tmp_path / "nowhere.tif"), "-m", "ndwi", "-o", str(tmp_path / "o.zarr")],
        "bad flag value": ["-i", "a.tif", "-m", "ndwi", "-o", "o.zarr", "--stitch", "blend"],
        "unknown model": ["-i", "a.tif", "-m", "wetness", "-o", "o.zarr"],
    }[case]
    proc = subprocess.run([sys.executable, "-c", FAST, "run", *args], capture_output=True, text=True)
    if case == "bad flag value":  # argparse exits before main returns
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
        return
    (result,) = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    _, code, ray_up, torch_loaded, _seconds = result
    assert int(code) == want_code and needle in proc.stderr, proc.stderr
    assert ray_up == "False", "Ray must not start for a job that cannot run"
    assert torch_loaded == "False", "torch must not load to validate a spec or find a missing input"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.zarr").exists(), "nothing is written for a job that cannot run"
