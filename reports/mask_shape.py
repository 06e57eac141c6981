"""Mask-aware malignancy: does the lesion's outline, beside the classifiers, tell malignant from benign on a
scanner the models never saw? (#17, "mask-aware classification"; results in `reports/mask_shape.md`.)

    python reports/mask_shape.py      # about 40 minutes on the 2 cores; writes reports/mask_shape.md
    python reports/mask_shape.py --replicates s0=runs/shape-without-busbra s1=runs/scanner-s1-without-busbra \
        --segmenters runs/shape-without-busbra runs/unet-s1-without-busbra
        # BUSI -> BUS-BRA only, over Lite0 and U-Net runs on BUSI; writes reports/mask_shape_replicates.md

BI-RADS reads malignancy partly from the outline: irregular shape, margins that are not circumscribed, a lesion
taller than wide. The features are the analysis's own measurements (``models.inference.measure``, in pixels) of
the largest lesion in the cleaned mask at the scan's own size: log area as a share of the scan, log
depth-to-width, circularity, margin irregularity, log elongation (longest over perpendicular diameter) and log
component count. A logistic regression on them (standardised, C = 1) gives q_shape = p(malignant | lesion).

It joins the classifiers on lesion scans only: logit q = logit q_classifiers + w * logit q_shape, where q is
p(malignant) among lesions; p(normal) stays the classifiers', and a scan without a mask keeps their q.

Two settings, each on the committed split:
- **in-domain**: the shipped weights on both sources' validation split (``review_flag.predictions``'s cache):
  the ensemble's calibrated probabilities and fused mask; the shape model learns from both train splits.
- **across sites, A -> B**: EfficientNet-Lite0 (and, from BUSI, Lite0 + VGG19, their softmax averaged) and the
  U-Net (Lite0 encoder) trained on source A alone (``RUNS``; the commands are in ``reports/cross_site.md``); the
  shape model learns from A's train split; A's validation split chooses w, B's validation split is the
  cross-site check, B's test split only reports.

The shape model learns either from the annotators' masks or from the segmenter's own masks of the same train
scans (what it meets in use); both are reported. AUCs are over every scan of a split (normal scans included),
as everywhere in the project; differences are paired, 95% group bootstrap (1000 draws).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "reports"))
from models.data.images import image_size, load_mask  # noqa: E402
from models.data.records import CLASSES, Case  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import Fusion, run_model, softmax  # noqa: E402
from models.inference.measure import measure  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.preprocess import decode_cases, resize_map  # noqa: E402
from models.training.metrics import Interval, classification_metrics, paired_class_differences  # noqa: E402
from models.weights import Manifest  # noqa: E402
from models.zoo import get_spec  # noqa: E402

NORMAL, BENIGN, MALIGNANT = (CLASSES.index(c) for c in ("normal", "benign", "malignant"))
WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # w, the shape model's share beside the classifiers
FEATURES = ("log area share", "log depth/width", "circularity", "margin irregularity", "log elongation",
            "log components")
SEGMENTER = "unet_lite0"  # the one-source segmenter of the cross-site setting
CLASSIFIER_SETS = {"busbra": (("efficientnet_lite0",),),  # trained on the key alone; a set's softmax is averaged
                   "busi": (("efficientnet_lite0",), ("efficientnet_lite0", "vgg19"))}
SHORT = {"efficientnet_lite0": "Lite0", "vgg19": "VGG19"}
RUNS = {"busbra": "runs/shape-without-busi", "busi": "runs/shape-without-busbra"}  # trained on the key alone
OTHER = {"busi": "busbra", "busbra": "busi"}
OUT = REPO / "reports" / "mask_shape.md"
REPLICATES_OUT = REPO / "reports" / "mask_shape_replicates.md"


def shape_features(mask: np.ndarray) -> list[float] | None:
    """The six outline features of the mask's largest lesion; None for an empty mask."""
    m = measure(mask)
    if m is None:
        return None
    elongation = m.longest_diameter / max(m.perpendicular_diameter, 1.0)
    return [np.log(m.area / mask.size), np.log(m.depth_to_width), m.circularity,
            m.margin_irregularity, np.log(elongation), np.log(m.components)]


def at_scan_size(prob: np.ndarray, case: Case, threshold: float) -> np.ndarray:
    """A model-size lesion map as the analysis turns it into a mask: resized to the scan, thresholded, cleaned."""
    width, height = image_size(case.image_path)
    return clean_mask(resize_map(prob, (height, width)) > threshold)


def truth_masks(cases: Sequence[Case]) -> list[np.ndarray]:
    out = []
    for case in cases:
        width, height = image_size(case.image_path)
        out.append(load_mask(case.mask_paths, (height, width)))
    return out


def feature_table(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Features of every non-empty mask (rows) and which masks they are."""
    rows = [shape_features(m) for m in masks]
    have = np.array([r is not None for r in rows], bool)
    return np.array([r for r in rows if r is not None]).reshape(-1, len(FEATURES)), have


@dataclass(frozen=True)
class Setting:
    """One split: each classifier set's probabilities, the outline features of the predicted masks and of the
    annotators' masks (each as ``feature_table`` gives them), labels and groups."""

    probs: dict[str, np.ndarray]  # classifier set -> (N, classes); empty for a train split
    predicted: tuple[np.ndarray, np.ndarray]
    truth: tuple[np.ndarray, np.ndarray]
    labels: np.ndarray
    groups: Sequence

    @classmethod
    def of(cls, probs: dict[str, np.ndarray], masks: Sequence[np.ndarray], cases: Sequence[Case],
           groups: Sequence) -> Setting:
        return cls(probs, feature_table(masks), feature_table(truth_masks(cases)),
                   np.array([CLASSES.index(c.label) for c in cases]), groups)


def lesions_with_mask(features: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features of lesion scans with a mask, and whether each is malignant."""
    X, have = features
    lesion = labels[have] != NORMAL
    return X[lesion], labels[have][lesion] == MALIGNANT


def fit_shape(features: tuple[np.ndarray, np.ndarray], labels: np.ndarray):
    """The shape model from lesion scans' masks (normal scans and empty masks are skipped)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(
        *lesions_with_mask(features, labels))


def clipped_logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, 1e-6, 1 - 1e-6))


def combine(probs: np.ndarray, features: tuple[np.ndarray, np.ndarray], shape_model, w: float) -> np.ndarray:
    """The classifiers' 3-class probabilities with p(malignant | lesion) moved by the shape model's logit, on the
    scans with a mask (``features`` as ``feature_table`` gives them)."""
    out = probs.copy()
    X, have = features
    if w == 0 or not have.any():
        return out
    lesion = 1 - probs[have, NORMAL]
    q = probs[have, MALIGNANT] / np.maximum(lesion, 1e-9)
    q = expit(clipped_logit(q) + w * clipped_logit(shape_model.predict_proba(X)[:, 1]))
    out[have, MALIGNANT], out[have, BENIGN] = lesion * q, lesion * (1 - q)
    return out


def shape_auc(features: tuple[np.ndarray, np.ndarray], labels: np.ndarray, shape_model) -> str:
    """AUC of q_shape for malignant among lesion scans with a mask, and how many lesion scans had none."""
    X, y = lesions_with_mask(features, labels)
    return (f"{roc_auc_score(y, shape_model.predict_proba(X)[:, 1]):.3f} "
            f"({(labels != NORMAL).sum() - len(y)} of {(labels != NORMAL).sum()} without)")


def auc(probs: np.ndarray, labels: np.ndarray, groups, n_boot: int = 1000) -> Interval:
    return classification_metrics([CLASSES[k] for k in labels], probs, groups=groups, n_boot=n_boot
                                  ).scores["malignant_auc"]


def paired(base: np.ndarray, cand: np.ndarray, labels: np.ndarray, groups) -> tuple[Interval, Interval]:
    d = paired_class_differences([CLASSES[k] for k in labels], base, cand, groups=groups,
                                 average_over=[CLASSES[k] for k in sorted(set(labels))])
    return d["malignant_auc"], d["macro_f1"]


def decoded_once(cases: Sequence[Case], models: Sequence[str], groups: dict[str, str]) -> dict[int, object]:
    """``decode_cases`` once per input size that ``models`` need."""
    sizes = dict.fromkeys(get_spec(name).input_size for name in models)
    return {size: decode_cases(cases, size, groups, False) for size in sizes}


def one_source(split, cases: list[Case], trained_on: str, replicates: dict[str, str] | None = None,
               segmenter_run: str | None = None) -> dict[str, Setting]:
    """The one-source members' outputs on the direction's splits: each classifier set's mean softmax, and the
    U-Net's masks at 0.5 (its train split too, for the shape model). ``replicates`` (label -> run folder) puts
    other Lite0 runs on the same source in place of the classifier sets, one set each; ``segmenter_run`` another
    U-Net run on the same source in place of ``RUNS``'s."""
    from erased_normals import load
    folder = REPO / RUNS[trained_on]
    seg_spec = get_spec(SEGMENTER)
    segmenter = load(SEGMENTER, REPO / (segmenter_run or RUNS[trained_on]))
    if replicates:
        classifiers = {label: load("efficientnet_lite0", REPO / run) for label, run in replicates.items()}
        spec_of, sets = {label: "efficientnet_lite0" for label in replicates}, {label: (label,) for label in replicates}
    else:
        classifiers = {name: load(name, folder) for name in dict.fromkeys(n for s in CLASSIFIER_SETS[trained_on] for n in s)}
        spec_of = {name: name for name in classifiers}
        sets = {" + ".join(SHORT[n] for n in s): s for s in CLASSIFIER_SETS[trained_on]}
    other = OTHER[trained_on]
    settings = {}
    for source, part in ((trained_on, "val"), (other, "val"), (other, "test"), (trained_on, "train")):
        chosen = split.select([c for c in cases if c.source == source], part)
        scans = decoded_once(chosen, [SEGMENTER, *spec_of.values()], split.groups)
        seg_arrays = scans[seg_spec.input_size]
        masks = [at_scan_size(p, c, 0.5) for p, c in zip(run_model(segmenter, seg_spec, seg_arrays.images), chosen)]
        probs = {}
        if part != "train":
            each = {n: softmax(run_model(net, get_spec(spec_of[n]), scans[get_spec(spec_of[n]).input_size].images))
                    for n, net in classifiers.items()}
            probs = {label: np.mean([each[n] for n in members], 0) for label, members in sets.items()}
        settings[f"{source} {part}"] = Setting.of(probs, masks, chosen, seg_arrays.groups)
    return settings


def shipped_in_domain(split, cases: list[Case]) -> dict[str, Setting]:
    """The shipped ensemble on each source's validation split, and its fused masks of both train splits."""
    from review_flag import predictions
    manifest = Manifest.read(REPO / "weights")
    fusion = Fusion.from_manifest(manifest)
    p = predictions("val")
    _, fused = fusion.classify(p.logits)
    lesion = fusion.segment(p.seg_probs)
    by_id = {c.case_id: c for c in cases}
    settings = {}
    for source in ("busi", "busbra"):
        idx = [i for i, s in enumerate(p.sources) if s == source]
        chosen = [by_id[p.case_ids[i]] for i in idx]
        masks = [at_scan_size(lesion[i], c, fusion.threshold) for i, c in zip(idx, chosen)]
        settings[f"{source} val"] = Setting.of({"shipped ensemble": fused[idx]}, masks, chosen,
                                               [p.groups[i] for i in idx])
    train = split.select(cases, "train")
    voters = fusion.seg_voters(manifest.shipped("segment"))
    scans = decoded_once(train, voters, split.groups)
    maps = {name: run_model(manifest.load(name), get_spec(name), scans[get_spec(name).input_size].images)
            for name in voters}
    masks = [at_scan_size(m, c, fusion.threshold) for m, c in zip(fusion.segment(maps), train)]
    settings["both train"] = Setting.of({}, masks, train, next(iter(scans.values())).groups)
    return settings


def report_direction(title: str, settings: dict[str, Setting], train_key: str, choose: Sequence[str],
                     show: Sequence[str], from_annotators: bool = True) -> list[str]:
    """A direction's tables; ``from_annotators=False`` leaves out the shape model learnt from annotators' masks."""
    train = settings[train_key]
    models = {"annotators' masks": fit_shape(train.truth, train.labels)} if from_annotators else {}
    models["the segmenter's masks"] = fit_shape(train.predicted, train.labels)
    lines = [f"### {title}", "",
             "The shape model alone: AUC of q_shape, malignant vs benign, over lesion scans with a mask.", "",
             "| shape model learnt from | " + " | ".join(f"{k}, predicted masks" for k in show) + " | "
             + " | ".join(f"{k}, annotators' masks (not available in use)" for k in show) + " |",
             "|---|" + "---|" * (2 * len(show))]
    for label, model in models.items():
        lines.append(f"| {label} | " + " | ".join(shape_auc(settings[k].predicted, settings[k].labels, model)
                                                  for k in show)
                     + " | " + " | ".join(shape_auc(settings[k].truth, settings[k].labels, model) for k in show) + " |")
    lines += ["", "Beside the classifiers (predicted masks): malignant AUC [95% CI] at each w; the paired difference "
              "from w = 0 in malignant AUC and macro-F1. The chosen w has the best mean malignant AUC over "
              + ", ".join(choose) + ".", "",
              "| classifiers | shape model learnt from | w | " + " | ".join(f"{k}: AUC; ΔAUC; Δmacro-F1" for k in show)
              + " |", "|---|---|---|" + "---|" * len(show)]
    for classifiers in settings[show[0]].probs:
        for label, model in models.items():
            mean_auc = {w: np.mean([auc(combine(settings[c].probs[classifiers], settings[c].predicted, model, w),
                                        settings[c].labels, None, n_boot=0).value for c in choose]) for w in WEIGHTS}
            best = max(WEIGHTS, key=lambda w: (round(mean_auc[w], 4), -w))
            for w in WEIGHTS:
                cells = []
                for k in show:
                    s = settings[k]
                    base = s.probs[classifiers]
                    cand = combine(base, s.predicted, model, w)
                    d_auc, d_f1 = paired(base, cand, s.labels, s.groups) if w else ("—", "—")
                    cells.append(f"{auc(cand, s.labels, s.groups)}; {d_auc}; {d_f1}")
                mark = " (chosen)" if w == best else ""
                lines.append(f"| {classifiers} | {label} | {w}{mark} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicates", nargs="+", metavar="LABEL=RUN",
                    help="only BUSI -> BUS-BRA, with these Lite0 runs on BUSI alone in place of the classifier sets "
                         f"(does the outline's gain hold over training seeds and recipes?); writes {REPLICATES_OUT.name}")
    ap.add_argument("--segmenters", nargs="+", metavar="RUN",
                    help="with --replicates: U-Net runs on BUSI alone, a section each (default: the one of "
                         f"{RUNS['busi']})")
    args = ap.parse_args(argv)
    if args.segmenters and not args.replicates:
        ap.error("--segmenters goes with --replicates: add --replicates LABEL=RUN ... (Lite0 runs on BUSI alone)")
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / "Dataset_BUSI_with_GT", d / "BUSBRA"], DEFAULT_SPLIT, progress=False)
    out = REPLICATES_OUT if args.replicates else OUT
    command = "python reports/mask_shape.py" + (" --replicates " + " ".join(args.replicates) if args.replicates else "")
    command += f" --segmenters {' '.join(args.segmenters)}" if args.segmenters else ""
    lines = ["# Mask-aware malignancy: the lesion outline beside the classifiers"
             + (", over Lite0 replicates" if args.replicates else ""), "",
             f"Generated by `{command}`; the method is in its docstring. Split "
             f"`splits/split.json`, fingerprints {', '.join(f'{k} `{v[:12]}`' for k, v in split.fingerprints.items())}.",
             ""]
    if args.replicates:
        replicates = dict(r.split("=", 1) for r in args.replicates)
        for run in args.segmenters or [RUNS["busi"]]:
            lines += report_direction(f"Across sites: busi -> busbra (the U-Net of `{run}`; Lite0 replicates)",
                                      one_source(split, cases, "busi", replicates, run), "busi train",
                                      choose=("busi val",), show=("busi val", "busbra val", "busbra test"),
                                      from_annotators=False)
    else:
        settings = shipped_in_domain(split, cases)
        lines += report_direction("In-domain: the shipped ensemble, validation", settings, "both train",
                                  choose=("busi val", "busbra val"), show=("busi val", "busbra val"))
        for source in ("busbra", "busi"):
            other = OTHER[source]
            lines += report_direction(f"Across sites: {source} -> {other} (trained on {source} alone, `{RUNS[source]}`)",
                                      one_source(split, cases, source), f"{source} train", choose=(f"{source} val",),
                                      show=(f"{source} val", f"{other} val", f"{other} test"))
    out.write_text("\n".join(lines))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
