"""Compare training recipes for the mri-tumour model: one subprocess per variant, in parallel.

Each variant is the spec jobs/train_mri_tumour.yaml as it was before the sweep (``OLD_RECIPE``
puts back the fields the sweep changed) with some fields overridden; every run
writes its history.json, and this script prints, per variant, the best epoch's Dice and the
mean Dice of the last five epochs (less sensitive to the luck of one epoch).

    python docs/scripts/train_recipes.py --data ../shared/data/brats2015 --out /tmp/recipes \\
        --epochs 30 --device cuda --threads 2

It was run once on a lent H100 to choose the recipe (docs/mri.md); the packaged model itself is
trained on the CPU with the chosen spec.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "jobs" / "train_mri_tumour.yaml"
REGIONS = [[1, 2, 3], [2, 3], [3]]

OLD_RECIPE: dict = {  # jobs/train_mri_tumour.yaml before the sweep: the "base" every variant starts from
    "augmentation": {"intensity_scale": 0.1, "intensity_shift": 0.1},
    "optimisation": {"tumour_fraction": 0.67, "class_weights": None, "dice_regions": None, "ema": None},
}


def intensity(scale: float, shift: float) -> dict:
    return {"intensity_scale": scale, "intensity_shift": shift}


BALANCED = {"dice_regions": REGIONS, "class_weights": {1: 1, 2: 1, 3: 1}}  # region Dice, classes 1:1:1
BALANCED_EMA = {**BALANCED, "ema": 0.99}
CORE2 = {"dice_regions": REGIONS, "class_weights": {1: 1, 2: 2, 3: 1}, "ema": 0.99, "tumour_fraction": 0.8}
STRONG, INT40, INT60 = intensity(0.25, 0.25), intensity(0.4, 0.4), intensity(0.6, 0.6)

VARIANTS: dict[str, dict] = {
    # sweep 1: from the old recipe towards region Dice, class balance, intensity, EMA
    "base": {},
    "regions": {"optimisation": {"dice_regions": REGIONS}},
    "regions_balanced": {"optimisation": BALANCED},
    "rb_intensity": {"optimisation": BALANCED, "augmentation": STRONG},
    "rbi_ema": {"optimisation": BALANCED_EMA, "augmentation": STRONG},
    "rbi_ema_context1": {
        "optimisation": BALANCED_EMA,
        "augmentation": STRONG,
        "model": {"context_slices": 1},
    },
    "rbi_ema_crop192": {"optimisation": {**BALANCED_EMA, "crop_px": 192}, "augmentation": STRONG},
    "rbi_ema_core2": {"optimisation": CORE2, "augmentation": STRONG},
    # sweep 2: around core weight 2
    "core2_seed1": {"optimisation": CORE2, "augmentation": STRONG, "seed": 1},
    "core4": {"optimisation": {**CORE2, "class_weights": {1: 1, 2: 4, 3: 1}}, "augmentation": STRONG},
    "core2_ce3": {"optimisation": {**CORE2, "ce_weights": [1, 1, 3, 1]}, "augmentation": STRONG},
    "core2_context1": {"optimisation": CORE2, "augmentation": STRONG, "model": {"context_slices": 1}},
    "core2_base24": {"optimisation": CORE2, "augmentation": STRONG, "model": {"base_channels": 24}},
    "core2_int40": {"optimisation": CORE2, "augmentation": INT40},
    "core2_lr1e3": {"optimisation": {**CORE2, "lr": 0.001}, "augmentation": STRONG},
    "core2_ce3_context1": {
        "optimisation": {**CORE2, "ce_weights": [1, 1, 3, 1]},
        "augmentation": STRONG,
        "model": {"context_slices": 1},
    },
    # sweep 3: intensity augmentation, two seeds each
    "core2_int40_seed1": {"optimisation": CORE2, "augmentation": INT40, "seed": 1},
    "core2_int60": {"optimisation": CORE2, "augmentation": INT60},
    "core2_int60_seed1": {"optimisation": CORE2, "augmentation": INT60, "seed": 1},
    "core2_int80": {"optimisation": CORE2, "augmentation": intensity(0.8, 0.8)},
    "core2_int80_seed1": {"optimisation": CORE2, "augmentation": intensity(0.8, 0.8), "seed": 1},
    "core2_int50s100": {"optimisation": CORE2, "augmentation": intensity(0.5, 1.0)},
    "core2_int50s100_seed1": {"optimisation": CORE2, "augmentation": intensity(0.5, 1.0), "seed": 1},
    "core2_int60_lr1e3": {"optimisation": {**CORE2, "lr": 0.001}, "augmentation": INT60},
    "core2_int60_context1": {"optimisation": CORE2, "augmentation": INT60, "model": {"context_slices": 1}},
    # sweep 4: around core2_int40
    "core2_int40_seed2": {"optimisation": CORE2, "augmentation": INT40, "seed": 2},
    "int40_norot90": {"optimisation": CORE2, "augmentation": {**INT40, "rot90_prob": 0.0}},
    "int40_norot90_noelastic": {
        "optimisation": CORE2,
        "augmentation": {**INT40, "rot90_prob": 0.0, "elastic_px": 0.0},
    },
    "int40_depth5_base12": {
        "optimisation": CORE2,
        "augmentation": INT40,
        "model": {"depth": 5, "base_channels": 12},
    },
    "int40_tf90": {"optimisation": {**CORE2, "tumour_fraction": 0.9}, "augmentation": INT40},
    "int40_crop160": {"optimisation": {**CORE2, "crop_px": 160}, "augmentation": INT40},
    "int40_2048x15": {
        "optimisation": {**CORE2, "samples_per_epoch": 2048},
        "augmentation": INT40,
        "epochs_factor": 0.5,
    },
    "int40_ema995": {"optimisation": {**CORE2, "ema": 0.995}, "augmentation": INT40},
}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def summarise(out: Path, names: list[str]) -> dict:
    rows = {}
    for name in names:
        hist_path = out / name / "history.json"
        if not hist_path.exists():
            continue
        hist = json.loads(hist_path.read_text())
        best = max(hist, key=lambda e: e["mean_dice"])
        last = hist[-5:]
        rows[name] = {
            "epochs_done": len(hist),
            "best_epoch": best["epoch"],
            "best": {k: round(v, 4) for c in best["dice"].values() for k, v in c.items()},
            "best_mean": round(best["mean_dice"], 4),
            "last5_mean": round(sum(e["mean_dice"] for e in last) / len(last), 4),
            "sec_per_epoch": round(sum(e["seconds"] for e in hist) / len(hist), 1),
            "history": [
                {"epoch": e["epoch"], **{k: round(v, 4) for c in e["dice"].values() for k, v in c.items()}}
                for e in hist
            ],
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of the brats_2013_pat000N_1 cases")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="variant names (default all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    base = merge(yaml.safe_load(SPEC.read_text()), OLD_RECIPE)
    data = args.data.resolve()
    base["data"]["train"] = [str(data / Path(p).name) for p in base["data"]["train"]]
    base["data"]["validation"] = [str(data / Path(p).name) for p in base["data"]["validation"]]
    base["optimisation"].update(epochs=args.epochs, threads=args.threads, device=args.device)
    base["seed"] = args.seed
    names = args.only or list(VARIANTS)
    args.out.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name in names:
        variant = dict(VARIANTS[name])
        factor = variant.pop("epochs_factor", 1.0)
        spec = merge(base, variant)
        spec["optimisation"]["epochs"] = max(1, round(args.epochs * factor))
        spec["output"] = str((args.out / name).resolve())
        spec["resume"] = False
        spec_path = args.out / f"{name}.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        code = (
            "import logging, sys; logging.basicConfig(level=logging.INFO);"
            "from geoseg.train import load_train_spec, train; train(load_train_spec(sys.argv[1]))"
        )
        with open(args.out / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
            procs[name] = subprocess.Popen([sys.executable, "-c", code, str(spec_path)], stdout=log, stderr=log)
    while any(p.poll() is None for p in procs.values()):
        time.sleep(10)
        (args.out / "summary.json").write_text(json.dumps(summarise(args.out, names), indent=1))
    rows = summarise(args.out, names)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    for name, r in rows.items():
        print(
            f"{name:20s} epochs {r['epochs_done']:3d} best@{r['best_epoch']:3d} {r['best']} "
            f"mean {r['best_mean']:.4f} last5 {r['last5_mean']:.4f} {r['sec_per_epoch']} s/epoch"
        )
    for name, p in procs.items():
        if p.returncode:
            print(f"{name}: exit {p.returncode}; see {args.out / (name + '.log')}")


if __name__ == "__main__":
    main()
