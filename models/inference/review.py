"""The review flag: why a person should look at a scan. The analysis and the evaluation share this rule,
so that what the evaluation reports about the flag is what the app shows."""
from __future__ import annotations

import numpy as np

from models.data.masks import dice_iou
from models.data.records import CLASSES

# When to ask a person to look: the ensemble is unsure, its members disagree, or its mask contradicts its call.
MIN_CONFIDENCE = 0.6
MIN_SEGMENTER_AGREEMENT = 0.7  # mean pairwise Dice of the masks of the segmenters with a say


def review_reasons(probs: np.ndarray, votes: dict[str, str], segmenter_masks: list[np.ndarray],
                   mask: np.ndarray | None) -> list[str]:
    """Why a person should look at this scan (none: no review needed).

    ``probs``: the ensemble's calibrated probabilities in ``CLASSES`` order; ``votes``: the class each
    classifier with a say picks; ``segmenter_masks``: the thresholded maps of the segmenters with a
    say; ``mask``: the ensemble's cleaned lesion mask, or None when no segmenter is shipped.
    """
    label = CLASSES[int(np.argmax(probs))]
    reasons = []
    if len(set(votes.values())) > 1:
        reasons.append("classifiers disagree: " + ", ".join(f"{n} says {v}" for n, v in votes.items()))
    if probs.max() < MIN_CONFIDENCE:
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
