"""Lesion-free crops as normal examples: where the crops fall, their labels, masks and sizes, the class
weights of a source without normal scans, and determinism under torch's seed."""
import numpy as np
import pytest
import torch

from models.data.records import CLASSES
from models.training import train as T
from models.training.normal_crops import (NORMAL, CropRecipe, crop_draw, crop_size, expected_counts, free_box,
                                          lesion_box)

BENIGN = CLASSES.index("benign")


def scan_with_lesion(size=128, cy=40, cx=90, r=12):
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image = np.random.default_rng(0).integers(60, 200, (size, size)).astype(np.uint8)
    image[mask] = 10  # a dark lesion
    return image, mask


def test_lesion_free_boxes_keep_clear_and_kept_boxes_hold_the_whole_lesion():
    torch.manual_seed(0)
    _, mask = scan_with_lesion()
    recipe = CropRecipe(1.0, margin=0.05)
    gap = round(0.05 * 128)
    yy, xx = np.mgrid[:128, :128]
    near = (yy - 40) ** 2 + (xx - 90) ** 2 <= (12 + gap - 1) ** 2
    sizes = [crop_size(mask.shape, recipe) for _ in range(300)]
    assert 0.2 <= np.mean([h * w for h, w in sizes]) / 128 ** 2 <= 0.5
    free = [b for b in (free_box(mask, h, w, recipe) for h, w in sizes) if b]
    kept = [b for b in (lesion_box(mask, h, w) for h, w in sizes) if b]
    assert len(free) > 100 and len(kept) > 200
    for y0, x0, h, w in free:
        assert not near[y0:y0 + h, x0:x0 + w].any()
    for y0, x0, h, w in kept:
        assert mask[y0:y0 + h, x0:x0 + w].sum() == mask.sum()
    assert lesion_box(mask, 20, 20) is None  # a 25 px lesion does not fit a 20 px crop


def test_both_kinds_of_lesion_scan_crop_share_one_size_distribution():
    """Crops labelled normal are not smaller than those that keep the lesion: being cropped, or the
    crop's zoom, must say nothing about the class."""
    image, mask = scan_with_lesion()
    image = image.copy()
    image[:, :] = np.arange(128, dtype=np.uint8)[None, :]  # a ramp: a crop's width shows in its value range
    image[mask] = 0
    torch.manual_seed(4)
    spans = {NORMAL: [], BENIGN: []}
    for _ in range(400):
        out, _, label = crop_draw(image, mask, BENIGN, CropRecipe(1.0))
        if not np.array_equal(out, image):
            row = out[0].astype(int)  # the top row: clear of the lesion in both kinds here
            spans[label].append(row.max() - row.min())
    assert len(spans[NORMAL]) > 50 and len(spans[BENIGN]) > 50
    assert abs(np.median(spans[NORMAL]) - np.median(spans[BENIGN])) < 8


def test_draws_relabel_lesion_free_crops_only():
    image, mask = scan_with_lesion()
    torch.manual_seed(1)
    draws = [crop_draw(image, mask, BENIGN, CropRecipe(1.0)) for _ in range(200)]
    normal = [d for d in draws if d[2] == NORMAL]
    benign = [d for d in draws if d[2] == BENIGN]
    assert 30 < len(normal) < 140 and len(normal) + len(benign) == 200
    for img, m, _ in normal:
        assert img.shape == image.shape and not m.any() and (img == 10).mean() < 0.01  # no lesion pixels
    cropped = [d for d in benign if not np.array_equal(d[0], image)]
    assert cropped and all(m.any() and m.mean() > mask.mean() for _, m, _ in cropped)  # zoomed in on the lesion
    torch.manual_seed(1)
    assert all(crop_draw(image, mask, BENIGN, CropRecipe(1.0))[2] == draws[k][2] for k in range(20))
    assert crop_draw(image, mask, BENIGN, CropRecipe(0.0))[0] is image


def test_a_normal_scan_is_cropped_too_and_stays_normal():
    image = np.full((64, 64), 100, np.uint8)
    torch.manual_seed(2)
    out = [crop_draw(image, np.zeros((64, 64), bool), NORMAL, CropRecipe(1.0)) for _ in range(20)]
    assert all(l == NORMAL and not m.any() and img.shape == (64, 64) for img, m, l in out)


def test_a_source_without_normal_scans_still_weighs_the_crops_normal():
    labels = np.array([BENIGN] * 6 + [CLASSES.index("malignant")] * 4)
    lesion = np.ones(10, bool)
    assert T.class_weights(labels)[NORMAL] == 0  # without crops, nothing to weigh
    counts = expected_counts(labels, lesion, CropRecipe(0.4))
    assert counts.sum() == pytest.approx(10) and counts[NORMAL] == pytest.approx(2.0)
    assert T.class_weights(labels, counts)[NORMAL] > 0


def test_the_training_dataset_applies_the_recipe_to_training_draws_only():
    image, mask = scan_with_lesion(size=64, cy=20, cx=40, r=6)
    arrays = T.CaseArrays(("a",), ("busbra",), ("g",), np.array([BENIGN]), image[None], mask[None])
    torch.manual_seed(3)
    train = T.AugmentedCases(arrays, 64, train=True, crops=CropRecipe(1.0))
    assert NORMAL in {train[0][2] for _ in range(30)}
    val = T.AugmentedCases(arrays, 64, train=False, crops=CropRecipe(1.0))
    assert {val[0][2] for _ in range(10)} == {BENIGN}
