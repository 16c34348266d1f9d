"""A per-scene Otsu threshold for an index model (``threshold: otsu``): two earlier phases.

1. :class:`IndexHistogram`, one per block: the index of the block's pixels (the model's own
   float32 arithmetic), counted in fixed bins, saved as ``parts/histogram/<block>.npy``.
2. :class:`ChooseThreshold`, one per group: the blocks' counts summed (integers: any order or
   block size gives the same sum), Otsu's threshold of the sum, saved as
   ``parts/threshold.json``; its marker carries it into the group's metadata and the report.

The model phase runs after them: each block's read scales its bands so that the model,
built with threshold 0, thresholds the index at the scene's value
(:func:`geoseg.core.water.scaled_for_threshold`). Every result is a key of the store, so a
killed run resumes at the phase it reached.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geoseg.core.grid import Window
from geoseg.core.water import INDEX_BINS, index_histogram, normalised_difference, otsu_threshold
from geoseg.errors import InputError, StoreError
from geoseg.sinks import Store, part_key
from geoseg.sources import RasterInfo, read_window

__all__ = ["IndexHistogram", "ChooseThreshold", "threshold_phases", "read_threshold", "THRESHOLD_PART"]

THRESHOLD_PART = "threshold.json"


@dataclass(frozen=True)
class IndexHistogram:
    """Phase 1: (INDEX_BINS,) int64 counts of one block's index, its valid pixels only."""

    group: str
    key: str
    info: RasterInfo
    bands: tuple[int, int]
    extent: Window

    def run(self, store: Store) -> dict[str, Any]:
        pixels, valid = read_window(self.info, self.extent, self.bands)
        counts = index_histogram(normalised_difference(pixels[0], pixels[1]), valid)
        buf = io.BytesIO()
        np.save(buf, counts)
        store.set(part_key(self.group, f"histogram/{self.key}.npy"), buf.getvalue())
        return {"pixels": int(counts.sum())}


@dataclass(frozen=True)
class ChooseThreshold:
    """Phase 2: the scene's threshold from every block's counts, summed in block order."""

    group: str
    histograms: tuple[str, ...]  # the keys of phase 1, in block order
    index: str
    path: str

    def run(self, store: Store) -> dict[str, Any]:
        total = np.zeros(INDEX_BINS, np.int64)
        for k in self.histograms:
            data = store.get(part_key(self.group, f"histogram/{k}.npy"))
            if data is None:
                raise StoreError(f"{store.url}: histogram {k} is missing; rerun with --overwrite")
            total += np.load(io.BytesIO(data))
        if not total.any():
            raise InputError(
                f"{self.path}: no valid pixels to choose an Otsu threshold from (all nodata); "
                "give model.params.threshold as a number, or check the file's nodata"
            )
        value = otsu_threshold(total)
        chosen = {"method": "otsu", "index": self.index, "value": value, "bins": INDEX_BINS, "pixels": int(total.sum())}
        store.set(part_key(self.group, THRESHOLD_PART), json.dumps(chosen).encode())
        return {"meta": {"threshold": chosen}}


def read_threshold(store: Store, group: str) -> float:
    """The scene's chosen threshold (after :class:`ChooseThreshold` ran)."""
    data = store.get(part_key(group, THRESHOLD_PART))
    if data is None:
        raise StoreError(f"{store.url}: group {group!r} has no chosen threshold; rerun with --overwrite")
    return float(json.loads(data)["value"])


def threshold_phases(
    group: str, extents: Sequence[tuple[str, Window]], info: RasterInfo, bands: tuple[int, int], index: str
) -> tuple[tuple[tuple[str, Any], ...], ...]:
    """The two earlier phases of a scene as ``(marker key, task)`` pairs.

    The keys name the block layout, so a rerun with another block size never mixes histograms
    of two layouts (the chosen value would be the same: integer counts).
    """
    layout = hashlib.sha256(repr([tuple(e) for _, e in extents]).encode()).hexdigest()[:12]
    hist = tuple((f"hist_{layout}_{n}", ext) for n, ext in extents)
    return (
        tuple((k, IndexHistogram(group, k, info, bands, ext)) for k, ext in hist),
        ((f"otsu_{layout}", ChooseThreshold(group, tuple(k for k, _ in hist), index, info.path)),),
    )
