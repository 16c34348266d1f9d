"""Does a patch's answer depend on the other patches of its batch, on this GPU? (Ray-free.)

The pipeline runs batches of a fixed shape, but which patches share a batch depends on the
block size, the worker count and retries. For the output to be bit-identical whatever those,
the model's answer for one patch must not depend on its batch neighbours. For each model and
setting this prints the largest difference of the probabilities between the same patches
answered in one call and answered part by part (other neighbours in each batch), and how
many pixels' labels differ.

    python bench/gpu_packing.py [OUT.json]                   # settings of cuDNN, each precision
    python bench/gpu_packing.py --predictor-only [OUT.json]  # the Predictor as shipped
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import unet_bench_card  # bench/ is sys.path[0] when run as a script

from geoseg.infer import Predictor
from geoseg.models import ModelCard, ModelSpec, build_model, model_card, save_checkpoint


def check(ckpt: Path, precision: str, flags: dict, batch: int = 16) -> dict:
    spec = ModelSpec(checkpoint=ckpt)
    pred = Predictor(spec, batch_size=batch, device="cuda", precision=precision)
    if flags:  # after the Predictor, which turns TF32 off for fp32: these rows override it
        torch.backends.cudnn.allow_tf32 = flags.get("allow_tf32", True)
        torch.backends.cuda.matmul.allow_tf32 = flags.get("allow_tf32", False)
        torch.backends.cudnn.deterministic = flags.get("deterministic", False)
        torch.backends.cudnn.benchmark = flags.get("benchmark", False)
    rng = np.random.default_rng(1)
    x = (rng.random((3 * batch + 5, len(pred.card.bands), 256, 256), dtype=np.float32) * 2000).astype(np.float32)
    cuts = [0, 7, batch + 3, 2 * batch + 1, len(x)]
    parts = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    whole = pred.predict([x])[0]
    alone = np.concatenate([pred.predict([p])[0] for p in parts])
    lw = pred.predict([x], labels_only=True)[0]
    la = np.concatenate([pred.predict([p], labels_only=True)[0] for p in parts])
    return {"max_diff": float(np.abs(whole - alone).max()), "labels_differ": int((lw != la).sum()), "pixels": int(lw.size)}


def main() -> None:
    out: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}
    cards = {"unet-32": unet_bench_card()}
    base = model_card("deeplabv3_resnet50")
    affine = {"kind": "affine", "offset": [1000.0] * 3, "scale": [1000.0] * 3}
    cards["deeplabv3_resnet50"] = ModelCard.from_dict({**base.to_dict(), "bands": ["B04", "B03", "B02"], "normalisation": affine})
    settings = {
        "torch_default_tf32": {"allow_tf32": True},
        "no_tf32": {"allow_tf32": False},
        "deterministic": {"allow_tf32": True, "deterministic": True, "benchmark": False},
        "no_tf32_deterministic": {"allow_tf32": False, "deterministic": True, "benchmark": False},
    }
    if "--predictor-only" in sys.argv:  # the Predictor as shipped: its own settings for each precision
        settings = {"as_shipped": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, card in cards.items():
            ckpt = Path(tmp) / f"{name}.pt"
            torch.manual_seed(0)
            save_checkpoint(ckpt, build_model(card), card)
            for label, flags in settings.items():
                for precision in ("fp32", "bf16"):
                    row = {"model": name, "setting": label, "precision": precision, **check(ckpt, precision, flags)}
                    out["rows"].append(row)
                    print(json.dumps(row), flush=True)
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    if paths:
        Path(paths[0]).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
