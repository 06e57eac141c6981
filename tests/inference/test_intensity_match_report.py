"""``reports/intensity_match.py``: scans mapped onto a training source's grey levels, and the scores read off."""
import importlib.util
import sys

import numpy as np
import pytest

from models.data.paths import REPO

sys.path.insert(0, str(REPO / "reports"))
spec = importlib.util.spec_from_file_location("intensity_match", REPO / "reports" / "intensity_match.py")
intensity_match = importlib.util.module_from_spec(spec)
spec.loader.exec_module(intensity_match)


def scans(low: int, high: int, n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=(n, 32, 32)).astype(np.uint8)


def test_none_leaves_the_scans_alone():
    images = scans(0, 256)
    assert intensity_match.standardise(images, intensity_match.reference(scans(40, 200)), "none") is images


def test_matching_gives_a_dark_low_contrast_scan_the_references_grey_levels():
    """Scans of grey levels 10-60 matched onto a reference of 100-200 take its distribution (within a level)."""
    ref = intensity_match.reference(scans(100, 201, seed=1))
    out = intensity_match.standardise(scans(10, 61), ref, "match")
    assert 98 <= out.min() and out.max() <= 201
    assert np.abs(intensity_match.grey_cdf(out) - ref["cdf"]).max() < 0.05


def test_quantile_mapping_is_monotone_and_lands_the_percentiles():
    ref = intensity_match.reference(scans(100, 201, seed=1))
    images = scans(10, 61)
    out = intensity_match.standardise(images, ref, "quantile")
    order = np.argsort(images[0].ravel(), kind="stable")
    assert np.all(np.diff(out[0].ravel()[order].astype(int)) >= 0)  # brighter stays brighter
    assert np.percentile(out, intensity_match.QUANTILES) == pytest.approx(ref["quantiles"], abs=3)


def test_segmentation_scores_count_lesion_and_normal_scans_apart():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :4, :4] = masks[1, :4, :4] = True  # two lesion scans, one normal
    probs = np.zeros((3, 8, 8))
    probs[0, :4, :2] = 0.9  # half the lesion: Dice 2 * 8 / (8 + 16)
    probs[2, 0, 0] = 0.9  # a false lesion on the normal scan
    assert intensity_match.seg_point(probs, masks) == pytest.approx(
        {"dice_mean": (16 / 24) / 2, "empty_rate": 0.5, "fp_image_rate": 1.0})
