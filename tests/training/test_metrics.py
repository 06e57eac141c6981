import math

import numpy as np
import pytest

from models.training.metrics import (
    classification_metrics,
    dice_iou,
    expected_calibration_error,
    group_bootstrap,
    review_flag_metrics,
    segmentation_metrics,
)

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


def test_the_intervals_average_over_the_same_classes_as_the_estimate():
    """BUS-BRA has no normal scans, yet lesions called normal happen across sites: the bootstrap's macro-F1 must
    average over benign and malignant like the estimate, not over every class predicted (found by mutation)."""
    y = ["benign"] * 20 + ["malignant"] * 20
    calls = ["benign"] * 18 + ["normal"] * 2 + ["malignant"] * 18 + ["normal"] * 2
    p = np.array([[0.8 if c == k else 0.1 for k in ("benign", "malignant", "normal")] for c in calls])
    f1 = classification_metrics(y, p, n_boot=200, seed=0).scores["macro_f1"]
    assert f1.value == pytest.approx(2 * 0.9 / 1.9)  # each class: precision 1, recall 0.9
    assert f1.low <= f1.value <= f1.high and f1.low > 0.8  # over three classes it would be about 0.63


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


def _clustered(n_groups=12, size=8, seed=0):
    """Items in groups whose members agree: a group is right or wrong as a whole (a patient's scans)."""
    rng = np.random.default_rng(seed)
    right = np.repeat(rng.random(n_groups) < 0.6, size)
    y = ["benign", "malignant"] * (n_groups * size // 2)
    probs = np.array([[0.8, 0.1, 0.1] if (label == "benign") == ok else [0.1, 0.8, 0.1]
                      for label, ok in zip(y, right)])
    return y, probs, np.repeat([f"g{k}" for k in range(n_groups)], size), right


def _reference_draws(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The group bootstrap written out: draw as many groups as there are, with replacement; take the mean."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        picked = rng.integers(0, len(uniq), len(uniq))
        draws.append(np.concatenate([values[inverse == g] for g in picked]).mean())
    return np.array(draws)


def test_interval_bounds_are_the_2_5_and_97_5_percentiles_of_the_group_draws():
    y, probs, groups, right = _clustered()
    m = classification_metrics(y, probs, groups=groups, n_boot=400, seed=7)
    draws = _reference_draws(right.astype(float), groups, 400, 7)
    acc = m.scores["accuracy"]
    assert acc.value == pytest.approx(right.mean())
    assert (acc.low, acc.high) == pytest.approx((np.percentile(draws, 2.5), np.percentile(draws, 97.5)))


def test_segmentation_interval_bounds_are_the_percentiles_of_the_group_draws():
    truth = np.zeros((8, 8), bool)
    truth[2:6, 2:6] = True
    preds, dice = [], []
    for k in range(30):
        p = np.zeros((8, 8), bool)
        p[2:6, 2:2 + k % 5] = True
        preds.append(p)
        dice.append(dice_iou(p, truth)[0])
    groups = np.array([f"p{k // 3}" for k in range(30)])
    m = segmentation_metrics(preds, [truth] * 30, groups=groups, n_boot=300, seed=2)
    draws = _reference_draws(np.array(dice), groups, 300, 2)
    d = m.scores["dice_mean"]
    assert (d.low, d.high) == pytest.approx((np.percentile(draws, 2.5), np.percentile(draws, 97.5)))


def test_grouped_intervals_are_wider_than_the_same_items_taken_one_by_one():
    y, probs, groups, right = _clustered()
    grouped = classification_metrics(y, probs, groups=groups, n_boot=400, seed=0).scores["accuracy"]
    single = classification_metrics(y, probs, n_boot=400, seed=0).scores["accuracy"]
    assert grouped.value == single.value
    assert grouped.high - grouped.low > 1.5 * (single.high - single.low)
    truth = np.ones((4, 4), bool)
    masks = [truth if ok else ~truth for ok in right]
    seg_grouped = segmentation_metrics(masks, [truth] * len(masks), groups=groups, n_boot=400).scores["dice_mean"]
    seg_single = segmentation_metrics(masks, [truth] * len(masks), n_boot=400).scores["dice_mean"]
    assert seg_grouped.high - seg_grouped.low > 1.5 * (seg_single.high - seg_single.low)


def test_screening_scores_count_lesion_against_no_lesion():
    # normal: 1 of 2 called normal; lesions: 1 of 3 called normal (a benign one)
    y = ["normal", "normal", "benign", "benign", "malignant"]
    p = np.array([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    s = classification_metrics(y, p, n_boot=0).scores
    assert s["normal_recall"].value == pytest.approx(0.5)
    assert s["lesion_recall"].value == pytest.approx(2 / 3)  # a benign called malignant still has its lesion
    assert math.isnan(classification_metrics(["benign", "malignant"], p[2:4], n_boot=0).scores["normal_recall"].value)


def test_missed_lesions_are_counted_as_empty_masks():
    truth = np.zeros((4, 4), bool)
    truth[1:3, 1:3] = True
    empty = np.zeros((4, 4), bool)
    m = segmentation_metrics([truth, empty, empty, empty], [truth, truth, truth, empty], n_boot=0)
    assert m.scores["empty_rate"].value == pytest.approx(2 / 3)
    assert m.scores["fp_image_rate"].value == 0


def test_review_flag_metrics_compare_flagged_and_unflagged_errors():
    correct = [True, True, True, False, False, True, False, True]
    flagged = [False, False, False, True, True, True, False, False]
    s = review_flag_metrics(correct, flagged, n_boot=50)
    assert s["flagged_share"].value == pytest.approx(3 / 8)
    assert s["error_flagged"].value == pytest.approx(2 / 3)
    assert s["error_unflagged"].value == pytest.approx(1 / 5)
    assert s["error_flagged"].low <= s["error_flagged"].value <= s["error_flagged"].high
    none_flagged = review_flag_metrics([True, False], [False, False], n_boot=0)
    assert math.isnan(none_flagged["error_flagged"].value) and none_flagged["error_unflagged"].value == 0.5


def test_review_flag_intervals_resample_the_groups_they_are_given():
    correct = np.repeat([True, False, True, True, False, True], 6)
    flagged = np.repeat([False, True, False, True, True, False], 6)
    groups = np.repeat(list("abcdef"), 6)
    grouped = review_flag_metrics(correct, flagged, groups=groups, n_boot=300, seed=1)
    single = review_flag_metrics(correct, flagged, n_boot=300, seed=1)
    width = lambda iv: iv.high - iv.low
    assert width(grouped["flagged_share"]) > 1.5 * width(single["flagged_share"])
    assert grouped == review_flag_metrics(correct, flagged, groups=groups, n_boot=300, seed=1)
    with pytest.raises(ValueError, match="outcomes for"):
        review_flag_metrics([True, False], [True])


def test_review_flag_intervals_are_seeded():
    """The same seed gives the same intervals, another seed others (an unseeded bootstrap survived mutation
    testing when the groups were too few for draws to differ)."""
    rng = np.random.default_rng(0)
    correct, flagged = rng.random(500) < 0.7, rng.random(500) < 0.4
    a = review_flag_metrics(correct, flagged, n_boot=100, seed=5)
    assert a == review_flag_metrics(correct, flagged, n_boot=100, seed=5)
    assert a != review_flag_metrics(correct, flagged, n_boot=100, seed=6)

def test_ece_matches_a_reference_with_many_bins_in_use():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([2, 1, 1], 500)
    # the sign of (accuracy - confidence) alternates across bins: with one sign everywhere, any binning gives
    # the same ECE, and merged or shifted bins would go unnoticed
    top, conf = probs.argmax(axis=1), probs.max(axis=1)
    right = (conf < 0.6) | (conf > 14 / 15) | ((conf > 0.8) & (conf < 13 / 15)) | (np.arange(500) % 4 == 0)
    y = np.where(right, top, (top + 1) % 3)
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    reference = 0.0
    for b in range(15):  # bins (b/15, (b+1)/15], the first one closed at 0
        lo, hi = b / 15, (b + 1) / 15
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inside.any():
            reference += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert expected_calibration_error(y, probs) == pytest.approx(reference, abs=1e-12)


def test_per_class_results_and_absent_classes():
    m = classification_metrics(Y, P, n_boot=0)
    assert m.n == 4 and m.per_class["benign"]["f1"] == pytest.approx(2 / 3) and m.per_class["malignant"]["support"] == 2
    two = classification_metrics(["benign", "malignant"], P[:2], n_boot=0)
    assert len(two.confusion) == 3 and all(len(row) == 3 for row in two.confusion)  # every class, present or not
    assert math.isnan(two.per_class["normal"]["roc_auc"])  # no normal scan: no AUC, and no error
    assert two.scores["lesion_recall"].value == 1.0 and math.isnan(two.scores["normal_recall"].value)
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True
    s = segmentation_metrics([a, a, np.zeros((4, 4), bool)], [a, a, np.zeros((4, 4), bool)], n_boot=0)
    assert (s.n_lesion, s.n_normal) == (2, 1) and s.iou == [1.0, 1.0]
    assert s.scores["iou_median"].value == 1.0


def test_paired_differences_share_one_bootstrap_and_leave_out_undefined_scores():
    """Candidate minus baseline on the same cases: a source without normal scans has no normal-recall
    difference, and two identical models differ by exactly zero in every draw."""
    from models.training.metrics import paired_class_differences
    y = ["benign", "malignant"] * 6
    base = np.array([[0.7, 0.2, 0.1] if k % 3 else [0.2, 0.7, 0.1] for k in range(12)])
    cand = np.array([[0.7, 0.2, 0.1] if t == "benign" else [0.2, 0.7, 0.1] for t in y])
    groups = [k // 2 for k in range(12)]
    d = paired_class_differences(y, base, cand, groups=groups, n_boot=100)
    assert "normal_recall" not in d and d["lesion_recall"].value == 0
    assert d["accuracy"].value == pytest.approx(1 - np.mean(base.argmax(1) == cand.argmax(1)))
    assert d["macro_f1"].low <= d["macro_f1"].value <= d["macro_f1"].high and d["macro_f1"].value > 0
    same = paired_class_differences(y, base, base, groups=groups, n_boot=50)
    assert all((iv.value, iv.low, iv.high) == (0, 0, 0) for iv in same.values())
