"""Normal tissue from every scanner: crops of lesion scans that leave the lesion out, as normal examples.

Normal scans exist in BUSI alone (133, one scanner), so the normal class learns what BUSI's normal
scans look like rather than what breast tissue without a lesion looks like; BUS-BRA has none. The
masks say where each lesion is, so every lesion scan also holds normal tissue of its own scanner.

With probability ``p`` a training draw becomes a crop of a fraction ``scale`` of the scan's area:
- a lesion scan gives, half of the time, a crop that keeps clear of the lesion (by ``margin`` of the
  scan's side): labelled normal, with an empty mask; the other half, a crop of the same size that holds
  the whole lesion: label and mask kept (sizes where either kind does not fit leave the draw whole);
- a normal scan gives a crop of the same size, still normal.
Crops of every class and of the same sizes, so that being cropped says nothing about the class. The
crop is resized back to the model's input size, like a whole scan. Random numbers come from torch's
generator, which a resumed training run restores.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from models.data.records import CLASSES

NORMAL = CLASSES.index("normal")


@dataclass(frozen=True)
class CropRecipe:
    p: float  # share of training draws that become a crop
    scale: tuple[float, float] = (0.2, 0.5)  # crop area as a share of the scan's
    margin: float = 0.04  # gap kept between a lesion-free crop and the lesion, as a share of the side
    tries: int = 40


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _randint(lo: int, hi: int) -> int:
    """An integer in [lo, hi]."""
    return lo + int(torch.randint(0, max(hi - lo, 0) + 1, ()))


def crop_size(shape: tuple[int, int], recipe: CropRecipe) -> tuple[int, int]:
    """(h, w) of a crop: an area share drawn from ``recipe.scale``, an aspect ratio from 3:4 to 4:3."""
    area, aspect = _uniform(*recipe.scale), _uniform(0.75, 1.33)
    return (int(round(min(shape[0], max(8, shape[0] * np.sqrt(area * aspect))))),
            int(round(min(shape[1], max(8, shape[1] * np.sqrt(area / aspect))))))


def lesion_box(mask: np.ndarray, h: int, w: int) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of an ``h x w`` crop that holds the whole lesion, or None if it does not fit."""
    ys, xs = np.nonzero(mask)
    if not len(ys) or ys.max() - ys.min() + 1 > h or xs.max() - xs.min() + 1 > w:
        return None
    size_y, size_x = mask.shape
    return (_randint(max(0, ys.max() - h + 1), min(ys.min(), size_y - h)),
            _randint(max(0, xs.max() - w + 1), min(xs.min(), size_x - w)), h, w)


def free_box(mask: np.ndarray, h: int, w: int, recipe: CropRecipe) -> tuple[int, int, int, int] | None:
    """(y0, x0, h, w) of an ``h x w`` crop that keeps ``recipe.margin`` clear of the lesion, or None if
    ``recipe.tries`` random places found none."""
    size_y, size_x = mask.shape
    gap = int(round(recipe.margin * max(size_y, size_x)))
    keep_out = cv2.dilate(mask.astype(np.uint8), np.ones((2 * gap + 1, 2 * gap + 1), np.uint8)) if gap else mask
    integral = cv2.integral(keep_out.astype(np.uint8))  # lesion pixels in any box, in O(1)
    for _ in range(recipe.tries):
        y0, x0 = _randint(0, size_y - h), _randint(0, size_x - w)
        if integral[y0 + h, x0 + w] - integral[y0, x0 + w] - integral[y0 + h, x0] + integral[y0, x0] == 0:
            return y0, x0, h, w
    return None


def crop_draw(image: np.ndarray, mask: np.ndarray, label: int, recipe: CropRecipe
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """One training draw, cropped per ``recipe`` (or unchanged): (image, mask, label) at the input size.

    A lesion scan is cropped only at a size where both a lesion-free and a lesion-holding crop exist, and
    then either one with equal odds: the two kinds share one size distribution."""
    if recipe.p <= 0 or float(torch.rand(())) >= recipe.p:
        return image, mask, label
    h, w = crop_size(mask.shape, recipe)
    lesion = bool(mask.any())
    if lesion:
        free, held = free_box(mask, h, w, recipe), lesion_box(mask, h, w)
        if free is None or held is None:
            return image, mask, label
        keep = float(torch.rand(())) < 0.5
        y0, x0, h, w = held if keep else free
    else:
        keep = True
        y0, x0 = _randint(0, mask.shape[0] - h), _randint(0, mask.shape[1] - w)
    size = (image.shape[1], image.shape[0])
    image = cv2.resize(image[y0:y0 + h, x0:x0 + w], size, interpolation=cv2.INTER_AREA)
    if not keep:
        return image, np.zeros_like(mask), NORMAL
    mask = cv2.resize(mask[y0:y0 + h, x0:x0 + w].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return image, mask, label


def expected_counts(labels: np.ndarray, masks_any: np.ndarray, recipe: CropRecipe | None) -> np.ndarray:
    """Class counts of an epoch's draws with the recipe (about half of the lesion scans' crops are normal),
    for the class weights: without crops counted, a source with no normal scans weighs normal at zero."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    if recipe and recipe.p > 0:
        moved = np.bincount(labels[masks_any], minlength=len(CLASSES)) * recipe.p * 0.5
        counts -= moved
        counts[NORMAL] += moved.sum()
    return counts
