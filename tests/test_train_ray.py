"""geoseg train --workers N: data-parallel training on Ray Train (TorchTrainer, DDP on gloo).

One run of two workers on the generated lakes scene, with a worker failing once at the end of
epoch 1 (the test-only fault hook): Ray Train restarts the worker group, the workers resume from
the epoch the driver's node holds, and the run finishes with every epoch once, each of half the
steps of a one-process run. Bad flags are one line before Ray starts.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from geoseg._faults import ENV
from geoseg.models import ModelSpec, load_model
from geoseg.train import parse_train_spec, train
from tests.test_train_raster import raster_spec, write_scene


def test_two_workers_train_and_survive_a_worker_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from geoseg.pipeline import release_workers  # noqa: PLC0415

    release_workers()
    ray.shutdown()  # a fresh private Ray whose workers inherit the fault rules
    rules = tmp_path / "faults.json"
    rules.write_text(json.dumps([{"point": "train", "match": "epoch 1 rank 1", "times": 1}]))
    monkeypatch.setenv(ENV, str(rules))
    _, lakes, _ = write_scene(tmp_path)
    spec = parse_train_spec(raster_spec(tmp_path, lakes, optimisation={"epochs": 2, "threads": 1}))

    result = train(spec, workers=2)

    assert not ray.is_initialized()  # the private Ray it started is gone
    assert len(list(tmp_path.glob("faults.json.*"))) == 1  # the failure happened, once
    o = spec.optimisation
    steps = math.ceil(o.samples_per_epoch / (o.batch_size * 2))
    assert [h["epoch"] for h in result.history] == [1, 2]  # epoch 1 not repeated, epoch 2 not skipped
    assert all(len(h["losses"]) == steps and h["workers"] == 2 for h in result.history)
    assert all(math.isfinite(x) for h in result.history for x in h["losses"])
    saved = torch.load(result.last_checkpoint, weights_only=True)
    assert saved["extra"]["epoch"] == 2 and saved["extra"]["train_state"]["steps_per_epoch"] == steps
    history = json.loads((spec.output / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    _, card = load_model(ModelSpec(checkpoint=result.best_checkpoint))
    assert card.task == "semantic" and card.bands == ("1",)
    assert not list(spec.output.glob(".*.tmp"))

    # resumed in one process (another worker count): the schedule and history carry on
    more = parse_train_spec(raster_spec(tmp_path, lakes, optimisation={"epochs": 2, "threads": 1}, resume=True))
    again = train(more, workers=1)
    assert [h["epoch"] for h in again.history] == [1, 2]  # nothing left to do: the same run


def test_two_workers_run_the_dense_warmup_once_on_rank_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warm-up runs on rank 0 (DDP broadcasts its weights to rank 1 when it wraps the model); its note prints on
    the driver, and its last.pt (epoch 0) reaches the output before epoch 1."""
    import logging  # noqa: PLC0415

    from geoseg.pipeline import release_workers  # noqa: PLC0415

    release_workers()
    ray.shutdown()
    _, lakes, _ = write_scene(tmp_path)
    optimisation = {"epochs": 1, "samples_per_epoch": 8, "batch_size": 2, "crop_px": 64, "lr": 0.002, "threads": 1,
                    "dense_warmup_steps": 10}  # fmt: skip
    spec = parse_train_spec(raster_spec(tmp_path, lakes, model={"architecture": "maskrcnn_mobilenet_v3_large_fpn"},
                                        optimisation=optimisation, patch_px=64, val_overlap_px=8, val_batch_size=2))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="geoseg.train"):
        result = train(spec, workers=2)
    assert caplog.text.count("dense warm-up of the backbone: 10 steps") == 1
    assert [h["epoch"] for h in result.history] == [1] and result.history[0]["workers"] == 2
    assert torch.load(result.last_checkpoint, weights_only=True)["extra"]["epoch"] == 1
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--workers", "0"], "invalid positive int value: '0'"),
        (["--workers", "2", "--address", "127.0.0.1:1"], "--address 127.0.0.1:1: nothing answers there"),
        (["--workers", "64"], "--workers 64 with threads 2 needs 128 CPUs, and this machine's Ray has"),
        (["--address", "127.0.0.1:1"], "a cluster is used only to train with several workers; add --workers N with N >= 2"),
    ],
)
def test_bad_worker_flags_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    _, lakes, _ = write_scene(tmp_path)
    spec = tmp_path / "train.yaml"
    spec.write_text(json.dumps(raster_spec(tmp_path, lakes)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "geoseg", "train", str(spec), *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_an_interrupted_training_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import geoseg.train  # noqa: PLC0415
    from geoseg.cli import main  # noqa: PLC0415

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(geoseg.train, "train", interrupted)
    _, lakes, _ = write_scene(tmp_path)
    spec = tmp_path / "train.yaml"
    spec.write_text(json.dumps(raster_spec(tmp_path, lakes)))
    assert main(["train", str(spec)]) == 130
    err = capsys.readouterr().err
    last = tmp_path / "run" / "last.pt"
    assert f"before the first checkpoint (no {last} yet); rerun the same command to start over" in err, err
    last.parent.mkdir()
    last.write_bytes(b"")  # a run that saved something
    assert main(["train", str(spec)]) == 130
    err = capsys.readouterr().err
    assert f"is in {last}: set resume: true in {spec} and rerun the same command to continue" in err, err
    assert "inputs that finished" not in err
    spec.write_text(json.dumps({**raster_spec(tmp_path, lakes), "resume": True}))
    assert main(["train", str(spec)]) == 130
    assert f"is in {last}: rerun the same command to continue" in capsys.readouterr().err
