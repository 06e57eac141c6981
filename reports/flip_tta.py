"""Classifier flip averaging: does averaging each classifier over the scan and its left-right mirror help, in-domain
and on a scanner the models never saw? (#17's list; results in `reports/flip_tta.md`.)

    python reports/flip_tta.py      # 35 minutes on the 2 cores beside a training run; writes reports/flip_tta.md

Every classifier was trained with left-right flips, so the mirror is a scan it knows how to read. With flip
averaging a classifier's logits are the mean of the scan's and the mirror's; the ensemble then calibrates and
weighs them with the manifest's temperatures and weights, as without it.

Three settings, each on the committed split, with float weights through ``run_model`` (the engine runs the int8
graphs; their difference is measured in ``benchmarks/``):
- **in-domain**: the shipped classifiers and their ensemble on both sources' validation splits;
- **across sites, A -> B**: EfficientNet-Lite0 (and, from BUSI, Lite0 + VGG19, their softmax averaged) trained on
  source A alone (``mask_shape.RUNS``, the runs of ``reports/mask_shape.py``; commands in ``reports/cross_site.md``): A's
  validation split, B's validation split (the cross-site check) and B's test split (only reported).

Per row: macro-F1 (over the classes the split has), malignant AUC (over every scan) and normal recall, with and
without flip averaging, and the paired differences (95% group bootstrap, 1000 draws).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "reports"))
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import Fusion, run_model, softmax  # noqa: E402
from models.training.metrics import classification_metrics, paired_class_differences  # noqa: E402
from models.weights import Manifest  # noqa: E402
from models.zoo import get_spec  # noqa: E402
from mask_shape import CLASSIFIER_SETS, OTHER, RUNS, decoded_once  # noqa: E402  (the same one-source runs)

SCORES = ("macro_f1", "malignant_auc", "normal_recall")
OUT = REPO / "reports" / "flip_tta.md"


def logits(net, name: str, images: np.ndarray, flip: bool) -> np.ndarray:
    """A classifier's logits for uint8 scans ``(N, S, S)``; with ``flip``, the mean over the scan and its mirror."""
    out = run_model(net, get_spec(name), images)
    return (out + run_model(net, get_spec(name), images[:, :, ::-1])) / 2 if flip else out


def rows(label: str, split: str, plain: np.ndarray, flipped: np.ndarray, labels: np.ndarray, groups) -> str:
    y = [CLASSES[k] for k in labels]
    present = [CLASSES[k] for k in sorted(set(labels))]
    a = classification_metrics(y, plain, groups=groups, average_over=present, n_boot=0).scores
    b = classification_metrics(y, flipped, groups=groups, average_over=present, n_boot=0).scores
    d = paired_class_differences(y, plain, flipped, groups=groups, average_over=present)
    cells = [f"{a[k].value:.3f} -> {b[k].value:.3f} ({d[k]})" if k in d else "—" for k in SCORES]
    return f"| {label} | {split} | {len(y)} | " + " | ".join(cells) + " |"


def table(title: str, lines: list[str]) -> list[str]:
    return [f"### {title}", "", "| classifiers | split | scans | " + " | ".join(
        f"{k.replace('_', ' ')}: none -> flip (Δ [95% CI])" for k in SCORES) + " |", "|---|---|---|---|---|---|",
        *lines, ""]


def decoded(split, cases, source: str, part: str, names) -> dict[int, object]:
    """One source's split, decoded once per input size that ``names`` need."""
    return decoded_once(split.select([c for c in cases if c.source == source], part), names, split.groups)


def in_domain(split, cases) -> list[str]:
    manifest = Manifest.read(REPO / "weights")
    fusion = Fusion.from_manifest(manifest)
    names = manifest.shipped("classify")
    nets = {n: manifest.load(n) for n in names}
    lines = []
    for source in ("busi", "busbra"):
        scans = decoded(split, cases, source, "val", names)
        first = next(iter(scans.values()))
        out = {flip: {n: logits(net, n, scans[get_spec(n).input_size].images, flip) for n, net in nets.items()}
               for flip in (False, True)}
        for n in names:
            lines.append(rows(n, f"{source} val", fusion.calibrated(n, out[False][n]), fusion.calibrated(n, out[True][n]),
                              first.labels, first.groups))
        lines.append(rows("**shipped ensemble**", f"{source} val", fusion.classify(out[False])[1],
                          fusion.classify(out[True])[1], first.labels, first.groups))
    return table("In-domain: the shipped classifiers (calibrated) and their ensemble, validation", lines)


def across(split, cases, trained_on: str, load: Callable) -> list[str]:
    folder = REPO / RUNS[trained_on]
    names = list(dict.fromkeys(n for s in CLASSIFIER_SETS[trained_on] for n in s))
    nets = {n: load(n, folder) for n in names}
    other = OTHER[trained_on]
    lines = []
    for source, part in ((trained_on, "val"), (other, "val"), (other, "test")):
        scans = decoded(split, cases, source, part, names)
        first = next(iter(scans.values()))
        probs = {flip: {n: softmax(logits(net, n, scans[get_spec(n).input_size].images, flip))
                        for n, net in nets.items()} for flip in (False, True)}
        for chosen in CLASSIFIER_SETS[trained_on]:
            label = " + ".join(chosen)
            lines.append(rows(label, f"{source} {part}", np.mean([probs[False][n] for n in chosen], 0),
                              np.mean([probs[True][n] for n in chosen], 0), first.labels, first.groups))
    return table(f"Across sites: {trained_on} -> {other} (trained on {trained_on} alone, `{RUNS[trained_on]}`)", lines)


def main() -> int:
    from erased_normals import load
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / "Dataset_BUSI_with_GT", d / "BUSBRA"], DEFAULT_SPLIT, progress=False)
    lines = ["# Classifier flip averaging, in-domain and across sites", "",
             f"Generated by `python reports/flip_tta.py`; the method is in its docstring. Split `splits/split.json`, "
             f"fingerprints {', '.join(f'{k} `{v[:12]}`' for k, v in split.fingerprints.items())}.", ""]
    lines += in_domain(split, cases)
    for source in ("busbra", "busi"):
        lines += across(split, cases, source, load)
    OUT.write_text("\n".join(lines))
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
