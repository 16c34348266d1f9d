"""geoseg.evaluate: Dice, BraTS regions and lesion counts on small arrays made in code."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.evaluate import REGIONS, LesionCounts, brats_regions, dice, lesion_counts


def test_dice_values() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice(a, b) == 1.0  # both empty
    a[0, :2] = True
    assert dice(a, b) == 0.0  # one empty
    assert dice(a, a) == 1.0
    b[0, 1:4] = True  # overlap 1, sizes 2 and 3
    assert dice(a, b) == pytest.approx(2 * 1 / 5)
    assert dice(a, b) == dice(b, a)


def test_dice_takes_any_truthy_array_and_refuses_other_shapes() -> None:
    assert dice(np.array([0, 2, 3]), np.array([0, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(InputError, match=r"\(3,\).*\(4,\)"):
        dice(np.zeros(3, bool), np.zeros(4, bool))


def test_brats_regions_are_nested_unions_of_classes() -> None:
    labels = np.array([[0, 1, 2, 3]], np.uint8)
    regions = brats_regions(labels)
    assert list(regions) == list(REGIONS) == ["whole_tumour", "tumour_core", "enhancing"]
    assert regions["whole_tumour"].tolist() == [[False, True, True, True]]
    assert regions["tumour_core"].tolist() == [[False, False, True, True]]
    assert regions["enhancing"].tolist() == [[False, False, False, True]]
    assert all(r.shape == labels.shape and r.dtype == bool for r in regions.values())
    with pytest.raises(InputError, match="class indices"):
        brats_regions(np.array([0.5, 1.0]))


def test_lesion_counts_detected_missed_false_positive() -> None:
    truth = np.zeros((12, 12, 12), np.uint8)
    truth[1:3, 1:3, 1:3] = 1  # lesion A, hit by the prediction
    truth[6:8, 6:8, 6:8] = 3  # lesion B, missed
    truth[1, 10, 10] = 2  # lesion C, one voxel, hit by a prediction that spills over
    pred = np.zeros_like(truth)
    pred[2:4, 2:4, 2:4] = 2  # overlaps A
    pred[1, 9:11, 10] = 1  # overlaps C
    pred[10, 1, 1] = 3  # touches nothing: false positive
    pred[10, 5:8, 10] = 1  # another false positive (one component)
    counts = lesion_counts(pred, truth)
    assert counts == LesionCounts(detected=2, missed=1, false_positive=2)
    assert counts.truth_lesions == 3


def test_lesion_counts_connectivity_diagonal_neighbours() -> None:
    truth = np.zeros((3, 3, 3), np.uint8)
    truth[0, 0, 0] = truth[1, 1, 1] = 1  # corner neighbours: one lesion at 26-, two at 6-connectivity
    pred = np.zeros_like(truth)
    pred[0, 0, 0] = 1
    assert lesion_counts(pred, truth) == LesionCounts(1, 0, 0)
    assert lesion_counts(pred, truth, connectivity=1) == LesionCounts(1, 1, 0)


def test_lesion_counts_empty_and_bad_input() -> None:
    empty = np.zeros((2, 2, 2), np.uint8)
    assert lesion_counts(empty, empty) == LesionCounts(0, 0, 0)
    with pytest.raises(InputError, match="3-D"):
        lesion_counts(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="differ"):
        lesion_counts(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(InputError, match="connectivity"):
        lesion_counts(empty, empty, connectivity=4)
