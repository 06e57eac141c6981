"""Normal scans from every scanner: lesion scans with their lesion erased, labelled normal.

``sonomark train --erased-normals SHARE``. Normal scans exist in BUSI alone (133, one scanner), and BUS-BRA
has none, so the normal class learns what BUSI's normal scans look like rather than "no lesion"
(`reports/cross_site.md`). Every lesion scan holds tissue of its own scanner, and its mask says where the
lesion is. Of the training split's lesion scans (of the datasets ``--erased-from`` names, or all), a share
``SHARE`` gives an erased copy:
- its lesion, dilated by a margin, is replaced by the tissue at the same place in another training scan of
  the same dataset that has no lesion there (same depth, similar brightness);
- the donor's tissue is matched in brightness and spread to the tissue around the region, and faded in
  towards the region's edge, so that the seam follows the scan's own brightness;
- the copy is labelled normal, with an empty mask.

Decoys stop the blended patch from being a shortcut: as many lesion scans (drawn again from all of them) get
the same operation on tissue clear of their lesion, and keep their label and mask. The copies are made once, before training,
from the run's seed, so a resumed run trains on the same ones. Crops that leave the lesion out did not teach
"a whole scan can be normal" across sites; whole scans with the lesion erased did, on the BUS-BRA -> BUSI
proxy (`reports/cross_site.md`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from models.data.records import CLASSES
from models.preprocess import CaseArrays

NORMAL = CLASSES.index("normal")
ERASED, DECOY = "#erased", "#decoy"  # suffixes of the copies' case ids (their groups stay the scan's own)


@dataclass(frozen=True)
class ErasureRecipe:
    share: float  # of the lesion scans, the share that gives an erased copy (as many others give a decoy)
    margin: float = 0.11  # the lesion is dilated by this share of the side before it is erased (25 px at 224)
    donors: int = 30  # candidate donor scans drawn per copy
    seed: int = 0
    sources: tuple[str, ...] = ()  # the datasets whose lesion scans give copies and decoys; () for all

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"--erased-normals {self.share}: give the share of lesion scans to erase, in (0, 1]")

    def check_sources(self, present: Sequence[str]) -> None:
        """Refuses ``--erased-from`` datasets the training split does not hold (a typo would erase nothing)."""
        unknown = sorted(set(self.sources) - set(present))
        if unknown:
            raise ValueError(f"--erased-from {' '.join(unknown)}: not among the training split's datasets "
                             f"({', '.join(sorted(set(present)))}); name those, or leave the flag out for all")


def dilated(mask: np.ndarray, recipe: ErasureRecipe) -> np.ndarray:
    """The region to replace: the lesion grown by ``recipe.margin`` of the scan's side (an ellipse kernel)."""
    size = 2 * int(round(recipe.margin * max(mask.shape) / 2)) + 1
    return cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))).astype(bool)


def ring(region: np.ndarray) -> np.ndarray:
    """The tissue just around ``region`` (7 px wide), whose brightness the replacement is matched to."""
    return cv2.dilate(region.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~region


def blend(image: np.ndarray, region: np.ndarray, donor: np.ndarray, recipe: ErasureRecipe) -> np.ndarray | None:
    """``image`` with ``region`` replaced by ``donor``'s tissue at the same place, or None for a region too small.

    The donor's pixels are matched in mean and spread to the ring of tissue around the region in ``image``, and
    faded in: fully inside the region's core (the lesion and half the margin), to nothing at its edge, so that
    the seam follows the scan's own brightness and nothing outside the region changes. (OpenCV's Poisson
    blending, tried first, left a lesion of 40 on tissue of 150 at 107.)
    """
    around = ring(region)
    if region.sum() < 4 or not around.any():
        return None
    src, dst = donor.astype(np.float32), image.astype(np.float32)
    gain = dst[around].std() / max(float(src[around].std()), 1.0)
    matched = (src - src[around].mean()) * gain + dst[around].mean()
    half = max(1, int(round(recipe.margin * max(image.shape) / 4)))  # half the margin, as a radius
    core = cv2.erode(region.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * half + 1,) * 2))
    alpha = cv2.GaussianBlur(core.astype(np.float32), (0, 0), half / 2) * region
    return np.clip(np.rint(dst * (1 - alpha) + matched * alpha), 0, 255).astype(np.uint8)


def pick_donor(arrays: CaseArrays, k: int, region: np.ndarray, rng: np.random.Generator, recipe: ErasureRecipe,
               pool: np.ndarray) -> int | None:
    """Another training scan of ``pool`` (scan ``k``'s dataset) with no lesion in ``region`` whose tissue there is
    closest in brightness to the ring around ``region`` in scan ``k`` (so that the blend does not paint a dark,
    cyst-like patch, nor another scanner's texture)."""
    image, around = arrays.images[k], ring(region)
    target = float(image[around].mean()) if around.any() else float(image.mean())
    best = None
    for j in rng.choice(pool, size=min(recipe.donors, len(pool)), replace=False):
        if j == k or (arrays.masks[j] & region).any():
            continue
        gap = abs(float(arrays.images[j][region].mean()) - target)
        if best is None or gap < best[0]:
            best = (gap, int(j))
    return None if best is None else best[1]


def decoy_region(region: np.ndarray, rng: np.random.Generator, step: int = 4) -> np.ndarray | None:
    """``region`` moved to tissue clear of itself and off the border (a random one of the moves on a ``step``
    pixel grid that fit), or None if none fits."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    moves = [(dy, dx) for dy in range(1 - ys.min(), h - 1 - ys.max(), step)
             for dx in range(1 - xs.min(), w - 1 - xs.max(), step)
             if abs(dy) > ys.max() - ys.min() or abs(dx) > xs.max() - xs.min()]  # boxes apart: clear of itself
    if not moves:
        return None
    dy, dx = moves[int(rng.integers(len(moves)))]
    return np.roll(region, (dy, dx), (0, 1))


def synthesize(arrays: CaseArrays, recipe: ErasureRecipe) -> CaseArrays:
    """The erased copies and the decoys of ``arrays``' lesion scans (none of the originals)."""
    rng = np.random.default_rng(recipe.seed)
    recipe.check_sources(arrays.sources)
    lesions = [k for k in range(len(arrays)) if arrays.masks[k].any()
               and (not recipe.sources or arrays.sources[k] in recipe.sources)]
    pools = {s: np.flatnonzero(np.asarray(arrays.sources) == s) for s in set(arrays.sources)}
    wanted = int(round(recipe.share * len(lesions)))
    made: dict[str, list] = {ERASED: [], DECOY: []}
    # erased copies from a random share of the lesion scans; then decoys, as many, from all of them in a new order
    for kind, order in ((ERASED, rng.permutation(lesions)), (DECOY, rng.permutation(lesions))):
        for k in map(int, order):
            if len(made[kind]) >= (wanted if kind == ERASED else len(made[ERASED])):
                break
            region = dilated(arrays.masks[k], recipe)
            if kind == DECOY:
                region = decoy_region(region, rng)
                if region is None:
                    continue
            donor = pick_donor(arrays, k, region, rng, recipe, pools[arrays.sources[k]])
            image = None if donor is None else blend(arrays.images[k], region, arrays.images[donor], recipe)
            if image is not None:
                made[kind].append((k, image))
    picked = made[ERASED] + made[DECOY]
    labels = [NORMAL] * len(made[ERASED]) + [int(arrays.labels[k]) for k, _ in made[DECOY]]
    masks = [np.zeros_like(arrays.masks[k]) for k, _ in made[ERASED]] + [arrays.masks[k] for k, _ in made[DECOY]]
    ids = [arrays.case_ids[k] + ERASED for k, _ in made[ERASED]] + [arrays.case_ids[k] + DECOY for k, _ in made[DECOY]]
    shape = arrays.images.shape[1:]
    return CaseArrays(case_ids=tuple(ids), sources=tuple(arrays.sources[k] for k, _ in picked),
                      groups=tuple(arrays.groups[k] for k, _ in picked),
                      labels=np.asarray(labels, dtype=arrays.labels.dtype),
                      images=np.stack([im for _, im in picked]) if picked else np.empty((0, *shape), np.uint8),
                      masks=np.stack(masks) if picked else np.empty((0, *shape), bool))


def with_erased_normals(arrays: CaseArrays, recipe: ErasureRecipe) -> CaseArrays:
    """``arrays`` followed by its erased copies and decoys."""
    extra = synthesize(arrays, recipe)
    return CaseArrays(case_ids=arrays.case_ids + extra.case_ids, sources=arrays.sources + extra.sources,
                      groups=arrays.groups + extra.groups, labels=np.concatenate([arrays.labels, extra.labels]),
                      images=np.concatenate([arrays.images, extra.images]),
                      masks=np.concatenate([arrays.masks, extra.masks]))
