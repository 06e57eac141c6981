"""Would the segmenters make a better normal-vs-lesion call than the classifiers? A measured lead, not adopted.

    python reports/empty_mask_normal.py   # predictions shared with reports/review_flag.py (runs/review/)

The rule studied: a scan whose ensemble mask is empty (after the fitted threshold and the clean-up) is called
normal, whatever the classifiers say. Per setting of `reports/review_flag.py` and source, it prints normal
and lesion recall with the classifiers' call and with the rule, the share of empty masks, and how well the
classifiers' p(normal) and the segmenters' peak lesion probability rank normal scans above lesion scans (AUC).
The validation rows decide; the test rows only report (`reports/cross_site.md`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "reports"))
from models.data.records import CLASSES  # noqa: E402
from models.inference.ensemble import Fusion  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.weights import Manifest  # noqa: E402
from review_flag import SETTINGS, TITLES, predictions  # noqa: E402

NORMAL = CLASSES.index("normal")


def recalls(pred: np.ndarray, normal: np.ndarray) -> str:
    """Normal recall (normal scans called normal) / lesion recall (lesion scans not called normal)."""
    normal_recall = f"{np.mean(pred[normal] == NORMAL):.3f}" if normal.any() else "—"
    return f"{normal_recall} / {np.mean(pred[~normal] != NORMAL):.3f}"


def auc(normal: np.ndarray, score: np.ndarray) -> str:
    return f"{roc_auc_score(normal, score):.3f}" if normal.any() and (~normal).any() else "—"


def rows(key: str) -> list[str]:
    folder = SETTINGS[key][0]
    p = predictions(key)
    fusion = Fusion.from_manifest(Manifest.read(REPO / folder))
    call = fusion.classify(p.logits)[1]
    lesion = fusion.segment(p.seg_probs)
    empty = np.array([not clean_mask(m > fusion.threshold).any() for m in lesion])
    peak = lesion.reshape(len(lesion), -1).max(1)
    rule = np.where(empty, NORMAL, call.argmax(1))
    out = []
    for source in sorted(set(p.sources)):
        at = np.asarray(p.sources) == source
        normal = p.labels[at] == NORMAL
        said, ruled = call.argmax(1)[at], rule[at]

        empty_normal = f"{empty[at][normal].mean():.0%}" if normal.any() else "—"
        out.append(f"| {TITLES[key]} | {source} | {at.sum()} ({normal.sum()}) | {recalls(said, normal)} | {recalls(ruled, normal)} "
                   f"| {empty_normal} / {empty[at][~normal].mean():.1%} | {auc(normal, call[at, NORMAL])} / {auc(normal, -peak[at])} |")
    return out


def main() -> int:
    print("| setting | source | scans (normal) | normal / lesion recall, classifiers | the same, empty mask -> normal "
          "| empty masks: normal / lesion scans | AUC normal vs lesion: p(normal) / -peak lesion prob. |")
    print("|---|---|---|---|---|---|---|")
    for key in SETTINGS:
        print("\n".join(rows(key)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
