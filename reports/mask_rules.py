"""Three cheap rules for the ensemble's lesion mask, measured on the validation split; none adopted.

    python reports/mask_rules.py   # writes reports/mask_rules.md (predictions shared with reports/review_flag.py)

Every rule acts on the fused lesion probability at the scan's size, as the analysis does
(`models.inference.analysis`): threshold, then `clean_mask`.

1. The clean-up's speck rule: a blob under ``min_fraction`` of the largest is removed (shipped: 0.1); 1.0 keeps
   the largest blob only. "peak" and "mass" keep the one blob with the highest peak or summed probability.
2. A fallback for empty masks: when the mask is empty and the classifiers call a lesion, threshold again at a
   lower value (absolute, or a share of the scan's peak probability). #18 asks that a lesion scan not be left
   empty; the cost is masks on normal scans the classifiers miscall.
3. How much resolution the segmenters' maps lose: the truth itself, averaged down to a grid of side/f and
   back (bilinear, > 0.5), against the truth. SegFormer-B0 predicts at a quarter of its 160 px input.

Mean lesion Dice on lesion scans (a missed lesion scores 0), the share of lesion scans left empty, and the
share of normal scans given a mask. Validation only: the one-source ensembles of the cross-site settings
are not kept on this machine, and the test split does not choose.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "reports"))
from models.data.images import load_gray, load_mask  # noqa: E402
from models.data.masks import dice_iou  # noqa: E402
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import Fusion  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.preprocess import resize_map, resize_mask  # noqa: E402
from models.weights import Manifest  # noqa: E402
from models.zoo import get_spec  # noqa: E402
from review_flag import SETTINGS, predictions  # noqa: E402

NORMAL = CLASSES.index("normal")
SETTING = "val"


def one_blob(score):
    """Keep the blob of the cleaned mask with the highest ``score(probabilities in the blob)``."""
    def rule(mask: np.ndarray, prob: np.ndarray) -> np.ndarray:
        mask = clean_mask(mask, min_fraction=0.0)
        n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if n <= 2:
            return mask
        return labels == 1 + int(np.argmax([score(prob[labels == k]) for k in range(1, n)]))
    return rule


CLEAN_RULES = {"none (threshold only)": lambda m, p: m,
               **{f"min_fraction {f}" + (" (shipped)" if f == 0.1 else ""):
                  (lambda f: lambda m, p: clean_mask(m, min_fraction=f))(f) for f in (0.1, 0.2, 0.3, 0.5, 1.0)},
               "the blob with the highest peak": one_blob(np.max),
               "the blob with the most probability": one_blob(np.sum)}
# the second threshold, from the scan's lesion probabilities; None: no fallback
FALLBACKS = {"none (shipped)": None,
             **{f"threshold {t}": (lambda t: lambda prob: t)(t) for t in (0.45, 0.35, 0.25, 0.15)},
             **{f"threshold {s} of peak": (lambda s: lambda prob: s * prob.max())(s) for s in (0.7, 0.5)}}
SEGFORMER = "segformer_b0"  # the segmenter whose output grid is a quarter of its input


def scores(masks: list[np.ndarray], truths: list[np.ndarray]) -> tuple[float, float, float]:
    """(mean lesion Dice, lesion scans left empty, normal scans with a mask)."""
    lesion = [i for i, t in enumerate(truths) if t.any()]
    normal = [i for i, t in enumerate(truths) if not t.any()]
    dice = float(np.mean([dice_iou(masks[i], truths[i])[0] for i in lesion]))
    empty = float(np.mean([not masks[i].any() for i in lesion]))
    false = float(np.mean([masks[i].any() for i in normal])) if normal else float("nan")
    return dice, empty, false


def row(name: str, values: tuple[float, float, float]) -> str:
    dice, empty, false = values
    return f"| {name} | {dice:.4f} | {100 * empty:.1f}% | " + ("—" if np.isnan(false) else f"{100 * false:.1f}%") + " |"


def main() -> int:
    folder, split_name, sources = SETTINGS[SETTING]
    manifest = Manifest.read(REPO / folder)
    fusion = Fusion.from_manifest(manifest)
    preds = predictions(SETTING)
    split, cases = load_verified([DEFAULT_DATA_DIR / "Dataset_BUSI_with_GT", DEFAULT_DATA_DIR / "BUSBRA"],
                                 DEFAULT_SPLIT, progress=False)
    by_id = {c.case_id: c for c in split.select(cases, split_name)}
    truths = [load_mask(by_id[i].mask_paths, load_gray(by_id[i].image_path).shape) for i in preds.case_ids]
    lesion = fusion.segment(preds.seg_probs)
    probs = [resize_map(lesion[i], t.shape) for i, t in enumerate(truths)]
    call = fusion.classify(preds.logits)[1].argmax(axis=1)
    out = ["# Three rules for the ensemble's lesion mask (validation split; none adopted)", "",
           f"Made by `python reports/mask_rules.py` with the shipped weights (threshold {fusion.threshold}); method: "
           "the script's docstring. Dice on lesion scans at the scan's size; 'empty': lesion scans with no mask; "
           "'false': normal scans given a mask.", ""]
    for source in sorted(set(preds.sources)):
        idx = [i for i, s in enumerate(preds.sources) if s == source]
        t = [truths[i] for i in idx]
        out += [f"## {source} validation ({len(idx)} scans, {sum(not x.any() for x in t)} normal)", "",
                "| clean-up rule | mean lesion Dice | empty | false |", "|---|---|---|---|"]
        for name, rule in CLEAN_RULES.items():
            out.append(row(name, scores([rule(probs[i] > fusion.threshold, probs[i]) for i in idx], t)))
        out += ["", "| fallback when the mask is empty and the call is a lesion | mean lesion Dice | empty | false |",
                "|---|---|---|---|"]
        for name, second in FALLBACKS.items():
            masks = []
            for i in idx:
                mask = clean_mask(probs[i] > fusion.threshold)
                if second is not None and not mask.any() and call[i] != NORMAL:
                    mask = clean_mask(probs[i] > second(probs[i]))
                masks.append(mask)
            out.append(row(name, scores(masks, t)))
        out += ["", "| the truth through a coarser grid (side / f) | Dice with itself at full size: mean | lowest |",
                "|---|---|---|"]
        size = get_spec(SEGFORMER).input_size
        lesions = [resize_mask(x, size) for x in t if x.any()]  # the truth at SegFormer's input
        for f in (4, 2):
            d = [dice_iou(coarse(m, f), m)[0] for m in lesions]
            out.append(f"| f = {f} ({size // f} px at {size} px) | {np.mean(d):.4f} | {np.min(d):.4f} |")
        out.append("")
    path = REPO / "reports" / "mask_rules.md"
    path.write_text("\n".join(out))
    print(path.read_text())
    return 0


def coarse(mask: np.ndarray, f: int) -> np.ndarray:
    side = mask.shape[0]
    small = cv2.resize(mask.astype(np.float32), (side // f, side // f), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR) > 0.5


if __name__ == "__main__":
    sys.exit(main())
