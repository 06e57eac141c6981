"""``reports/mask_rules.py``: the mask rules measured on validation (none shipped), on synthetic masks."""
import importlib.util

import numpy as np
import pytest

from models.data.masks import dice_iou
from models.data.paths import REPO

spec = importlib.util.spec_from_file_location("mask_rules", REPO / "reports" / "mask_rules.py")
mask_rules = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mask_rules)


def two_blobs():
    """A large faint blob (probability 0.6) and a small confident one (0.95), both over the threshold."""
    prob = np.zeros((64, 64), np.float32)
    prob[5:35, 5:35] = 0.6
    prob[45:55, 45:55] = 0.95
    return prob > 0.5, prob


@pytest.mark.parametrize("score, kept, area", [(np.max, (50, 50), 100), (np.sum, (20, 20), 900)])
def test_one_blob_keeps_the_blob_its_score_prefers(score, kept, area):
    mask, prob = two_blobs()
    out = mask_rules.one_blob(score)(mask, prob)
    assert out[kept] and out.sum() == area


def test_the_shipped_clean_up_keeps_both_blobs_and_the_largest_only_rule_drops_the_small_one():
    mask, prob = two_blobs()
    rules = mask_rules.CLEAN_RULES
    assert rules["min_fraction 0.1 (shipped)"](mask, prob).sum() == 1000
    assert rules["min_fraction 1.0"](mask, prob).sum() == 900


def test_scores_count_a_missed_lesion_as_zero_and_empty_and_a_mask_on_a_normal_scan_as_false():
    truth = np.zeros((32, 32), bool)
    truth[8:16, 8:16] = True
    normal = np.zeros_like(truth)
    dice, empty, false = mask_rules.scores([truth, np.zeros_like(truth), truth], [truth, truth, normal])
    assert (dice, empty, false) == (0.5, 0.5, 1.0)


def test_a_coarse_grid_keeps_a_large_lesion_and_loses_a_thin_one():
    big = np.zeros((160, 160), bool)
    big[40:120, 40:120] = True
    thin = np.zeros_like(big)
    thin[:, 80:82] = True
    assert dice_iou(mask_rules.coarse(big, 4), big)[0] > 0.97
    assert dice_iou(mask_rules.coarse(thin, 4), thin)[0] < 0.5
