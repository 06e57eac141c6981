"""The review flag: why a person should look at a scan. The analysis and the evaluation share this rule,
so that what the evaluation reports about the flag is what the app shows.

The thresholds were chosen by `reports/review_flag.py`: of a grid of rules, the one that best separates
the scans the ensemble gets wrong (wrong class, lesion Dice under 0.5, or a lesion on a normal scan) from
the rest (Youden's J, mean over the validation split and both cross-site directions' validation splits).
The test splits only report it (`reports/review_flag.md`)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.data.masks import dice_iou
from models.data.records import CLASSES

# When to ask a person to look: the ensemble is unsure, its members disagree, or its mask contradicts its call.
MIN_CONFIDENCE = 0.65
MAX_DISSENT = 0.5  # flag at or above this share of the ensemble's weight picking another class than the call
TOLERANCE = 1e-9  # shares are quotients: an even split must count as half whichever way it falls
MIN_SEGMENTER_AGREEMENT = 0.6  # mean pairwise Dice of the masks of the segmenters with a say


def dissent(label: str, votes: Mapping[str, tuple[str, float]]) -> float:
    """The share of the ensemble's weight whose classifiers pick another class than ``label``."""
    return sum(share for picked, share in votes.values() if picked != label)


def outvoted(against: float) -> bool:
    """Whether classifiers holding ``against`` of the weight are enough dissent to flag the scan."""
    return against >= MAX_DISSENT - TOLERANCE


def review_reasons(probs: np.ndarray, votes: Mapping[str, tuple[str, float]], segmenter_masks: list[np.ndarray],
                   mask: np.ndarray | None) -> list[str]:
    """Why a person should look at this scan (none: no review needed).

    ``probs``: the ensemble's calibrated probabilities in ``CLASSES`` order; ``votes``: per classifier with
    a say, the class it picks and its share of the ensemble's weight; ``segmenter_masks``: the thresholded
    maps of the segmenters with a say; ``mask``: the ensemble's cleaned lesion mask, or None when no
    segmenter is shipped.
    """
    label = CLASSES[int(np.argmax(probs))]
    reasons = []
    against = dissent(label, votes)
    if outvoted(against):
        reasons.append(f"classifiers disagree: members with {against:.2f} of the weight pick another class ("
                       + ", ".join(f"{n} says {v}" for n, (v, _) in votes.items()) + ")")
    if not probs.max() >= MIN_CONFIDENCE:  # a non-finite output is unsure too
        reasons.append(f"ensemble unsure: top probability {probs.max():.2f} < {MIN_CONFIDENCE}")
    if len(segmenter_masks) > 1:
        pairs = [dice_iou(a, b)[0] for i, a in enumerate(segmenter_masks) for b in segmenter_masks[i + 1:]]
        if np.mean(pairs) < MIN_SEGMENTER_AGREEMENT:
            reasons.append(f"segmenters disagree: mean pairwise Dice {np.mean(pairs):.2f} < {MIN_SEGMENTER_AGREEMENT}")
    if mask is not None and label == "normal" and mask.any():
        reasons.append("called normal, yet a lesion is segmented")
    elif mask is not None and label != "normal" and not mask.any():
        reasons.append(f"called {label}, yet no lesion is segmented")
    return reasons
