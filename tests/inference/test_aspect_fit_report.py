"""``reports/aspect_fit.py``: the U-Net's masks scored in the scan's own pixels, and the summary over seeds."""
import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from models.data import load_cases
from models.data.paths import REPO
from models.zoo import REGISTRY

spec = importlib.util.spec_from_file_location("aspect_fit", REPO / "reports" / "aspect_fit.py")
aspect_fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(aspect_fit)


class TopLeftQuadrant(nn.Module):
    """A 'segmenter' that calls the top-left quarter of its square input a lesion, whatever the scan."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        y = torch.full((x.shape[0], 1, s, s), -20.0)
        y[:, :, : s // 2, : s // 2] = 20.0
        return y


@pytest.mark.parametrize("fit, share", [("squash", 1 / 4), ("pad", 1 / 3)])
def test_masks_are_taken_back_to_the_scan_by_the_fit(busi, fit, share):
    """On landscape 64 x 48 scans the square's top-left quarter is a quarter of the scan when squashed, and a
    third when padded (the scan fills the square's top three quarters): the map goes back through the fit."""
    seg = dataclasses.replace(REGISTRY[aspect_fit.SEGMENTER], fit=fit)
    cases = load_cases([busi])
    r = aspect_fit.mask_records(TopLeftQuadrant(), seg, cases)
    assert r["lesion"] == [c.label != "normal" for c in cases]
    assert np.allclose(r["area"], share, atol=0.03)
    scores = aspect_fit.seg_scores(r)
    assert scores["empty_rate"] == 0 and scores["fp_image_rate"] == 1
    assert 0 <= scores["dice_mean"] < 1


def records(dice: list[float], lesion: list[bool]) -> dict:
    area = [0.0 if d == 0 and les else 0.1 for d, les in zip(dice, lesion)]
    return {"dice": dice, "area": area, "lesion": lesion, "groups": [f"g{k}" for k in range(len(dice))]}


def test_seg_scores_count_lesion_and_normal_scans_apart():
    r = records([0.8, 0.0, 0.6, 0.0], [True, True, True, False])
    assert aspect_fit.seg_scores(r) == pytest.approx({"dice_mean": 1.4 / 3, "empty_rate": 1 / 3,
                                                      "fp_image_rate": 1.0})
    assert aspect_fit.seg_scores(r, np.array([0, 0, 2])) == pytest.approx({"dice_mean": 2.2 / 3, "empty_rate": 0})


def test_seed_summary_pairs_pad_with_squash_by_seed():
    """Seeds spread widely, but pad beats squash by 0.1 in every seed: a paired difference of exactly 0.1."""
    lesion = [True] * 4
    results = {}
    for seed, base in enumerate((0.3, 0.5, 0.7)):
        results[f"busi-squash-s{seed}"] = {"busbra val": records([base] * 4, lesion)}
        results[f"busi-pad-s{seed}"] = {"busbra val": records([base + 0.1] * 4, lesion)}
    text = aspect_fit.seed_summary(results, ("dice_mean",), point=lambda r, s: aspect_fit.seg_scores(r)[s])
    row = next(line for line in text.splitlines() if "dice_mean" in line)
    assert "| 3 | 0.500 (0.200) | 0.600 (0.200) | +0.100 [+0.100, +0.100] |" in row
    del results["busi-pad-s2"], results["busi-pad-s1"]
    assert "dice_mean" not in aspect_fit.seed_summary(results, ("dice_mean",),
                                                      point=lambda r, s: aspect_fit.seg_scores(r)[s])
