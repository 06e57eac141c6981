"""How the review flag's thresholds were chosen, and how well the flag singles out the scans the ensemble
gets wrong.

    python reports/review_flag.py   # writes reports/review_flag.md (predictions cached in runs/review/)

A scan is *wrong* when the ensemble's class is not the truth, when a lesion scan's cleaned mask has Dice
under 0.5 with the ground truth, or when a normal scan gets a lesion mask. The flag should fire on the
wrong scans and spare the others: each rule is scored by Youden's J (the share of wrong scans flagged minus
the share of right scans flagged), which does not depend on how many scans are wrong, so a site where the
ensemble errs more does not simply reward a flag that fires more.

Rules: top probability under c, or classifiers with a say holding at least d of the weight pick another
class, or the segmenters with a say agree less than s (mean pairwise Dice), or the call and the mask
contradict (always on: a lesion call with no mask, or a normal call with one, must be explained). The rule
shipped in `models/inference/review.py` must be the best of the grid by mean J over three validation
splits: the shipped ensemble's (both sources) and each cross-site direction's left-out source (the
weights of weights/cross_site.json, which never saw that source). The test splits only report.
"""
from __future__ import annotations

import itertools
import pickle
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.masks import dice_iou  # noqa: E402
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import CasePredictions, Fusion, predict_cases  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.inference.review import MAX_DISSENT, MIN_CONFIDENCE, MIN_SEGMENTER_AGREEMENT, TOLERANCE, dissent  # noqa: E402
from models.training.evaluate import review_flags  # noqa: E402
from models.weights import Manifest  # noqa: E402

CACHE = REPO / "runs" / "review"
# the cross-site folders of weights/cross_site.json: each trained without the source it is tested on
XSITE = {"busi": "runs/v25-ens-without-busi", "busbra": "runs/v25-ens-without-busbra"}
# name: (weights folder, split, sources); the first three choose the rule, the last three only report it
SETTINGS = {"val": ("weights", "val", ("busi", "busbra")),
            "xval_busi": (XSITE["busi"], "val", ("busi",)),
            "xval_busbra": (XSITE["busbra"], "val", ("busbra",)),
            "test": ("weights", "test", ("busi", "busbra")),
            "xtest_busi": (XSITE["busi"], "test", ("busi",)),
            "xtest_busbra": (XSITE["busbra"], "test", ("busbra",))}
CHOOSE = ("val", "xval_busi", "xval_busbra")
TITLES = {"val": "validation (shipped)", "xval_busi": "BUS-BRA -> BUSI, val", "xval_busbra": "BUSI -> BUS-BRA, val",
          "test": "test (shipped)", "xtest_busi": "BUS-BRA -> BUSI, test", "xtest_busbra": "BUSI -> BUS-BRA, test"}


def predictions(key: str) -> CasePredictions:
    """Every member's output for one setting, cached in runs/review/ under the weights' identity."""
    folder, split_name, sources = SETTINGS[key]
    manifest = Manifest.read(REPO / folder)
    path = CACHE / f"{key}.pkl"
    if path.is_file():
        identity, preds = pickle.loads(path.read_bytes())
        if identity == manifest.identity():
            return preds
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / "Dataset_BUSI_with_GT", d / "BUSBRA"], DEFAULT_SPLIT, progress=False)
    chosen = [c for c in split.select(cases, split_name) if c.source in sources]
    preds = predict_cases(manifest, chosen, split.groups, progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps((manifest.identity(), preds)))
    return preds


WRONG_DICE = 0.5  # a lesion mask under this Dice with the truth counts as wrong
GRID = {"c": (0.55, 0.6, 0.65, 0.7, 0.75), "d": (0.0, 0.25, 0.5, None), "s": (0.3, 0.4, 0.5, 0.6, 0.7, None)}
FORMER = (0.6, 0.0, 0.7)  # the rule before this study: any dissent among the classifiers with a say
SHIPPED = (MIN_CONFIDENCE, MAX_DISSENT, MIN_SEGMENTER_AGREEMENT)


def features(folder: str, p) -> dict[str, np.ndarray]:
    """Per scan: wrong or not, top probability, dissenting share, segmenters' agreement, contradiction."""
    fusion = Fusion.from_manifest(Manifest.read(REPO / folder))
    per_model, fused = fusion.classify(p.logits)
    seg_voters, lesion = fusion.seg_voters(p.seg_probs), fusion.segment(p.seg_probs)
    label = fused.argmax(1)
    f = {"class_wrong": label != p.labels, "top": fused.max(1), "dissent": [], "seg": [], "contra": [], "mask_wrong": []}
    for i in range(len(label)):
        votes = fusion.votes({m: q[i] for m, q in per_model.items()})
        f["dissent"].append(dissent(CLASSES[label[i]], votes))
        masks = [p.seg_probs[m][i] > fusion.threshold for m in seg_voters]
        pairs = [dice_iou(a, b)[0] for j, a in enumerate(masks) for b in masks[j + 1:]]
        f["seg"].append(np.mean(pairs) if pairs else 1.0)
        mask = clean_mask(lesion[i] > fusion.threshold)
        f["contra"].append(mask.any() if CLASSES[label[i]] == "normal" else not mask.any())
        f["mask_wrong"].append(dice_iou(mask, p.masks[i])[0] < WRONG_DICE if p.masks[i].any() else mask.any())
    f = {k: np.asarray(v) for k, v in f.items()}
    f["wrong"] = f["class_wrong"] | f["mask_wrong"]
    if not np.array_equal(flag(f, SHIPPED), review_flags(p, fusion, per_model, fused)):  # study the shipped rule
        raise RuntimeError(f"{folder}: the reasons rebuilt here no longer give the flag models/inference/review.py "
                           "raises; update features() to the rule")
    return f


Rule = tuple[float, float | None, float | None]  # confidence c; dissent d (0: any, None: never); agreement s


def dissent_fires(f: dict[str, np.ndarray], d: float | None) -> np.ndarray:
    if d is None:
        return np.zeros_like(f["contra"])
    if d == 0:  # any dissent at all
        return f["dissent"] > 0
    return f["dissent"] >= d - TOLERANCE  # as models/inference/review.py compares


def agreement_fires(f: dict[str, np.ndarray], s: float | None) -> np.ndarray:
    return np.zeros_like(f["contra"]) if s is None else f["seg"] < s


def flag(f: dict[str, np.ndarray], rule: Rule) -> np.ndarray:
    c, d, s = rule
    return ~(f["top"] >= c) | dissent_fires(f, d) | agreement_fires(f, s) | f["contra"]


def youden(fl: np.ndarray, wrong: np.ndarray) -> float:
    return float(fl[wrong].mean() - fl[~wrong].mean())


def cell(fl: np.ndarray, wrong: np.ndarray) -> str:
    flagged = f"{wrong[fl].mean():.2f}" if fl.any() else "—"
    return f"{fl.mean():.0%}; {flagged} / {wrong[~fl].mean():.2f}; {fl[wrong].mean():.0%}; J {youden(fl, wrong):.2f}"


def name(rule: Rule) -> str:
    c, d, s = rule
    dissent = {None: "never", 0.0: "any"}.get(d, f">= {d}")
    return f"< {c}; {dissent}; {'never' if s is None else f'< {s}'}"


def main() -> int:
    feats = {k: features(SETTINGS[k][0], predictions(k)) for k in SETTINGS}
    rules = list(itertools.product(*GRID.values()))
    score = {r: np.mean([youden(flag(feats[k], r), feats[k]["wrong"]) for k in CHOOSE]) for r in rules}
    best = max(score.values())
    if SHIPPED not in score:
        raise RuntimeError(f"models/inference/review.py ships {SHIPPED}, which is not on the grid {GRID}: add it")
    undefined = [k for k in CHOOSE if feats[k]["wrong"].all() or not feats[k]["wrong"].any()]
    if undefined:
        raise RuntimeError(f"{', '.join(undefined)}: every scan or none is wrong, so Youden's J is undefined; "
                           "check the weights folders in SETTINGS")
    if score[SHIPPED] < best - 1e-9:
        raise RuntimeError(f"models/inference/review.py ships {name(SHIPPED)} (mean J {score[SHIPPED]:.3f}), but "
                           f"{name(max(score, key=score.get))} scores {best:.3f}: update the thresholds there")
    head = "| | " + " | ".join(TITLES[k] for k in feats) + " |"
    sep = "|---|" + "---|" * len(feats)
    lines = ["# The review flag: how its thresholds were chosen, and whether it singles out the wrong scans", "",
             "Generated by `python reports/review_flag.py` (its docstring has the method). A scan is *wrong* when "
             "its class is wrong, its lesion mask has Dice under 0.5, or a normal scan gets a mask. Each cell: "
             "share of scans flagged; share wrong among the flagged / the unflagged; share of the wrong scans "
             "flagged; Youden's J (wrong scans flagged minus right scans flagged). The three validation columns "
             "choose; the three test columns only report.", "",
             "| setting | weights | scans | wrong | class wrong | mask wrong |", "|---|---|---|---|---|---|"]
    lines += [f"| {TITLES[k]} | `{SETTINGS[k][0]}` | {len(f['wrong'])} | {f['wrong'].mean():.2f} | "
              f"{f['class_wrong'].mean():.2f} | {f['mask_wrong'].mean():.2f} |" for k, f in feats.items()]
    for title, rule in (("The shipped rule", SHIPPED), ("The former rule", FORMER)):
        c, d, s = rule
        lines += ["", f"## {title}: {name(rule)} (mean J on validation {score[rule]:.3f}), per reason", "", head, sep]
        reasons = {f"ensemble unsure (top < {c})": lambda f: f["top"] < c,
                   f"classifiers disagree ({name(rule).split('; ')[1]} of the weight)": lambda f: dissent_fires(f, d),
                   f"segmenters disagree (Dice < {s})": lambda f: agreement_fires(f, s),
                   "call and mask contradict": lambda f: f["contra"]}
        for reason, fire in reasons.items():
            lines.append(f"| {reason} | " + " | ".join(cell(fire(f), f["wrong"]) for f in feats.values()) + " |")
        lines.append("| **any (the flag)** | " + " | ".join(cell(flag(f, rule), f["wrong"]) for f in feats.values()) + " |")
    lines += ["", "## The grid, best first by mean J on validation (top 12 and the former rule)", "",
              head.replace("| |", "| confidence; dissent; segmenters' Dice | mean J (val) |").replace(" |", " |", 1),
              "|---|---|" + "---|" * len(feats)]
    ranked = sorted(rules, key=lambda r: -score[r])
    for rule in ranked[:12] + ([FORMER] if FORMER not in ranked[:12] else []):
        tag = " (shipped)" if rule == SHIPPED else " (former)" if rule == FORMER else ""
        lines.append(f"| {name(rule)}{tag} | {score[rule]:.3f} | "
                     + " | ".join(cell(flag(f, rule), f["wrong"]) for f in feats.values()) + " |")
    (REPO / "reports" / "review_flag.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
