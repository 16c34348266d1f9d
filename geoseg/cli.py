"""The ``geoseg`` command: parse, call the library, print. Library errors become one line here."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg import __version__
from geoseg._remote import is_url
from geoseg.errors import GeosegError, SpecError

__all__ = ["main"]


def _run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="segment images into a Zarr store",
        description="Run a job from a YAML spec, or from flags: "
        "geoseg run --input A.tif --input B.tif --model ndwi --output out.zarr",
    )
    p.add_argument("spec", nargs="?", type=Path, help="YAML job spec (flags below override its fields)")
    p.add_argument(
        "--input", "-i", action="append", dest="inputs", metavar="PATH",
        help="input image or s3:// URL (repeatable; globs ok)",
    )  # fmt: skip
    p.add_argument("--output", "-o", metavar="STORE", help="output Zarr store (a folder or s3://BUCKET/PREFIX)")
    p.add_argument("--model", "-m", metavar="NAME", help="registered model name, e.g. ndwi (see: geoseg models)")
    p.add_argument("--checkpoint", metavar="PATH", help="weights file (torch, loaded with weights_only=True)")
    p.add_argument("--card", metavar="PATH", help="model card YAML for a bare checkpoint or a model file")
    p.add_argument("--model-file", metavar="PATH", help="TorchScript (.pt) or torch.export (.pt2) model file")
    p.add_argument(
        "--workers", type=int, metavar="N", help="model actors (default: --actors-per-gpu per GPU, else one per node)"
    )
    p.add_argument("--actors-per-gpu", type=int, metavar="N", help="model actors sharing each GPU (default 1)")
    p.add_argument(
        "--cpus-per-worker", type=float, metavar="N",
        help="CPUs each model actor reserves (default 1, less where the machine or cluster has fewer)",
    )  # fmt: skip
    p.add_argument("--retries", type=int, metavar="N", help="attempts after the first for a failed block (default 2)")
    p.add_argument("--block-size", type=int, dest="block_px", metavar="PX", help="block edge in pixels (default 4x4 chunks)")
    p.add_argument("--stitch", choices=["crop", "gaussian"], help="how patches are merged (default crop)")
    p.add_argument("--overlap", type=int, dest="overlap_px", metavar="PX", help="patch overlap in pixels (default: model card's)")
    p.add_argument("--patch-size", type=int, dest="patch_px", metavar="PX", help="patch edge (default: model card's)")
    p.add_argument("--batch-size", type=int, metavar="N", help="patches per forward pass (default 16)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where models run (default auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], help="GPU autocast (default auto)")
    p.add_argument(
        "--instances", choices=["none", "components"],
        help="components: an instance_id array and an objects table, one id per connected object (default none)",
    )  # fmt: skip
    p.add_argument(
        "--instance-classes", metavar="NAMES",
        help="comma-separated classes whose objects get ids (default: every class but the first)",
    )  # fmt: skip
    p.add_argument("--probs", action="store_true", default=None, dest="write_probs", help="also write class probabilities")
    p.add_argument(
        "--overwrite", action="store_true", default=None,
        help="recompute every input from scratch, replacing its existing group (also one of another job)",
    )  # fmt: skip
    p.add_argument("--on-error", choices=["skip", "fail"], help="a bad input: report and go on (skip) or stop (fail)")
    p.add_argument(
        "--address", dest="ray_address", metavar="ADDR",
        help="Ray cluster to join (default: RAY_ADDRESS, else a private local Ray)",
    )  # fmt: skip
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="model parameter, e.g. threshold=0.1")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=None, help="no progress bar")


def _location(text: str) -> Path | str:
    """argparse type: an object URL (``s3://...``) as written, anything else a local Path."""
    return text.rstrip("/") if is_url(text) else Path(text)


_location.__name__ = "path or URL"


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the ValueError into its one-line error)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive_int.__name__ = "positive int"  # argparse names the type in "invalid positive int value: '0'"


def _metres(text: str) -> float:
    """argparse type: a finite distance in metres >= 0."""
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError(text)
    return value


_metres.__name__ = "distance in metres (>= 0)"


def _run_data(args: argparse.Namespace) -> tuple[dict[str, Any], str, Path | None]:
    """The job spec as a mapping: the YAML file's fields, then the flags over them.

    Returns ``(data, source, base)``: relative paths are relative to the spec file's folder
    (flags are resolved first, against the working directory).
    """
    from geoseg.spec import read_yaml  # noqa: PLC0415

    flat = {
        k: getattr(args, k)
        for k in ("output", "workers", "cpus_per_worker", "block_px", "stitch", "batch_size", "device", "precision",
                  "write_probs", "overwrite", "on_error", "ray_address", "progress", "retries", "instances", "actors_per_gpu")
        if getattr(args, k) is not None
    }  # fmt: skip
    if args.inputs:
        flat["inputs"] = [str(_location(p)) if is_url(p) else os.path.abspath(p) for p in args.inputs]
    if "output" in flat and not is_url(flat["output"]):
        flat["output"] = os.path.abspath(flat["output"])
    if args.instance_classes is not None:
        flat["instance_classes"] = [c.strip() for c in args.instance_classes.split(",") if c.strip()]
    tiling = {k: getattr(args, k) for k in ("patch_px", "overlap_px") if getattr(args, k) is not None}
    model: dict[str, Any] = {}
    for key, attr in (("name", "model"), ("checkpoint", "checkpoint"), ("card", "card"), ("file", "model_file")):
        if getattr(args, attr) is not None:
            value = getattr(args, attr)
            model[key] = value if key == "name" else os.path.abspath(value)
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--param {item!r}: expected KEY=VALUE, e.g. --param threshold=0.1")
        import yaml  # noqa: PLC0415

        try:
            params[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SpecError(f"--param {item!r}: {value!r} is not a value; e.g. --param threshold=0.1") from None
    if args.spec is not None:
        data = read_yaml(args.spec, "spec")
        if not isinstance(data, dict):
            raise SpecError(f"{args.spec}: expected a mapping of fields, got {type(data).__name__}; see docs/spec.md")
        data = {**data, **flat}
        if tiling:
            data["tiling"] = {**(data.get("tiling") or {}), **tiling}
        if model or params:
            section = dict(data.get("model") or {})
            if model:  # a model named on the command line replaces the spec's model
                section = {k: v for k, v in section.items() if k == "params"} | model
            if params:
                section["params"] = {**(section.get("params") or {}), **params}
            data["model"] = section
        return data, str(args.spec), args.spec.resolve().parent
    missing = [f for f, ok in (("--input", args.inputs), ("--output", args.output), ("--model", model)) if not ok]
    if missing:
        raise SpecError(f"run needs a spec file or {', '.join(missing)}; see geoseg run --help")
    if params:
        model["params"] = params
    return {**flat, "tiling": tiling, "model": model}, "command line", None


def _cmd_run(args: argparse.Namespace) -> int:
    from geoseg.spec import parse_spec  # noqa: PLC0415  (pydantic only: a bad spec fails before Ray or torch)

    data, source, base = _run_data(args)
    spec = parse_spec(data, source=source, base=base)
    from geoseg.pipeline import run_job  # noqa: PLC0415  (keep --help and spec errors fast: no Ray import)

    report = run_job(spec)
    print(report.summary())
    for scene in report.scenes:
        if scene.status != "complete":
            error = scene.error if scene.path in scene.error else f"{scene.path}: {scene.error}"
            print(f"geoseg: error: {error}", file=sys.stderr)
    if report.ok:
        print(f"output: {spec.output if isinstance(spec.output, str) else os.path.normpath(os.path.abspath(spec.output))}")
        return 0
    return 1


_SUFFIX_FORMATS = {
    ".gpkg": ("gpkg",), ".parquet": ("geoparquet", "table"), ".geoparquet": ("geoparquet",),
    ".geojson": ("geojson",), ".json": ("geojson",), ".csv": ("csv", "table"), ".tif": ("cog",),
    ".tiff": ("cog",), ".nii": ("nifti",), ".gz": ("nifti",),
}  # fmt: skip
"""What an ``--out`` suffix promises: a file named ``x.gpkg`` must be a GeoPackage."""


def _check_out_suffix(out: str, fmt: str) -> None:
    suffix = os.path.splitext(out.rstrip("/"))[1].lower()
    if fmt == "table" and suffix not in (".csv", ".parquet"):
        stem = os.path.splitext(os.path.basename(out.rstrip("/")))[0] or "table"
        raise SpecError(
            f"--out {out}: --format table writes CSV or Parquet, chosen by the suffix; name it {stem}.csv or {stem}.parquet"
        )
    allowed = _SUFFIX_FORMATS.get(suffix)
    if allowed and fmt not in allowed:
        raise SpecError(
            f"--out {out} is named as {' or '.join(allowed)}, but --format is {fmt}; "
            f"pass --format {allowed[0]} or name the file for {fmt}"
        )


def _cmd_export(args: argparse.Namespace) -> int:
    from geoseg.sinks import export_cog, export_nifti, export_table, export_vectors  # noqa: PLC0415

    vector = args.format in ("geoparquet", "geojson", "gpkg", "csv")
    if not vector and (args.geometry, args.classes, args.simplify) != ("polygons", None, 0.0):
        raise SpecError(
            f"--geometry, --class and --simplify are for vector formats (gpkg, geoparquet, geojson, csv), not {args.format}"
        )
    if vector and args.array is not None:
        raise SpecError(
            f"--array {args.array} is for --format cog, nifti or table; vector formats ({args.format}) take the "
            "objects of an instance run and the mask otherwise: drop --array"
        )
    if args.array is not None and not re.fullmatch(r"[A-Za-z0-9_]+", args.array):
        raise SpecError(
            f"--array {args.array!r} is not an array or table name: use mask, probs, lesion_id or instance_id "
            "(cog, nifti), or lesions / objects (table)"
        )
    _check_out_suffix(str(args.out), args.format)
    if vector:
        totals = export_vectors(
            args.store, args.name, args.out, args.format, args.geometry, args.classes, args.simplify
        )
        print(totals.line())
        out = args.out
    elif args.format == "cog":
        out = export_cog(args.store, args.name, args.out, array=args.array or "mask")
    elif args.format == "nifti":
        out = export_nifti(args.store, args.name, args.out, array=args.array or "mask")
    else:
        out = export_table(args.store, args.name, args.array, args.out)
    print(f"wrote {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    from geoseg.evaluate import evaluate_store  # noqa: PLC0415

    label_map = None
    if args.label_map in ("none", ""):
        label_map = None
    elif args.label_map == "brats":
        from geoseg.train import BRATS_LABEL_MAP  # noqa: PLC0415

        label_map = dict(BRATS_LABEL_MAP)
    else:
        try:
            label_map = {int(k): int(v) for k, v in yaml.safe_load(args.label_map).items()}
        except (AttributeError, TypeError, ValueError, yaml.YAMLError):
            raise SpecError(
                f"--label-map {args.label_map!r}: expected 'brats', 'none' or a mapping like '{{0: 0, 2: 1, 1: 2}}'"
            ) from None
    scores = evaluate_store(str(args.store), args.truth, label_map, args.name or None)
    if not scores:
        raise SpecError(f"{args.store}: holds no complete MRI case to evaluate")
    print("| case | whole tumour | tumour core | enhancing | lesions found | missed | false pos. |")
    print("|---|---|---|---|---|---|---|")
    for s in scores:
        d, n = s.dice, s.lesions
        print(f"| {s.name} | {d['whole_tumour']:.4f} | {d['tumour_core']:.4f} | {d['enhancing']:.4f} | "
              f"{n.detected} | {n.missed} | {n.false_positive} |")  # fmt: skip
    if len(scores) > 1:
        mean = {k: sum(s.dice[k] for s in scores) / len(scores) for k in scores[0].dice}
        print(f"| mean | {mean['whole_tumour']:.4f} | {mean['tumour_core']:.4f} | {mean['enhancing']:.4f} | | | |")
    if args.json:
        args.json.write_text(json.dumps([{"case": s.name, "truth": s.truth, "dice": s.dice,
                                          "lesions": vars(s.lesions)} for s in scores], indent=2))  # fmt: skip
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from geoseg.train import load_train_spec, train  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    spec = load_train_spec(args.spec)
    workers = args.workers if args.workers is not None else spec.optimisation.workers
    if args.ray_address and workers < 2:
        raise SpecError(
            f"--address {args.ray_address}: a cluster is used only to train with several workers; add --workers N with N >= 2"
        )
    result = train(spec, workers=workers, address=args.ray_address)
    what = {"mean_dice": "mean validation Dice", "iou": "validation IoU", "f1": "validation object F1@0.5"}
    print(f"best epoch {result.best_epoch} of {result.epochs}: {what.get(result.metric, result.metric)} {result.best_score:.4f}")
    print(f"checkpoints: {result.best_checkpoint} (best), {result.last_checkpoint} (last)")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import yaml  # noqa: PLC0415

    from geoseg.models import list_models, model_card  # noqa: PLC0415

    if args.name:
        print(yaml.safe_dump(model_card(args.name).to_dict(), sort_keys=False).rstrip())
        return 0
    for name in list_models():
        card = model_card(name)
        first = card.description.strip().splitlines()[0] if card.description.strip() else ""
        print(f"{name:32s} {first}")
    return 0


def _cmd_quicklook(args: argparse.Namespace) -> int:
    from geoseg.quicklook import quicklook  # noqa: PLC0415

    print(f"wrote {quicklook(args.store, args.name, args.out, max_px=args.max_px, layer=args.array)}")
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from geoseg.submit import submit  # noqa: PLC0415

    own, sep, run_args = _split_at(args.run_args, "--")
    extra = argparse.ArgumentParser(prog="geoseg submit", add_help=False, exit_on_error=False)
    extra.add_argument("--address")
    try:
        late, unknown = extra.parse_known_args(own)
    except argparse.ArgumentError as e:
        raise SpecError(f"submit: {e}; see geoseg submit --help") from None
    if unknown:
        raise SpecError(f"submit: {' '.join(unknown)}: flags for geoseg run go after --, e.g. -- --workers 2")
    return submit(args.spec, late.address or args.address, run_args)


def _split_at(items: Sequence[str], sep: str) -> tuple[list[str], bool, list[str]]:
    if sep in items:
        k = list(items).index(sep)
        return list(items[:k]), True, list(items[k + 1 :])
    return list(items), False, []


def _cmd_example(args: argparse.Namespace) -> int:
    from geoseg.example import write_example  # noqa: PLC0415

    job = write_example(args.folder)
    print(f"wrote {job.parent / 'scene.tif'} and {job}\nnext: geoseg run {job}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad flag or value reported on one line (not the whole usage)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="geoseg", description="Distributed batch segmentation of satellite scenes and MRI volumes on Ray."
    )
    parser.add_argument("--version", action="version", version=f"geoseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _run_parser(sub)
    e = sub.add_parser("export", help="export a scene group to another format", description="Export a finished scene to a file.")
    e.add_argument("store", type=_location, help="Zarr store written by geoseg run (a folder or s3:// URL)")
    e.add_argument("--name", required=True, help="scene group name (the input's file stem)")
    e.add_argument(
        "--format", default="cog", choices=["cog", "nifti", "table", "gpkg", "geoparquet", "geojson", "csv"],
        help="cog: a raster scene as Cloud-Optimised GeoTIFF; nifti: an MRI case on its input grid; "
        "table: a table (lesions, objects) as .csv or .parquet (by --out's suffix); gpkg, geoparquet, geojson, csv: "
        "a scene's vectors, merged across blocks, with per-scene totals (csv: without geometry)",
    )  # fmt: skip
    e.add_argument(
        "--geometry", default="polygons", choices=["polygons", "lines"],
        help="vector formats: polygons (water, objects; holes kept) or lines (centre lines of roads); default polygons",
    )  # fmt: skip
    e.add_argument(
        "--class", dest="classes", action="append", metavar="NAME",
        help="vector formats: the class to export (repeatable); default every class but the first",
    )  # fmt: skip
    e.add_argument(
        "--simplify", type=_metres, default=0.0, metavar="METRES",
        help="vector formats: simplify each geometry with this tolerance in metres (topology kept); default 0, none",
    )  # fmt: skip
    e.add_argument(
        "--array",
        help="cog, nifti: which array: mask (default), probs, lesion_id, instance_id; table: the table name "
        "(default the group's only one: lesions or objects)",
    )
    e.add_argument("--out", required=True, type=_location, help="output file or s3:// URL")
    m = sub.add_parser("models", help="list models, or show one model card", description="List registered models.")
    m.add_argument("name", nargs="?", help="show this model's card")
    t = sub.add_parser("train", help="train a segmentation model from a YAML spec", description="Train a model (resumable).")
    t.add_argument("spec", type=Path, help="training spec, e.g. jobs/train_mri_tumour.yaml")
    t.add_argument(
        "--workers", type=_positive_int, metavar="N",
        help="train data-parallel with N Ray Train workers (one per GPU, else one CPU process each); "
        "default optimisation.workers of the spec, 1 = one process without Ray",
    )  # fmt: skip
    t.add_argument(
        "--address", dest="ray_address", metavar="ADDR",
        help="with --workers: the Ray cluster to join (HOST:PORT, or auto); default RAY_ADDRESS, else a private local Ray",
    )  # fmt: skip
    v = sub.add_parser(
        "evaluate", help="score MRI masks in a store against ground truth (Dice, lesions)",
        description="Dice of whole tumour, tumour core and enhancing tumour, and lesion-wise counts, "
        "for every complete case of STORE against the truth file beside the case's inputs.",
    )  # fmt: skip
    v.add_argument("store", type=Path, help="Zarr store written by geoseg run")
    v.add_argument(
        "--truth", default="*OTMultiClass*", help="glob of the truth file in each case folder (default *OTMultiClass*)"
    )
    v.add_argument(
        "--label-map", default="brats", help="'brats' (default), 'none', or YAML like '{0: 0, 2: 1, 1: 2, 3: 2, 4: 3}'"
    )
    v.add_argument("--name", action="append", help="only this case (repeatable)")
    v.add_argument("--json", type=Path, help="also write the scores as JSON here")
    q = sub.add_parser(
        "quicklook", help="a PNG of an output over its input, to check it by eye",
        description="A picture of one output: a scene's mask over its input at reduced resolution (RGB where the "
        "bands say so), or an MRI case's slices through its largest lesion in three planes, with a legend.",
    )  # fmt: skip
    q.add_argument("store", type=_location, help="Zarr store written by geoseg run (a folder or s3:// URL)")
    q.add_argument("--name", required=True, help="group name (the input's file stem or case folder)")
    q.add_argument("--out", required=True, type=Path, help="the picture, a .png file")
    q.add_argument(
        "--max-px", type=_positive_int, default=1024, metavar="PX", help="a scene's longer side in the picture (default 1024)"
    )
    q.add_argument(
        "--array", default="mask", choices=["mask", "instance_id"],
        help="a scene's mask in class colours (default), or instance_id, a colour per object",
    )  # fmt: skip
    j = sub.add_parser(
        "submit", help="submit a job spec to a Ray cluster (ray job submit)",
        description="Submit `geoseg run SPEC` to a Ray cluster with Ray Jobs. Only the spec travels, its "
        "paths made absolute; a remote cluster needs absolute paths every node can read and write.",
    )  # fmt: skip
    j.add_argument("spec", type=Path, help="YAML job spec")
    j.add_argument("--address", help="the cluster's Ray Jobs address, http://HEAD:8265 (default: RAY_ADDRESS)")
    j.add_argument("run_args", nargs=argparse.REMAINDER, help="flags passed on to geoseg run, after --")
    x = sub.add_parser(
        "example", help="write a generated example scene and job spec", description="Write scene.tif and job.yaml."
    )
    x.add_argument("folder", type=Path, nargs="?", default=Path("example"), help="where (default ./example)")
    return parser


_COMMANDS = {
    "run": _cmd_run,
    "export": _cmd_export,
    "models": _cmd_models,
    "example": _cmd_example,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "submit": _cmd_submit,
    "quicklook": _cmd_quicklook,
}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception the run cleans up after, like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _train_interrupted(spec: Path, what: str) -> str:
    """The line for a training run stopped by a signal: where its last checkpoint is, and how to go on."""
    from geoseg.train import load_train_spec  # noqa: PLC0415

    try:
        parsed = load_train_spec(spec)
    except GeosegError:
        return f"geoseg: {what}; rerun the same command"
    last = parsed.output / "last.pt"
    if not last.is_file():
        return f"geoseg: {what} before the first checkpoint (no {last} yet); rerun the same command to start over"
    how = "rerun the same command" if parsed.resume else f"set resume: true in {spec} and rerun the same command"
    return f"geoseg: {what}; the run so far (finished epochs, or the dense warm-up) is in {last}: {how} to continue"


class _NoteHandler(logging.Handler):
    """geoseg's notes (a value it changed, workers sharing cores) as ``geoseg: note: ...`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"geoseg: note: {record.getMessage()}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log = logging.getLogger("geoseg")
    handler = _NoteHandler(logging.INFO)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        return _COMMANDS[args.command](args)
    except GeosegError as e:
        if args.debug or os.environ.get("GEOSEG_DEBUG"):
            raise
        print(f"geoseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, _Terminated) else "interrupted"
        if args.command == "train":
            print(_train_interrupted(args.spec, what), file=sys.stderr)
        else:
            print(f"geoseg: {what}; inputs that finished are complete, rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    finally:
        log.removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
