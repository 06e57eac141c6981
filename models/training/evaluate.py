"""Evaluation: ``sonomark evaluate [--data DIR...] [--split-name test]``.

Every shipped model and the ensemble, on each dataset's cases of the committed split's test part:
classification metrics (macro-F1 over the classes the dataset has), and segmentation metrics with
Dice at the scan's original resolution; 95% intervals resample groups (patients, near-duplicates).
Writes ``weights/metrics.json`` and PNG plots in ``weights/plots/`` (another split: ``metrics_SPLIT.json``
and ``plots/SPLIT/``, so the shipped test report is never overwritten); every number names the split
and the dataset's fingerprint. The plots include a gallery of the lesion images with the lowest Dice.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from models.data.masks import dice_iou
from models.data.records import CLASSES, Case
from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, SPLITS, load_verified
from models.inference.ensemble import ENSEMBLE, CasePredictions, Fusion, predict_cases
from models.inference.overlay import overlay_mask
from models.inference.postprocess import clean_mask
from models.inference.review import review_reasons
from models.preprocess import read_case, to_scan
from models.training.floors import FLOORS
from models.training.metrics import (
    ClassificationMetrics,
    Interval,
    SegmentationMetrics,
    classification_metrics,
    review_flag_metrics,
    segmentation_metrics,
)
from models.training.model_card import CROSS_SITE, cross_site_file
from models.training.model_card import write as write_card
from models.weights import WEIGHTS_DIR, Manifest


@dataclass(frozen=True)
class DatasetEvaluation:
    source: str
    split: str
    fingerprint: str
    n_cases: int
    classification: dict[str, ClassificationMetrics]  # model name or "ensemble"
    segmentation: dict[str, SegmentationMetrics]
    weights: dict = field(default_factory=dict)  # Manifest.identity() of the weights evaluated
    review: dict[str, Interval] = field(default_factory=dict)  # does the ensemble's review flag single out errors
    cases: dict[str, CaseOutput] = field(default_factory=dict)  # case id -> the ensemble's answer on it

    def to_json(self) -> dict:
        return {"split": self.split, "fingerprint": self.fingerprint, "n_cases": self.n_cases, "weights": self.weights,
                "review": {k: v.__dict__ for k, v in self.review.items()},
                "cases": {k: asdict(v) for k, v in self.cases.items()},
                "classification": {k: v.to_json() for k, v in self.classification.items()},
                "segmentation": {k: v.to_json() for k, v in self.segmentation.items()}}

    def ensemble_scores(self) -> dict[str, float]:
        out = {}
        if ENSEMBLE in self.classification:
            s = self.classification[ENSEMBLE].scores
            out |= {k: s[k].value for k in ("macro_f1", "malignant_auc") if k in s}
        if ENSEMBLE in self.segmentation:
            out["dice_mean"] = self.segmentation[ENSEMBLE].scores["dice_mean"].value
        return out


@dataclass(frozen=True)
class CaseOutput:
    """The ensemble's answer on one case, as recorded in ``metrics.json``: so that a run on a few of the cases
    can show the code and weights still give the recorded numbers (``tests/zoo``) without redoing them all."""
    probs: list[float] | None  # calibrated, in CLASSES order (6 decimals: ties would move an AUC)
    mask_share: float | None  # the scan's area in the ensemble's mask
    dice: float | None  # against the truth, lesion scans only


def case_outputs(preds: CasePredictions, fused: np.ndarray | None, masks: list[np.ndarray] | None,
                 truths: list[np.ndarray] | None) -> dict[str, CaseOutput]:
    out = {}
    for i, case_id in enumerate(preds.case_ids):
        probs = [round(float(p), 6) for p in fused[i]] if fused is not None else None
        share = dice = None
        if masks is not None:
            share = round(float(masks[i].mean()), 6)
            dice = round(float(dice_iou(masks[i], truths[i])[0]), 4) if truths[i].any() else None
        out[case_id] = CaseOutput(probs, share, dice)
    return out


def evaluate_dataset(cases: list[Case], preds: CasePredictions, fusion: Fusion, split: str, fingerprint: str,
                     n_boot: int = 1000, seg_threshold_per_model: float = 0.5) -> DatasetEvaluation:
    y = [CLASSES[k] for k in preds.labels]
    present = [c for c in CLASSES if c in set(y)]
    groups = list(preds.groups)
    cls: dict[str, ClassificationMetrics] = {}
    fused = truths = fused_masks = None
    if preds.logits:
        per_model, fused = fusion.classify(preds.logits, preds.grade_logits)
        for name, probs in {**per_model, ENSEMBLE: fused}.items():
            cls[name] = classification_metrics(y, probs, groups=groups, average_over=present, n_boot=n_boot)
        cls.update(grader_metrics(preds, fusion, n_boot))
    seg: dict[str, SegmentationMetrics] = {}
    if preds.seg_probs:
        truths = [read_case(c)[1] for c in cases]  # at the size the models read: a framed case's region
        maps = {**preds.seg_probs, ENSEMBLE: fusion.segment(preds.seg_probs)}
        for name, prob in maps.items():
            t = fusion.threshold if name == ENSEMBLE else seg_threshold_per_model
            masks = [to_scan(p, m.shape, preds.seg_fit) > t for p, m in zip(prob, truths)]
            seg[name] = segmentation_metrics(masks, truths, groups=groups, n_boot=n_boot)
            if name == ENSEMBLE:
                fused_masks = masks
    review = {}
    if preds.logits:
        flagged = review_flags(preds, fusion, per_model, fused)
        correct = fused.argmax(axis=1) == preds.labels
        review = review_flag_metrics(correct, flagged, groups=groups, n_boot=n_boot)
    return DatasetEvaluation(cases[0].source, split, fingerprint, len(cases), cls, seg, review=review,
                             cases=case_outputs(preds, fused, fused_masks, truths))


def grader_metrics(preds: CasePredictions, fusion: Fusion, n_boot: int) -> dict[str, ClassificationMetrics]:
    """Each lesion grader alone, benign vs malignant on the lesion scans whose ensemble mask it read (its normal
    probability 0: it makes no normal call)."""
    pair = [CLASSES.index("benign"), CLASSES.index("malignant")]
    out = {}
    for name, logits in preds.grade_logits.items():
        read = np.flatnonzero(np.isin(preds.labels, pair) & ~np.isnan(logits).any(1))
        if len({int(preds.labels[i]) for i in read}) < 2:
            continue
        probs = np.zeros((len(read), len(CLASSES)))
        probs[:, pair] = fusion.lesion_grade({name: logits[read]})
        out[name] = classification_metrics([CLASSES[preds.labels[i]] for i in read], probs,
                                           groups=[preds.groups[i] for i in read],
                                           average_over=[CLASSES[k] for k in pair], n_boot=n_boot)
    return out


def review_flags(preds: CasePredictions, fusion: Fusion, per_model: dict[str, np.ndarray],
                 fused: np.ndarray) -> np.ndarray:
    """Whether the analysis would flag each case for review: its own rule (``review_reasons``) on the
    calibrated probabilities (``fusion.classify``) and the segmenters' maps, with masks at the segmenters'
    input size rather than the scan's."""
    seg_voters = fusion.seg_voters(preds.seg_probs)
    lesion = fusion.segment(preds.seg_probs) if preds.seg_probs else None
    flags = []
    for i in range(len(preds.labels)):
        votes = fusion.votes({n: p[i] for n, p in per_model.items()})
        masks = [preds.seg_probs[n][i] > fusion.threshold for n in seg_voters]
        mask = clean_mask(lesion[i] > fusion.threshold) if lesion is not None else None
        flags.append(bool(review_reasons(fused[i], votes, masks, mask)))
    return np.array(flags, bool)


WORST_SHOWN = 8  # lesion images in the worst-cases gallery


def worst_cases(cases: list[Case], preds: CasePredictions, fusion: Fusion, n: int = WORST_SHOWN) -> list[tuple[float, int]]:
    """(Dice, case index) of the ``n`` lesion images where the ensemble's mask is worst, Dice at the scan's size."""
    fused = fusion.segment(preds.seg_probs)
    scored = []
    for i, case in enumerate(cases):
        if not preds.masks[i].any():
            continue
        truth = read_case(case)[1]
        scored.append((dice_iou(to_scan(fused[i], truth.shape, preds.seg_fit) > fusion.threshold, truth)[0], i))
    return sorted(scored)[:n]


def worst_gallery(cases: list[Case], preds: CasePredictions, fusion: Fusion, title: str, path: Path) -> Path:
    """A grid of the worst lesion images: ground truth in green, the ensemble's mask in red."""
    import matplotlib.pyplot as plt

    fused = fusion.segment(preds.seg_probs)
    worst = worst_cases(cases, preds, fusion)
    cols = 4
    rows = max(1, -(-len(worst) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (dice, i) in zip(axes.flat, worst):
        scan, truth = read_case(cases[i])
        pred = to_scan(fused[i], scan.shape, preds.seg_fit) > fusion.threshold
        shown = overlay_mask(overlay_mask(scan, truth, (0, 200, 0), alpha=0), pred, (230, 40, 40), alpha=0.25)
        ax.imshow(shown)
        ax.set_title(f"{cases[i].case_id}\nDice {dice:.2f}" + ("" if pred.any() else " (no mask)"), fontsize=7)
    fig.suptitle(f"lowest ensemble Dice: truth green, prediction red\n{title}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(ev: DatasetEvaluation, preds: CasePredictions, fusion: Fusion, folder: Path,
                cases: list[Case] | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tag = f"{ev.source} {ev.split} (fingerprint {ev.fingerprint[:8]}, n={ev.n_cases})"
    if ENSEMBLE in ev.classification:
        m = ev.classification[ENSEMBLE]
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        cm = np.array(m.confusion)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"ensemble confusion\n{tag}", fontsize=8)
        fig.tight_layout()
        written.append(folder / f"{ev.source}_confusion.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    if ENSEMBLE in ev.classification and "malignant_auc" in ev.classification[ENSEMBLE].scores:
        per_model, fused = fusion.classify(preds.logits, preds.grade_logits)
        mal = CLASSES.index("malignant")
        y = preds.labels == mal
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
        for name, probs in {**per_model, ENSEMBLE: fused}.items():
            fpr, tpr, _ = roc_curve(y, probs[:, mal])
            auc = ev.classification[name].scores["malignant_auc"]
            a.plot(fpr, tpr, lw=2.5 if name == ENSEMBLE else 1, label=f"{name} AUC {auc.value:.3f}")
        a.plot([0, 1], [0, 1], "k:", lw=0.8)
        a.set_xlabel("1 - specificity")
        a.set_ylabel("sensitivity")
        a.set_title("malignant vs rest ROC", fontsize=9)
        a.legend(fontsize=7)
        conf, correct = fused.max(1), fused.argmax(1) == preds.labels
        edges = np.linspace(0, 1, 11)
        centers, accs = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (conf > lo) & (conf <= hi)
            if sel.any():
                centers.append(conf[sel].mean())
                accs.append(correct[sel].mean())
        b.plot([0, 1], [0, 1], "k:", lw=0.8)
        b.plot(centers, accs, "o-")
        b.set_xlabel("ensemble confidence")
        b.set_ylabel("accuracy")
        b.set_title(f"reliability (ECE {ev.classification[ENSEMBLE].scores['ece'].value:.3f})", fontsize=9)
        fig.suptitle(tag, fontsize=8)
        fig.tight_layout()
        written.append(folder / f"{ev.source}_roc_reliability.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    if ev.segmentation:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = list(ev.segmentation)
        ax.boxplot([ev.segmentation[n].dice for n in names], showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=7)
        ax.set_ylabel("Dice per lesion image")
        ax.set_ylim(0, 1)
        ax.set_title(f"Dice distribution\n{tag}", fontsize=8)
        fig.tight_layout()
        written.append(folder / f"{ev.source}_dice.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
        if cases is not None:
            written.append(worst_gallery(cases, preds, fusion, tag, folder / f"{ev.source}_worst.png"))
    return written


def evaluate(data_dirs, split_path: Path = DEFAULT_SPLIT, weights: Path = WEIGHTS_DIR, split_name: str = "test",
             n_boot: int = 1000, plots: Path | None = None, progress: bool = True) -> dict[str, DatasetEvaluation]:
    split, cases = load_verified(data_dirs, split_path, progress=progress)
    manifest = Manifest.read(weights)
    if not manifest.shipped():
        raise FileNotFoundError(f"{weights / 'manifest.json'}: no shipped models to evaluate")
    return {source: evaluate_source(manifest, [c for c in split.select(cases, split_name) if c.source == source],
                                    split, split_name, n_boot, plots, progress)
            for source in sorted({c.source for c in cases})}


def evaluate_source(manifest: Manifest, cases: list[Case], split, split_name: str, n_boot: int = 1000,
                    plots: Path | None = None, progress: bool = True, **identity) -> DatasetEvaluation:
    """One source's cases through the manifest's models: metrics (named by the weights' identity, plus
    ``identity``), and plots in ``plots`` if given."""
    fusion = Fusion.from_manifest(manifest)
    preds = predict_cases(manifest, cases, split.groups, progress=progress)
    ev = replace(evaluate_dataset(cases, preds, fusion, split_name, split.fingerprints[cases[0].source], n_boot),
                 weights={**manifest.identity(), **identity})
    if plots:
        write_plots(ev, preds, fusion, plots, cases)
    return ev


class CrossSiteError(ValueError):
    """Weights that cannot stand for an unseen site: they saw it, or do not say what they saw."""


def seen_sources(manifest: Manifest) -> set[str]:
    """Every source a shipped model was trained on or the ensemble was calibrated on."""
    seen = {s for m in manifest.models.values() for s in m.get("train_config", {}).get("data", [])}
    fitted = manifest.ensemble.get("fitted", {})
    return seen | set(fitted.get("sources", fitted.get("fingerprints", {})))  # before "sources": every fingerprint


def cross_site(data_dirs, weights_by_source: dict[str, Path], split_path: Path = DEFAULT_SPLIT, n_boot: int = 1000,
               plots: Path | None = None, progress: bool = True, split_name: str = "test") -> dict[str, DatasetEvaluation]:
    """Each source's ``split_name`` split (test by default), analysed by weights that never saw that source
    (trained and calibrated on the others): the proxy for a scanner the models have never met. The committed
    split decides the cases; the held-out source's other splits are not read. Its validation split
    (``split_name="val"``) never touched those weights either: recipes and rules are chosen across sites on
    it, so that the test split only reports."""
    split, cases = load_verified(data_dirs, split_path, progress=progress)
    out = {}
    for source, folder in weights_by_source.items():
        manifest = Manifest.read(folder)
        seen = seen_sources(manifest)
        if not manifest.shipped() or not seen:
            raise CrossSiteError(f"{folder}: no shipped models that record what they were trained on; ship them "
                                 f"with `sonomark ship NAME --runs RUNS --weights {folder}`")
        if source in seen:
            raise CrossSiteError(f"{folder} saw {source} (trained or calibrated on {', '.join(sorted(seen))}); train "
                                 f"with --data without it, ship with --weights {folder}, calibrate with --data "
                                 "without it")
        chosen = [c for c in split.select(cases, split_name) if c.source == source]
        if not chosen:
            raise CrossSiteError(f"no {source} {split_name} cases in {', '.join(map(str, data_dirs))}")
        out[source] = evaluate_source(manifest, chosen, split, split_name, n_boot, plots, progress,
                                      trained_on=sorted(seen))
    return out


def summary_lines(results: dict[str, DatasetEvaluation]) -> list[str]:
    lines = []
    for source, ev in results.items():
        lines.append(f"{source} {ev.split} (fingerprint {ev.fingerprint[:12]}, {ev.n_cases} cases)")
        for name, m in ev.classification.items():
            s = m.scores
            lines.append(f"  {name:22s} macro-F1 {s['macro_f1']}  malignant AUC {s.get('malignant_auc', 'n/a')}  "
                         f"ECE {s['ece'].value:.3f}")
        for name, m in ev.segmentation.items():
            lines.append(f"  {name:22s} Dice {m.scores['dice_mean']}  (median {m.scores['dice_median'].value:.3f})")
        if ev.review:
            r = ev.review
            lines.append(f"  review flag: {r['flagged_share'].value:.0%} flagged; classification error rate flagged "
                         f"{r['error_flagged']}, unflagged {r['error_unflagged']}")
        floors = FLOORS.get(source, {})
        got = ev.ensemble_scores()
        lines.append("  floors: " + ", ".join(f"{k} {got.get(k, float('nan')):.3f} {'>=' if got.get(k, -1) >= v else '<'} {v}"
                                             for k, v in floors.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", type=Path, default=[DEFAULT_DATA_DIR])
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--split-name", default="test", choices=SPLITS)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--cross-site", nargs="+", metavar="SOURCE=WEIGHTS_DIR",
                    help="evaluate each SOURCE's test split (or --split-name's) with weights that never saw it "
                         f"(trained and calibrated on the other sources); writes {CROSS_SITE} and plots/cross_site/ "
                         "in --weights (cross_site_val.json and plots/cross_site_val/ for --split-name val)")
    args = ap.parse_args(argv)
    if args.cross_site:
        return _cross_site_main(args)
    test = args.split_name == "test"
    plots = args.weights / "plots" if test else args.weights / "plots" / args.split_name
    results = evaluate(args.data, args.split, args.weights, args.split_name, args.n_boot, plots)
    out = args.weights / ("metrics.json" if test else f"metrics_{args.split_name}.json")
    out.write_text(json.dumps({s: ev.to_json() for s, ev in results.items()}, indent=1) + "\n")
    print(f"wrote {write_card(args.weights)}")
    print("\n".join(summary_lines(results)))
    print(f"wrote {out} and plots in {plots}")
    return 0



def _cross_site_main(args) -> int:
    pairs = [item.split("=", 1) for item in args.cross_site]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        print(f"error: --cross-site takes SOURCE=WEIGHTS_DIR pairs, e.g. busi=runs/without-busi/weights; got "
              f"{' '.join(args.cross_site)}", file=sys.stderr)
        return 2
    out = args.weights / cross_site_file(args.split_name)
    plots = args.weights / "plots" / out.stem  # plots/cross_site/ for the test split, plots/cross_site_val/ ...
    try:
        results = cross_site(args.data, {s: Path(d) for s, d in pairs}, args.split, args.n_boot, plots,
                             split_name=args.split_name)
    except CrossSiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out.write_text(json.dumps({s: ev.to_json() for s, ev in results.items()}, indent=1) + "\n")
    if args.split_name == "test":  # the model card shows the test split; the validation run is for choosing
        print(f"wrote {write_card(args.weights)}")
    print("\n".join(summary_lines(results)))
    print(f"wrote {out} and plots in {plots}")
    return 0
