"""Classification and segmentation metrics, with bootstrap intervals that resample groups.

Groups (patients, near-duplicates) are resampled whole, because images of one group are not
independent; resampling images would give intervals that are too narrow.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from models.data.masks import dice_iou
from models.data.records import CLASSES

MALIGNANT = "malignant"
NORMAL = "normal"
ECE_BINS = 15


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class ClassificationMetrics:
    class_names: tuple[str, ...]
    averaged_over: tuple[str, ...]  # classes that macro/weighted F1 average over
    n: int
    per_class: dict[str, dict[str, float]]  # precision, recall, f1, support, roc_auc
    confusion: list[list[int]]  # rows: true class, columns: predicted, in class_names order
    scores: dict[str, Interval]  # accuracy, macro_f1, weighted_f1, malignant_auc, ... ece

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SegmentationMetrics:
    n_lesion: int
    n_normal: int
    dice: list[float] = field(repr=False)  # per lesion image, input order
    iou: list[float] = field(repr=False)
    scores: dict[str, Interval] = field(default_factory=dict)  # dice_mean, dice_median, iou_*, fp_*

    def to_json(self) -> dict:
        return asdict(self)


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def _auc(y: np.ndarray, score: np.ndarray, k: int) -> float:
    positive = y == k
    return float(roc_auc_score(positive, score)) if 0 < positive.sum() < len(y) else math.nan


def _class_scores(y: np.ndarray, probs: np.ndarray, labels: list[int], malignant: int | None,
                  normal: int | None = None) -> dict[str, float]:
    pred = probs.argmax(axis=1)
    out = {
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, pred, labels=labels, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(y, probs),
    }
    if normal is not None:  # lesion or not: what screening needs, whatever the lesion's class
        is_normal, said_normal = y == normal, pred == normal
        out["normal_recall"] = float(said_normal[is_normal].mean()) if is_normal.any() else math.nan
        out["lesion_recall"] = float((~said_normal[~is_normal]).mean()) if (~is_normal).any() else math.nan
    if malignant is not None:
        is_mal, said_mal = y == malignant, pred == malignant
        out["malignant_auc"] = _auc(y, probs[:, malignant], malignant)
        out["malignant_sensitivity"] = float(said_mal[is_mal].mean()) if is_mal.any() else math.nan
        out["malignant_specificity"] = float((~said_mal[~is_mal]).mean()) if (~is_mal).any() else math.nan
    return out


def group_bootstrap(stat: Callable[[np.ndarray], dict[str, float]], groups: Sequence, n_boot: int,
                    seed: int) -> dict[str, np.ndarray]:
    """``stat`` over ``n_boot`` resamples of whole groups; ``stat`` takes item indices."""
    groups = np.asarray([str(g) for g in groups])
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for k, v in stat(idx).items():
            draws.setdefault(k, []).append(v)
    return {k: np.asarray(v, dtype=float) for k, v in draws.items()}


def _intervals(point: dict[str, float], draws: dict[str, np.ndarray], level: float) -> dict[str, Interval]:
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for k, v in point.items():
        d = draws.get(k, np.array([]))
        d = d[~np.isnan(d)]
        lo, hi = (np.percentile(d, lo_q), np.percentile(d, hi_q)) if len(d) else (math.nan, math.nan)
        out[k] = Interval(float(v), float(lo), float(hi))
    return out


def _resolve_groups(groups: Sequence | None, n: int) -> Sequence:
    if groups is None:
        return list(range(n))
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group ids for {n} items; give one group id per item")
    return groups


def _checked(probs: np.ndarray, y_true: Sequence[str], names: list[str]) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    unknown = sorted(set(y_true) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {names}")
    if probs.shape != (len(y_true), len(names)):
        raise ValueError(f"probabilities have shape {probs.shape}, expected ({len(y_true)}, {len(names)})")
    return probs


def _label_setup(y_true: Sequence[str], names: list[str], average_over: Sequence[str] | None):
    """(label indices, classes averaged over, their indices, malignant index or None, normal index or None)."""
    y = np.array([names.index(t) for t in y_true])
    avg = list(average_over) if average_over is not None else [n for n in names if n in set(y_true)]
    malignant = names.index(MALIGNANT) if MALIGNANT in names and MALIGNANT in set(y_true) else None
    normal = names.index(NORMAL) if NORMAL in names else None
    return y, avg, [names.index(n) for n in avg], malignant, normal


def classification_metrics(y_true: Sequence[str], probs: np.ndarray, class_names: Sequence[str] = CLASSES,
                           groups: Sequence | None = None, average_over: Sequence[str] | None = None,
                           n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> ClassificationMetrics:
    """Metrics of predicted class probabilities ``probs`` (n x classes) against labels ``y_true``.

    ``average_over`` names the classes that macro/weighted F1 average over (default: those present
    in ``y_true``; e.g. benign and malignant on BUS-BRA, which has no normal class). Predictions
    of any class still count: a BUS-BRA lesion called normal is an error.
    """
    names = list(class_names)
    probs = _checked(probs, y_true, names)
    y, avg, labels, malignant, normal = _label_setup(y_true, names, average_over)
    point = _class_scores(y, probs, labels, malignant, normal)
    draws = group_bootstrap(lambda i: _class_scores(y[i], probs[i], labels, malignant, normal),
                            _resolve_groups(groups, len(y)), n_boot, seed) if n_boot else {}
    pred = probs.argmax(axis=1)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=range(len(names)), zero_division=0)
    per_class = {n: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                     "support": int(sup[k]), "roc_auc": _auc(y, probs[:, k], k)} for k, n in enumerate(names)}
    cm = confusion_matrix(y, pred, labels=range(len(names))).tolist()
    return ClassificationMetrics(tuple(names), tuple(avg), len(y), per_class, cm, _intervals(point, draws, level))


def segmentation_metrics(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], groups: Sequence | None = None,
                         n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> SegmentationMetrics:
    """Dice / IoU on lesion images (truth not empty) and false-positive area on normal images.

    ``fp_area_mean`` is the mean fraction of a normal image's area predicted as lesion;
    ``fp_image_rate`` the fraction of normal images with any lesion pixel predicted (false lesions);
    ``empty_rate`` the fraction of lesion images with no lesion pixel predicted (missed lesions).
    """
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} truths")
    lesion = np.array([np.asarray(t, bool).any() for t in truths])
    di = np.array([dice_iou(p, t) for p, t in zip(preds, truths)]).reshape(-1, 2)
    fp = np.array([np.asarray(p, bool).mean() for p in preds])

    def scores(i: np.ndarray) -> dict[str, float]:
        les, nor = i[lesion[i]], i[~lesion[i]]
        out = {}
        if len(les):
            out |= {"dice_mean": di[les, 0].mean(), "dice_median": np.median(di[les, 0]),
                    "iou_mean": di[les, 1].mean(), "iou_median": np.median(di[les, 1]),
                    "empty_rate": (fp[les] == 0).mean()}  # lesion images left without any lesion pixel
        if len(nor):
            out |= {"fp_area_mean": fp[nor].mean(), "fp_image_rate": (fp[nor] > 0).mean()}
        return {k: float(v) for k, v in out.items()}

    all_idx = np.arange(len(truths))
    point = scores(all_idx)
    draws = group_bootstrap(scores, _resolve_groups(groups, len(truths)), n_boot, seed) if n_boot else {}
    return SegmentationMetrics(int(lesion.sum()), int((~lesion).sum()), di[lesion, 0].tolist(), di[lesion, 1].tolist(),
                               _intervals(point, draws, level))


def review_flag_metrics(correct: Sequence[bool], flagged: Sequence[bool], groups: Sequence | None = None,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Interval]:
    """Does the review flag single out the errors? The share of cases flagged, and the error rate of the
    flagged and of the unflagged cases (a useful flag: few flagged, most errors among them)."""
    correct, flagged = np.asarray(correct, bool), np.asarray(flagged, bool)
    if correct.shape != flagged.shape:
        raise ValueError(f"{len(correct)} outcomes for {len(flagged)} flags")

    def scores(i: np.ndarray) -> dict[str, float]:
        c, f = correct[i], flagged[i]
        return {"flagged_share": float(f.mean()),
                "error_flagged": float((~c[f]).mean()) if f.any() else math.nan,
                "error_unflagged": float((~c[~f]).mean()) if (~f).any() else math.nan}

    point = scores(np.arange(len(correct)))
    draws = group_bootstrap(scores, _resolve_groups(groups, len(correct)), n_boot, seed) if n_boot else {}
    return _intervals(point, draws, level)


def paired_class_differences(y_true: Sequence[str], base: np.ndarray, cand: np.ndarray,
                             class_names: Sequence[str] = CLASSES, groups: Sequence | None = None,
                             average_over: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                             level: float = 0.95) -> dict[str, Interval]:
    """``cand`` minus ``base`` (class probabilities of two models on the same cases) for every score of
    ``classification_metrics``, each interval from one group bootstrap shared by both; scores undefined on these
    cases (normal recall without a normal scan) are left out."""
    names = list(class_names)
    base, cand = _checked(base, y_true, names), _checked(cand, y_true, names)
    y, _, labels, malignant, normal = _label_setup(y_true, names, average_over)

    def diff(i: np.ndarray) -> dict[str, float]:
        a = _class_scores(y[i], base[i], labels, malignant, normal)
        return {k: v - a[k] for k, v in _class_scores(y[i], cand[i], labels, malignant, normal).items()}

    point = {k: v for k, v in diff(np.arange(len(y))).items() if not math.isnan(v)}
    draws = group_bootstrap(diff, _resolve_groups(groups, len(y)), n_boot, seed) if n_boot else {}
    return _intervals(point, draws, level)
