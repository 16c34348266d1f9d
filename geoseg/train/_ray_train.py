"""Data-parallel training on Ray Train: ``geoseg train --workers N``.

:class:`ray.train.torch.TorchTrainer` starts ``N`` workers (one per GPU where the cluster has
them, else one CPU process each), wires them into a PyTorch process group and wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` (:func:`ray.train.torch.prepare_model`).
Each worker runs the same epochs as a one-process run (:func:`geoseg.train._loop.run_epochs`)
on its own random crops; DDP averages the gradients, so a step sees ``N * batch_size`` crops.

Nothing needs a shared disk (DESIGN: the nodes share none):

- the training job (scene or cases, already read and checked by the driver, so a bad input is
  one line before any worker starts) travels to the workers through Ray's object store;
- rank 0 validates and writes ``last.pt``, ``best.pt`` and ``history.json`` into a scratch
  folder on its node, then hands their bytes to a small actor pinned to the driver's node,
  which writes them atomically into ``output``;
- when Ray Train restarts the worker group after a failure (``FailureConfig(max_failures=2)``),
  the workers resume from the last epoch that actor holds; a rerun with ``resume: true``
  resumes from ``output/last.pt`` as a one-process run does.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from geoseg._faults import inject
from geoseg.errors import SpecError, TrainingError, first_line

from ._loop import TrainResult, _job, result_of, resume_state, run_epochs
from ._spec import TrainSpec

__all__ = ["MAX_FAILURES", "train_on_ray"]

log = logging.getLogger("geoseg.train")

MAX_FAILURES = 2
"""Worker-group failures Ray Train recovers from (restarting at the last finished epoch)."""

_FILES = ("last.pt", "best.pt", "history.json")


@ray.remote(num_cpus=0)
class _CheckpointWriter:
    """Lives on the driver's node; writes the files rank 0 sends into the run's output folder."""

    def __init__(self, output: str, resumable: bool) -> None:
        self.output = Path(output)
        self.output.mkdir(parents=True, exist_ok=True)
        self.resumable = resumable  # output/last.pt may be resumed from (resume: true)
        self.notes: list[str] = []

    def write(self, files: dict[str, bytes], note: str) -> None:
        for name in ("best.pt", "last.pt", "history.json"):  # as run_epochs writes them: a kill in
            if name in files:  # between leaves the older last.pt, whose best entry is still on disk
                tmp = self.output / f".{name}.tmp"
                tmp.write_bytes(files[name])
                os.replace(tmp, self.output / name)
        self.resumable = True
        self.notes.append(note)

    def notes_since(self, n: int) -> list[str]:
        """The epoch lines after the first ``n``, for the driver to print."""
        return self.notes[n:]

    def resume_from(self) -> dict[str, bytes]:
        """The run's files when it may continue from them (resume asked, or written by this
        run), else none."""
        if not self.resumable:
            return {}
        return {name: (self.output / name).read_bytes() for name in _FILES if (self.output / name).exists()}


class _RaySink:
    """A Ray Train worker: rank and world from the train context; rank 0 publishes each epoch."""

    def __init__(self, writer: Any, folder: Path, find_unused: bool) -> None:
        import ray.train  # noqa: PLC0415

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.writer, self.folder, self.find_unused = writer, folder, find_unused
        self._sent: dict[str, int] = {}

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        import ray.train.torch  # noqa: PLC0415

        # Mask R-CNN leaves heads without gradient on a batch with no object; DDP must allow it.
        kwargs = {"find_unused_parameters": True} if self.find_unused else {}
        return ray.train.torch.prepare_model(model, move_to_device=device, parallel_strategy_kwargs=kwargs)

    def epoch_done(self, epoch: int, metrics: dict[str, float], note: str) -> None:
        import ray.train  # noqa: PLC0415

        if self.rank == 0:
            files = {}
            for name in _FILES:
                path = self.folder / name
                if path.exists() and self._sent.get(name) != path.stat().st_mtime_ns:
                    files[name] = path.read_bytes()
                    self._sent[name] = path.stat().st_mtime_ns
            ray.get(self.writer.write.remote(files, note))
        inject("train", f"epoch {epoch} rank {self.rank}")  # tests only (GEOSEG_TEST_FAULTS)
        ray.train.report({"epoch": epoch, **metrics})  # every rank: Ray Train's step barrier


def _worker_loop(config: dict[str, Any]) -> None:
    """The function each Ray Train worker runs."""
    import ray.train  # noqa: PLC0415
    import ray.train.torch  # noqa: PLC0415

    spec: TrainSpec = config["spec"]
    job = ray.get(config["job"])
    writer = config["writer"]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device() if config["use_gpu"] else torch.device("cpu")
    files = ray.get(writer.resume_from.remote())
    saved = resume_state(files["last.pt"], spec, spec.output / "last.pt") if "last.pt" in files else None
    folder = Path(tempfile.mkdtemp(prefix="geoseg-train-"))
    try:
        if rank == 0:  # best.pt may be older than last.pt: keep it beside, as in the output folder
            for name, blob in files.items():
                (folder / name).write_bytes(blob)
        sink = _RaySink(writer, folder, find_unused=spec.model.resolved_task == "instance")
        run_epochs(spec, job, sink, saved, device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _use_gpu(spec: TrainSpec, workers: int) -> bool:
    choice = spec.optimisation.device
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if choice == "cuda" and gpus < workers:
        raise SpecError(
            f"optimisation.device is cuda with {workers} workers, but the Ray cluster has {gpus:g} GPUs; "
            "use fewer --workers or device: cpu"
        )
    return choice == "cuda" or (choice == "auto" and gpus >= workers)


def _check_cpus(workers: int, threads: int, use_gpu: bool, private: bool) -> None:
    """A private local Ray with fewer CPUs than the workers need would wait for ever: refuse it.
    A cluster may grow (autoscaling): say what it has now and let Ray Train wait."""
    if use_gpu:
        return
    have = float(ray.cluster_resources().get("CPU", 0))
    need = workers * threads
    if need <= have:
        return
    if private:
        raise SpecError(
            f"--workers {workers} with threads {threads} needs {need} CPUs, and this machine's Ray has {have:g}; "
            f"use --workers {max(1, int(have) // threads)} or fewer, or join a cluster with --address"
        )
    log.warning("the cluster has %g CPUs now and %d workers need %d; Ray Train waits for more", have, workers, need)


def train_on_ray(spec: TrainSpec, workers: int, address: str | None, saved: dict[str, Any] | None) -> TrainResult:
    """Train ``spec`` with ``workers`` Ray Train workers; see the module docstring.

    ``saved`` is the checked ``output/last.pt`` of a run to resume (``resume: true``), or None.

    Raises:
        RayConnectError: Ray cannot be started or joined (one line).
        SpecError: device cuda with fewer GPUs in the cluster than workers.
        TrainingError: the workers failed more than :data:`MAX_FAILURES` times; the line names
            the first worker error.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    from geoseg.pipeline import connect  # noqa: PLC0415

    job = _job(spec)  # reads and checks the inputs here: a bad one is a line before Ray starts
    started = connect(_Address(address), log_to_driver=False)
    try:
        use_gpu = _use_gpu(spec, workers)
        private = started and not (address or os.environ.get("RAY_ADDRESS"))
        _check_cpus(workers, spec.optimisation.threads or 1, use_gpu, private)
        here = ray.get_runtime_context().get_node_id()
        writer = _CheckpointWriter.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
        ).remote(str(spec.output.resolve()), saved is not None)
        threads = spec.optimisation.threads or 1
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"spec": spec, "job": ray.put(job), "writer": writer, "use_gpu": use_gpu},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker=None if use_gpu else {"CPU": threads}
            ),
            run_config=RunConfig(
                name=f"geoseg-train-{spec.model.name}",
                storage_path=str(Path(tempfile.gettempdir()) / "geoseg-ray-train"),
                failure_config=FailureConfig(max_failures=MAX_FAILURES),
            ),
        )
        log.info("training on Ray Train: %d workers (%s)", workers, "GPU" if use_gpu else f"{threads} CPU thread(s) each")
        error = _fit_printing_epochs(trainer, writer)
        if error is not None:
            raise TrainingError(
                f"training with {workers} Ray Train workers failed (after up to {MAX_FAILURES} restarts): "
                f"{_worker_error(error)}; rerun with resume: true to continue from {spec.output / 'last.pt'}"
            )
    finally:
        if started:
            ray.shutdown()
    state = torch.load(spec.output / "last.pt", map_location="cpu", weights_only=True)["extra"]["train_state"]
    return result_of(spec.output, job.metric, list(state["history"]), dict(state["best"]))


def _fit_printing_epochs(trainer: Any, writer: Any) -> BaseException | None:
    """``trainer.fit()`` in a thread while this one logs each epoch's line as rank 0 finishes
    it (the workers' own output is kept off the terminal); the error fit raised, if any."""
    outcome: list[BaseException | None] = []

    def fit() -> None:
        try:
            trainer.fit()
            outcome.append(None)
        except Exception as e:  # Ray Train wraps the worker's error (TrainingFailedError and kin)
            outcome.append(e)

    thread = threading.Thread(target=fit, name="geoseg-ray-train", daemon=True)
    thread.start()
    printed = 0
    while True:
        thread.join(timeout=1.0)
        for note in ray.get(writer.notes_since.remote(printed)):
            log.info("%s", note)
            printed += 1
        if not thread.is_alive():
            return outcome[0] if outcome else None


class _Address:
    """What :func:`geoseg.pipeline.connect` reads of a job spec: the cluster address."""

    def __init__(self, address: str | None) -> None:
        self.ray_address = address


def _worker_error(error: BaseException) -> str:
    """The first line of the innermost error a worker raised."""
    seen = error
    for attr in ("worker_failures", "error"):
        inner = getattr(seen, attr, None)
        if isinstance(inner, dict) and inner:
            seen = next(iter(inner.values()))
        elif isinstance(inner, BaseException):
            seen = inner
    while seen.__cause__ is not None:
        seen = seen.__cause__
    return first_line(seen)
