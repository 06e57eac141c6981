import math

import numpy as np
import pytest

from models.metrics import (classification_metrics, dice_iou, expected_calibration_error, group_bootstrap,
                            segmentation_metrics)

Y = ["benign", "malignant", "normal", "malignant"]
P = np.array([[0.8, 0.1, 0.1],   # benign, right
              [0.2, 0.7, 0.1],   # malignant, right
              [0.3, 0.3, 0.4],   # normal, right
              [0.6, 0.3, 0.1]])  # malignant called benign


def test_classification_against_hand_computed_values():
    m = classification_metrics(Y, P, n_boot=0)
    s = {k: v.value for k, v in m.scores.items()}
    assert m.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert s["accuracy"] == pytest.approx(0.75)
    # benign P=1/2 R=1 F1=2/3; malignant P=1 R=1/2 F1=2/3; normal F1=1
    assert s["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert s["weighted_f1"] == pytest.approx((2 / 3 * 1 + 2 / 3 * 2 + 1 * 1) / 4)
    assert m.per_class["benign"]["precision"] == pytest.approx(0.5)
    assert m.per_class["malignant"]["recall"] == pytest.approx(0.5)
    assert s["malignant_sensitivity"] == pytest.approx(0.5)
    assert s["malignant_specificity"] == pytest.approx(1.0)
    # malignant scores: positives 0.7, 0.3; negatives 0.1, 0.3 -> pairs (0.7>0.1, 0.7>0.3, 0.3>0.1, 0.3=0.3 half)
    assert s["malignant_auc"] == pytest.approx(3.5 / 4)
    assert m.per_class["normal"]["roc_auc"] == pytest.approx(1.0)
    # each sample alone in its bin: |1-.8| + |1-.7| + |1-.4| + |0-.6| over 4
    assert s["ece"] == pytest.approx(1.7 / 4)


def test_ece_perfectly_calibrated_is_zero():
    y = np.array([0] * 8 + [1] * 2)
    probs = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)


def test_macro_f1_can_average_over_present_classes_only():
    y = ["benign", "malignant", "benign", "malignant"]
    p = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1]])
    m = classification_metrics(y, p, n_boot=0)
    assert m.averaged_over == ("benign", "malignant")
    # benign P=1 R=1/2 F1=2/3; malignant F1=1; a lesion called normal is still an error
    assert m.scores["macro_f1"].value == pytest.approx((2 / 3 + 1) / 2)
    assert m.scores["accuracy"].value == pytest.approx(0.75)


def test_intervals_bracket_the_estimate_and_are_seeded():
    rng = np.random.default_rng(0)
    y = list(rng.choice(["benign", "malignant", "normal"], 200))
    p = rng.dirichlet([1, 1, 1], 200)
    a = classification_metrics(y, p, n_boot=200, seed=3)
    b = classification_metrics(y, p, n_boot=200, seed=3)
    assert a.scores == b.scores
    for iv in a.scores.values():
        assert iv.low <= iv.value <= iv.high


def test_bootstrap_resamples_whole_groups():
    groups = ["a", "a", "a", "b"]
    sizes = group_bootstrap(lambda i: {"n": len(i), "b": float((i == 3).sum())}, groups, 100, 0)
    # a resample draws 2 groups: sizes are 2 (b,b), 4 (a,b) or 6 (a,a); never an odd split of group a
    assert set(sizes["n"]) <= {2, 4, 6}
    assert set(sizes["n"]) == {2, 4, 6}


def test_group_count_must_match():
    with pytest.raises(ValueError, match="group ids"):
        classification_metrics(Y, P, groups=["a"], n_boot=10)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(Y, P[:, :2], n_boot=0)
    with pytest.raises(ValueError, match="not among"):
        classification_metrics(["benign", "cyst", "normal", "benign"], P, n_boot=0)


def test_dice_iou_hand_values():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b = np.zeros((4, 4), bool)
    b[:2, :] = True  # 8 pixels, 4 shared
    assert dice_iou(a, b) == pytest.approx((8 / 12, 4 / 8))
    assert dice_iou(np.zeros((3, 3)), np.zeros((3, 3))) == (1.0, 1.0)
    assert dice_iou(a, np.zeros((4, 4))) == (0.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_iou(a, np.zeros((2, 2)))


def test_segmentation_metrics_split_lesion_and_normal_images():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True
    b = np.zeros((4, 4), bool)
    b[:2, :] = True
    fp = np.zeros((4, 4), bool)
    fp[0, 0] = True
    empty = np.zeros((4, 4), bool)
    m = segmentation_metrics([a, b, fp, empty], [b, b, empty, empty], n_boot=50)
    assert (m.n_lesion, m.n_normal) == (2, 2)
    assert m.dice == pytest.approx([2 / 3, 1.0])
    assert m.scores["dice_mean"].value == pytest.approx((2 / 3 + 1) / 2)
    assert m.scores["dice_median"].value == pytest.approx((2 / 3 + 1) / 2)
    assert m.scores["iou_mean"].value == pytest.approx((0.5 + 1) / 2)
    assert m.scores["fp_area_mean"].value == pytest.approx((1 / 16 + 0) / 2)
    assert m.scores["fp_image_rate"].value == pytest.approx(0.5)
    assert not math.isnan(m.scores["dice_mean"].low)
