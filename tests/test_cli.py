"""Invariant 9 and the CLI: bad input gets one clear line, a non-zero exit, nothing marked complete."""

from __future__ import annotations

import os
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
        assert line.count(str(path)) == 1, f"the input's path once, not twice: {line}"
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
        ("inputs: [a.tif]\noutput: o.zarr\nmodel: {name: ndwi}\nblock_px: true\n", "block_px: true is not a number"),
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
    assert "4/4 blocks run, inference 48/48 patches = 1.00" in run.stdout
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
        ("param of the wrong kind", 2, "model.params.threshold (--param threshold=...): 'abc' is not a number"),
        ("output not creatable", 2, "cannot create the store (Not a directory); choose a writable --output"),
        ("overlap too large", 2, "tiling.overlap_px (--overlap) 200 px does not fit a 256 px patch"),
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
        "param of the wrong kind": [str(spec.with_name("good.yaml")), "--param", "threshold=abc"],
        "output not creatable": [str(spec.with_name("good.yaml")), "-o", str(spec / "o.zarr")],
        "overlap too large": [str(spec.with_name("good.yaml")), "--overlap", "200"],
    }[case]
    good = write_raster(tmp_path / "s.tif", water_scene((40, 40)), descriptions=["B02", "B03", "B04", "B08"])
    spec.with_name("good.yaml").write_text(f"inputs: [{good}]\noutput: {tmp_path / 'o.zarr'}\nmodel: {{name: ndwi}}\n")
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


def test_readme_first_command_twice_runs_nothing_the_second_time(tmp_path: Path) -> None:
    """`geoseg example` rewrites scene.tif (same bytes, new timestamps): the rerun is the same job."""
    exe = [sys.executable, "-m", "geoseg.cli"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    outs = []
    for _ in range(2):
        subprocess.run([*exe, "example", str(tmp_path / "ex")], check=True, capture_output=True)
        run = subprocess.run([*exe, "run", str(tmp_path / "ex" / "job.yaml"), "--no-progress"], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout)
    assert "inference 48/48 patches = 1.00" in outs[0]
    assert "complete already" in outs[1] and "nothing to run" in outs[1], outs[1]


def test_threshold_written_out_or_left_to_default_is_one_job(tmp_path: Path) -> None:
    from geoseg.models import resolve_card, weights_identity
    from geoseg.plan import plan_job
    from geoseg.spec import parse_spec

    src = write_raster(tmp_path / "s.tif", water_scene((64, 64)), descriptions=S2)
    fps = set()
    for params in ({}, {"threshold": 0.0}, {"threshold": 0}, {"gain": 10}):
        spec = parse_spec({"inputs": [str(src)], "output": str(tmp_path / "o.zarr"), "model": {"name": "ndwi", "params": params}})
        fps.add(plan_job(spec, resolve_card(spec.model), weights_identity(spec.model)).groups[0].fingerprint)
    assert len(fps) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_address_where_nothing_listens_is_one_line_not_a_hang(tmp_path: Path) -> None:
    src = write_raster(tmp_path / "s.tif", water_scene((64, 64)), descriptions=S2)
    port = _free_port()
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "-i", str(src), "-m", "ndwi", "-o", str(tmp_path / "o.zarr"),
           "--address", f"127.0.0.1:{port}", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # a guard against a hang, not a measure
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "nothing answers there" in line and "ray start" in line
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_cleanly_and_finished_inputs_are_complete(tmp_path: Path, sig: str) -> None:
    """The first input completes; a signal during the second ends the run with one line (no Ray
    'Unhandled error' lines), the first stays complete and exportable, the second is not complete."""
    import signal
    import time

    from geoseg.sinks import group_status

    small = write_raster(tmp_path / "a.tif", water_scene((200, 200), seed=1), descriptions=S2)
    big = write_raster(tmp_path / "b.tif", water_scene((2600, 2600), seed=2), descriptions=S2)
    out = tmp_path / "o.zarr"
    cmd = [sys.executable, "-m", "geoseg.cli", "run", "-i", str(small), "-i", str(big), "-m", "ndwi", "-o", str(out),
           "--block-size", "512", "--no-progress"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"GEOSEG_MAX_BLOCKS_IN_FLIGHT": "1"}
    # as from a terminal: a suite started in the background (`cmd &`, nohup) passes SIGINT ignored to its children
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        st = group_status(out, "a") if (out / "a" / "zarr.json").exists() else None
        if st and st[1] == "complete" and (out / ".geoseg" / "b" / "done").is_dir():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal: make the second input bigger"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if sig == "SIGTERM" else 130), err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("geoseg: note:")]
    assert len(lines) == 1 and lines[0].startswith("geoseg: ") and "rerun" in lines[0], err
    assert group_status(out, "a") is not None and group_status(out, "a")[1] == "complete"
    assert group_status(out, "b")[1] == "running"
    assert main(["export", str(out), "--name", "a", "--out", str(tmp_path / "a.tif.cog.tif")]) == 0


@pytest.mark.usefixtures("ray_local")
def test_export_into_an_unwritable_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = tmp_path / "ex"
    subprocess.run([sys.executable, "-m", "geoseg.cli", "example", str(ex)], check=True, capture_output=True)
    store = ex / "out.zarr"
    src = ex / "scene.tif"
    assert main(["run", "-i", str(src), "-m", "ndwi", "-o", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    for out, needle in [
        (tmp_path / "missing" / "w.tif", "does not exist"),
        (Path("/proc/w.tif"), "cannot write"),
        (tmp_path, "is a folder"),
    ]:
        code, err = _run_cli(["export", str(store), "--name", "scene", "--out", str(out)], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, err = _run_cli(["export", str(store), "--name", "nope", "--out", str(tmp_path / "x.tif")], capsys)
    assert code == 2 and "groups there: scene" in err
    code, err = _run_cli(["export", str(tmp_path / "nostore.zarr"), "--name", "scene", "--out", str(tmp_path / "x.tif")], capsys)
    assert code == 2 and "no Zarr store there" in err


def test_overwrite_marks_the_old_group_before_deleting_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete that fails half-way leaves a group that is not complete (nothing half-deleted looks finished)."""
    from geoseg.errors import StoreError
    from geoseg.sinks import SceneLayout, Store, prepare_group

    store = tmp_path / "o.zarr"
    layout = SceneLayout("s", (10, 10), 448, ("a", "b"), "", (1.0, 0.0, 0.0, 0.0, -1.0, 10.0))
    prepare_group(store, layout, "old", {})
    from geoseg.sinks._zarr import complete_group

    complete_group(store, "s", {})
    assert group_status(store, "s") == ("old", "complete")

    def broken(self: Store, prefix: str) -> None:
        raise StoreError(f"{self.url}: cannot delete {prefix} (Permission denied); check permissions")

    monkeypatch.setattr(Store, "delete_prefix", broken)
    with pytest.raises(StoreError, match="Permission denied"):
        prepare_group(store, layout, "new", {}, overwrite=True)
    assert group_status(store, "s") == ("old", "replacing")


def test_submit_uploads_only_the_spec_and_refuses_relative_paths_for_a_remote_cluster(tmp_path: Path) -> None:
    from geoseg.errors import SpecError
    from geoseg.submit import _staged_spec, submit

    (tmp_path / "old.zarr").mkdir()  # an old store beside the spec must never travel
    src = write_raster(tmp_path / "s.tif", water_scene((64, 64)), descriptions=S2)
    spec = tmp_path / "job.yaml"
    spec.write_text("inputs: [s.tif]\noutput: out.zarr\nmodel: {name: ndwi}\n")
    with pytest.raises(SpecError, match=r"relative paths \['s.tif', 'out.zarr'\] cannot be submitted to the remote cluster"):
        submit(spec, "http://10.20.30.40:8265")
    staged = _staged_spec(spec)
    assert staged["inputs"] == [str(src)] and staged["output"] == str(tmp_path / "out.zarr")
    with pytest.raises(SpecError, match="not a Ray Jobs address"):
        submit(spec, "127.0.0.1:6379")


def test_a_group_interrupted_before_its_metadata_is_made_anew(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C between creating a group and writing its fingerprint left a bare group that the
    same command then refused as "written by a different job (fingerprint  != ...)"."""
    src = write_raster(tmp_path / "s.tif", water_scene((60, 70)), descriptions=["B02", "B03", "B04", "B08"])
    zarr.open_group(str(tmp_path / "o.zarr"), mode="a").create_group("s")  # what the interrupt left
    code, err = _run_cli(["run", "-i", str(src), "-m", "ndwi", "-o", str(tmp_path / "o.zarr"), "--no-progress"], capsys)
    assert code == 0, err
    assert zarr.open_group(str(tmp_path / "o.zarr"), path="s", mode="r").attrs["geoseg"]["status"] == "complete"


def test_a_bad_ray_address_from_the_environment_is_named_as_such(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import water_scene, write_raster

    scene = write_raster(tmp_path / "s.tif", water_scene((64, 64)), descriptions=["B02", "B03", "B04", "B08"])
    env = {**os.environ, "RAY_ADDRESS": "garbage"}
    proc = subprocess.run(
        [sys.executable, "-m", "geoseg", "run", "-i", str(scene), "-m", "ndwi", "-o", str(tmp_path / "o.zarr")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "geoseg: error: RAY_ADDRESS='garbage': not HOST:PORT; give the Ray head's GCS address, e.g. 10.0.0.5:6379"
    )
