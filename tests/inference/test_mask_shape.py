"""``reports/mask_shape.py``: outline features and their join with the classifiers (measured, not shipped)."""
import importlib.util
import sys

import cv2
import numpy as np
import pytest

from models.data.paths import REPO

spec = importlib.util.spec_from_file_location("mask_shape", REPO / "reports" / "mask_shape.py")
mask_shape = importlib.util.module_from_spec(spec)
sys.modules["mask_shape"] = mask_shape  # its dataclass looks its module up there
spec.loader.exec_module(mask_shape)
F = {name: k for k, name in enumerate(mask_shape.FEATURES)}


def disc(size=128, radius=30):
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, (size // 2, size // 2), radius, 1, -1)
    return mask.astype(bool)


def star(size=128, points=9, outer=40, inner=18):
    angles = np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    poly = np.stack([size / 2 + radii * np.cos(angles), size / 2 + radii * np.sin(angles)], 1).astype(np.int32)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [poly], 1)
    return mask.astype(bool)


def test_a_spiculated_outline_reads_less_circular_and_more_irregular_than_a_disc():
    round_, spiky = mask_shape.shape_features(disc()), mask_shape.shape_features(star())
    assert round_[F["circularity"]] > 0.85 > 0.5 > spiky[F["circularity"]]
    assert spiky[F["margin irregularity"]] > 0.2 > 0.05 > round_[F["margin irregularity"]]
    assert abs(round_[F["log depth/width"]]) < 0.05


def test_a_tall_lesion_has_a_positive_log_depth_to_width_and_an_empty_mask_has_no_features():
    tall = np.zeros((128, 128), bool)
    tall[20:100, 50:70] = True
    assert mask_shape.shape_features(tall)[F["log depth/width"]] > 1.0
    assert mask_shape.shape_features(np.zeros((64, 64), bool)) is None


def fitted_on_round_benign_and_spiky_malignant():
    masks = [disc(radius=r) for r in (20, 25, 30, 35)] + [star(outer=o) for o in (30, 35, 40, 45)]
    labels = np.array([mask_shape.BENIGN] * 4 + [mask_shape.MALIGNANT] * 4 + [mask_shape.NORMAL])
    return mask_shape.fit_shape(mask_shape.feature_table(masks + [np.zeros((128, 128), bool)]), labels)  # normal: skipped


def test_the_join_moves_malignancy_among_lesions_only_and_leaves_normal_and_maskless_scans_alone():
    model = fitted_on_round_benign_and_spiky_malignant()
    probs = np.full((3, 3), 0.4)
    probs[:, mask_shape.NORMAL] = 0.2
    features = mask_shape.feature_table([disc(radius=28), star(outer=38), np.zeros((128, 128), bool)])
    joined = mask_shape.combine(probs, features, model, 1.0)
    assert np.allclose(joined.sum(1), 1) and np.allclose(joined[:, mask_shape.NORMAL], 0.2)
    assert joined[0, mask_shape.MALIGNANT] < 0.4 < joined[1, mask_shape.MALIGNANT]
    assert np.allclose(joined[2], probs[2])
    assert np.array_equal(mask_shape.combine(probs, features, model, 0.0), probs)


def test_other_segmenters_go_only_with_replicates_and_say_so(capsys):
    with pytest.raises(SystemExit):
        mask_shape.main(["--segmenters", "runs/somewhere"])
    assert "--segmenters goes with --replicates" in capsys.readouterr().err
