"""A simulated annotator: how much work each way of drawing a mask takes, measured against reference masks.

The protocol of interactive-segmentation benchmarks (NoC, "number of clicks"):

- **box**: the reference mask's bounding box, each side moved by up to ``BOX_JITTER`` of the box's size
  (uniform, seeded), as a person drags it;
- **corrective click**: at the centre of the largest error region (the point farthest inside it), positive
  where the lesion is missed, negative where background is marked;
- **NoC@t**: the interactions (the box counts as one) until Dice reaches t; a case that never reaches it
  within the budget counts as the budget (and is reported as not reached).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.data.masks import dice_iou

from .prompts import Click, Prompt, PromptResult, PromptSegmenter

BOX_JITTER = 0.10
MAX_CLICKS = 10


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return dice_iou(a, b)[0]


def jittered_box(truth: np.ndarray, rng: np.random.Generator,
                 jitter: float = BOX_JITTER) -> tuple[float, float, float, float]:
    """The bounding box of ``truth`` with each side moved by up to ``jitter`` of the box's width or height."""
    ys, xs = np.nonzero(truth)
    if ys.size == 0:
        raise ValueError("the reference mask is empty: a box needs a lesion")
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    dx = rng.uniform(-jitter, jitter, 2) * w
    dy = rng.uniform(-jitter, jitter, 2) * h
    H, W = truth.shape
    return (float(np.clip(x0 + dx[0], 0, W - 1)), float(np.clip(y0 + dy[0], 0, H - 1)),
            float(np.clip(x1 + dx[1], 0, W - 1)), float(np.clip(y1 + dy[1], 0, H - 1)))


def next_click(pred: np.ndarray, truth: np.ndarray) -> Click | None:
    """The click a careful annotator makes next: inside the largest error region, as far from its edges as
    possible; positive on a missed part of the lesion, negative on a false one. None when there is no error."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    best: tuple[float, int, int, bool] | None = None
    for region, positive in ((truth & ~pred, True), (pred & ~truth, False)):
        if not region.any():
            continue
        # distance to the nearest pixel outside the region (the image border counts as outside)
        dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
        n, labels, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = float(stats[largest, cv2.CC_STAT_AREA])
        inside = np.where(labels == largest, dist, -1.0)
        ys, xs = np.nonzero(inside >= inside.max() - 0.5)  # the deepest points; of those, the one nearest the centroid
        cy, cx = np.nonzero(labels == largest)
        k = int(np.argmin((ys - cy.mean()) ** 2 + (xs - cx.mean()) ** 2))
        y, x = ys[k], xs[k]
        if best is None or area > best[0]:
            best = (area, int(x), int(y), positive)
    return None if best is None else Click(best[1], best[2], best[3])


def grabcut_box(gray: np.ndarray, box: tuple[float, float, float, float], iterations: int = 5,
                margin: float = 0.5) -> np.ndarray:
    """OpenCV GrabCut initialised with ``box`` (outside it background), the classical baseline. It runs on the box
    plus ``margin`` of its size on each side, so that the background model is the lesion's surroundings: on the
    whole scan, where dark regions far away look like the lesion, it returned an empty mask on most validation
    scans (mean Dice 0.14 on BUSI, 0.05 on BUS-BRA)."""
    h, w = gray.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = sorted((max(0, min(w - 1, x0)), max(0, min(w - 1, x1))))
    y0, y1 = sorted((max(0, min(h - 1, y0)), max(0, min(h - 1, y1))))
    out = np.zeros((h, w), bool)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    mx, my = round(margin * (x1 - x0)), round(margin * (y1 - y0))
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx + 1), min(h, y1 + my + 1)
    crop = np.ascontiguousarray(gray[cy0:cy1, cx0:cx1], np.uint8)
    seeds = np.zeros(crop.shape, np.uint8)
    rgb = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    rect = (x0 - cx0, y0 - cy0, x1 - x0 + 1, y1 - y0 + 1)
    if rect[2] >= crop.shape[1] and rect[3] >= crop.shape[0]:  # the box is the whole scan: nothing outside it
        return out
    cv2.grabCut(rgb, seeds, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    out[cy0:cy1, cx0:cx1] = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    return out


@dataclass(frozen=True)
class Session:
    """One simulated annotation: Dice after the box (index 0) and after each corrective click."""

    dice: tuple[float, ...]
    clicks: tuple[Click, ...]

    def noc(self, threshold: float) -> int:
        """Interactions (box = 1) until Dice >= ``threshold``; the budget (1 + clicks) when never reached."""
        for i, d in enumerate(self.dice):
            if d >= threshold:
                return i + 1
        return len(self.dice)

    def reached(self, threshold: float) -> bool:
        return max(self.dice) >= threshold


def annotate(segmenter: PromptSegmenter, gray: np.ndarray, truth: np.ndarray, box: tuple[float, float, float, float],
             max_clicks: int = MAX_CLICKS, clicks: str = "logits") -> Session:
    """A box, then up to ``max_clicks`` corrective clicks (stopping early at a perfect mask). ``clicks``: "logits"
    (the shipped method, ``prompts.apply_clicks``) or "sam-points" (SAM point prompts with the box and the previous
    logits, as SAM does; kept to replay the validation comparison)."""
    truth = np.asarray(truth, bool)
    embedding = segmenter.embed(gray)
    first: PromptResult = segmenter.segment(embedding, Prompt(box=box))
    result, dices, placed = first, [dice(first.mask, truth)], []
    for _ in range(max_clicks):
        click = next_click(result.mask, truth)
        if click is None:
            break
        placed.append(click)
        if clicks == "sam-points":
            result = segmenter.segment_sam_points(embedding, box, tuple(placed), result)
        else:
            result = segmenter.segment(embedding, Prompt(clicks=tuple(placed)), base=first.base)
        dices.append(dice(result.mask, truth))
    dices += [dices[-1]] * (max_clicks + 1 - len(dices))  # a perfect mask stays perfect
    return Session(tuple(dices), tuple(placed))
