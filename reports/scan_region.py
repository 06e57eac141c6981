"""What a screen-capture frame costs the shipped ensemble, and what reading only the imaging region recovers
(``models/field_of_view.py``; results in `reports/scan_region.md`).

    python reports/scan_region.py      # about 12 minutes on the 2 cores; writes reports/scan_region.md

BUSI and BUS-BRA were released cropped to the scan; scanners the models never saw are often exported with their
screen around the scan. No such capture is in the project, so each validation scan of both sources is put inside a
synthetic screen (``screen_capture``): a flat background (black or dark grey), the scan at a random place, lines of
scanner text, a logo, a grey-scale bar, depth ticks beside the scan, saved as JPEG (quality 90). Each capture is
analysed by the shipped ensemble (``Analyzer.analyze``, the engine the app and CLI run) three ways:

- **scan**: the validation scan itself (what the in-domain figures measure);
- **capture, whole**: the capture read whole, as before ``models.field_of_view``;
- **capture, region**: the capture read as ``read_scan`` now reads it, the region ``find_region`` finds.

Per source: macro-F1 (over the classes the split has), malignant AUC, normal recall, lesion Dice (the mask against
the truth placed in the capture; for **scan**, at the scan's own size), lesion scans left empty and normal scans with
a false lesion, 95% group-bootstrap intervals, and the share flagged for review; the paired difference region - whole. Frame detection: the share of
captures where a region was found and the mean IoU of that region with where the scan was put. A synthetic screen
is a proxy: real ones vary more (colour bars, thumbnails, text over the image), so these figures show the mechanism,
not a measured cross-site gain.

A second table takes a capture apart on BUSI's validation scans (the source with normal scans): a black frame alone,
the scan shrunk within its own size, scanner text and caliper crosses on the scan itself, each read whole and read as
``read_scan`` reads it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.images import load_gray, load_mask  # noqa: E402
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.field_of_view import find_region  # noqa: E402
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.scan import Scan  # noqa: E402
from models.training.metrics import (Interval, classification_metrics, group_bootstrap,  # noqa: E402
                                     paired_class_differences, segmentation_metrics)

OUT = REPO / "reports" / "scan_region.md"
TEXT = ("GAIN 54 DR 60", "FR 27 Hz", "L12-5 BREAST", "MI 1.1 TIS 0.4", "DEPTH 4.5 cm", "HOSP 2026/12/07 10:42",
        "PWR 100%", "SMP", "RIGHT 10:00 3CM FN", "ID 0000123")
CONDITIONS = ("scan", "capture, whole", "capture, region")


def screen_capture(gray: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``gray`` inside a synthetic scanner screen; the capture (uint8, JPEG-decoded) and where the scan is
    ``(top, bottom, left, right)``."""
    h, w = gray.shape
    big_h, big_w = int(h * rng.uniform(1.25, 1.5)), int(w * rng.uniform(1.3, 1.8))
    top = int(rng.uniform(0.07, 0.14) * big_h)
    top = min(top, big_h - h - 2)
    left = int(rng.uniform(0.15, 0.85) * (big_w - w))
    level = int(rng.choice([0, 0, 0, 12, 24]))
    screen = np.full((big_h, big_w), level, np.uint8)
    screen[top:top + h, left:left + w] = gray
    scale = max(big_h, big_w) / 1100
    y = int(28 * scale) + 4
    cv2.putText(screen, str(rng.choice(TEXT)), (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 230, max(1, int(2 * scale)))
    for k, line in enumerate(rng.choice(TEXT, size=int(rng.integers(4, 8)), replace=False)):
        x = 6 if left > big_w * 0.2 else left + w + 6
        cv2.putText(screen, str(line), (x, top + int((k + 1) * 34 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale,
                    int(rng.integers(170, 256)), 1)
    cv2.rectangle(screen, (big_w - int(60 * scale), 4), (big_w - 8, int(26 * scale)), 150, -1)  # a logo
    bar_x = left + w + int(20 * scale) if big_w - left - w > 40 * scale else max(4, left - int(30 * scale))
    bar = np.linspace(255, 0, int(0.3 * big_h)).astype(np.uint8)[:, None]
    screen[top:top + len(bar), bar_x:bar_x + max(4, int(12 * scale))] = bar  # the grey-scale bar
    for ty in range(top, top + h, max(10, h // 6)):  # depth ticks, 3 px right of the scan
        screen[ty:ty + 2, min(big_w - 1, left + w + 3):min(big_w, left + w + 9)] = 255
    ok, jpeg = cv2.imencode(".jpg", screen, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE), (top, top + h, left, left + w)


def black_frame(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scan on a black screen, nothing else: the scale and the border, without text."""
    h, w = gray.shape
    out = np.zeros((int(h * 1.4), int(w * 1.55)), np.uint8)
    top, left = int(0.1 * out.shape[0]), int(0.15 * out.shape[1])
    out[top:top + h, left:left + w] = gray
    return out


def shrunk(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scan at 70% of its size, at the top of a black image of its own size (a deeper setting's look)."""
    h, w = gray.shape
    small = cv2.resize(gray, (int(w * 0.7), int(h * 0.7)), interpolation=cv2.INTER_AREA)
    out = np.zeros_like(gray)
    left = (w - small.shape[1]) // 2
    out[:small.shape[0], left:left + small.shape[1]] = small
    return out


def text_on_scan(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Three lines of scanner text burned into the scan's top left, at the scan's own size."""
    out, (h, w) = gray.copy(), gray.shape
    scale = max(h, w) / 800
    for k, line in enumerate(rng.choice(TEXT, 3, replace=False)):
        cv2.putText(out, str(line), (int(0.05 * w), int(0.08 * h + k * 30 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.8 * scale, 230, 1)
    return out


def calipers(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two caliper crosses in the scan's middle, as a sonographer's measurement leaves them."""
    out, (h, w) = gray.copy(), gray.shape
    size = max(6, int(max(h, w) / 40))
    for _ in range(2):
        cv2.drawMarker(out, (int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.3, 0.7) * h)), 255,
                       cv2.MARKER_CROSS, size, 1)
    return out


PARTS = {"black frame, no text": black_frame, "scan shrunk to 70%, black around it": shrunk,
         "scanner text on the scan": text_on_scan, "two caliper crosses on the scan": calipers}


def parts(analyzer: Analyzer, cases, groups) -> list[str]:
    """Which part of a capture costs what: each alteration alone, read whole and read as ``read_scan`` reads it."""
    y = [c.label for c in cases]
    probs: dict[tuple[str, str], list] = {}
    for k, case in enumerate(tqdm(cases, desc="parts", unit="scan")):
        gray = load_gray(case.image_path)
        for name, alter in {"none (the scan)": lambda g, r: g, **PARTS}.items():
            image = alter(gray, np.random.default_rng(k))
            for read, region in (("whole", None), ("as read_scan reads it", find_region(image))):
                if name.startswith("none") and read != "whole":
                    continue
                a = analyzer.analyze(as_scan(image, case.case_id, region))
                probs.setdefault((name, read), []).append([a.probabilities[c] for c in CLASSES])
    lines = [f"### What in a capture costs what ({cases[0].source} val, {len(cases)} scans)", "",
             "Each alteration alone. *As read_scan reads it*: the region ``find_region`` finds (none for marks on "
             "the scan itself, which is then read whole).", "",
             "| alteration | read | macro-F1 | malignant AUC | normal recall | calls: benign / malignant / normal |",
             "|---|---|---|---|---|---|"]
    for (name, read), p in probs.items():
        p = np.array(p)
        s = classification_metrics(y, p, groups=groups).scores
        calls = " / ".join(str(int((p.argmax(1) == j).sum())) for j in range(len(CLASSES)))
        lines.append(f"| {name} | {read} | {s['macro_f1']} | {s['malignant_auc']} | {defined(s.get('normal_recall'))} "
                     f"| {calls} |")
    truth = " / ".join(str(y.count(c)) for c in CLASSES)
    return lines + ["", f"True classes: {truth} (benign / malignant / normal).", ""]


def as_scan(gray: np.ndarray, name: str, region) -> Scan:
    return Scan(name=name, gray=gray, display=np.repeat(gray[..., None], 3, 2), sha256=name, format="PNG", mode="L",
                region=region)


def iou(box, region) -> float:
    if region is None:
        return 0.0
    t, b, l, r = box
    inter = max(0, min(b, region.bottom) - max(t, region.top)) * max(0, min(r, region.right) - max(l, region.left))
    return inter / ((b - t) * (r - l) + region.shape[0] * region.shape[1] - inter)


def evaluate_source(analyzer: Analyzer, cases, groups) -> list[str]:
    probs = {c: [] for c in CONDITIONS}
    flags = {c: [] for c in CONDITIONS}
    masks = {c: [] for c in CONDITIONS}
    truths = {c: [] for c in CONDITIONS}
    found, ious = [], []
    for k, case in enumerate(tqdm(cases, desc=cases[0].source, unit="scan")):
        gray = load_gray(case.image_path)
        truth = load_mask(case.mask_paths, gray.shape)
        capture, box = screen_capture(gray, np.random.default_rng(k))
        placed = np.zeros(capture.shape, bool)
        placed[box[0]:box[1], box[2]:box[3]] = truth
        region = find_region(capture)
        found.append(region is not None)
        ious.append(iou(box, region))
        for cond, scan, t in (("scan", as_scan(gray, case.case_id, None), truth),
                              ("capture, whole", as_scan(capture, case.case_id, None), placed),
                              ("capture, region", as_scan(capture, case.case_id, region), placed)):
            a = analyzer.analyze(scan)
            probs[cond].append([a.probabilities[c] for c in CLASSES])
            flags[cond].append(a.review)
            masks[cond].append(a.mask)
            truths[cond].append(t)
    y = [c.label for c in cases]
    present = [c for c in CLASSES if c in set(y)]
    cls = {c: classification_metrics(y, np.array(probs[c]), groups=groups, average_over=present).scores
           for c in CONDITIONS}
    seg = {c: segmentation_metrics(masks[c], truths[c], groups).scores for c in CONDITIONS}
    d_cls = paired_class_differences(y, np.array(probs["capture, whole"]), np.array(probs["capture, region"]),
                                     groups=groups, average_over=present)
    d_dice = dice_difference(masks["capture, whole"], masks["capture, region"], truths["capture, region"], groups)
    source = cases[0].source
    lines = [f"### {source} val ({len(cases)} scans)", "",
             f"Frame found in {np.mean(found):.1%} of the captures; mean IoU of the region with the scan's place "
             f"{np.mean(ious):.3f} (min {np.min(ious):.3f}).", "",
             "| read | macro-F1 | malignant AUC | normal recall | lesion Dice | lesion scans left empty "
             "| normal scans with a false lesion | flagged for review |", "|---|---|---|---|---|---|---|---|"]
    for c in CONDITIONS:
        s, g = cls[c], seg[c]
        lines.append(f"| {c} | {s['macro_f1']} | {s['malignant_auc']} | {defined(s.get('normal_recall'))} "
                     f"| {g['dice_mean']} | {g['empty_rate']} | {g.get('fp_image_rate', '—')} | {np.mean(flags[c]):.0%} |")
    lines.append(f"| **region - whole** | {d_cls['macro_f1']} | {d_cls['malignant_auc']} "
                 f"| {d_cls.get('normal_recall', '—')} | {d_dice} | | | |")
    return lines + [""]


def defined(score: Interval | None) -> str:
    return "—" if score is None or np.isnan(score.value) else str(score)


def dice_difference(base, cand, truths, groups) -> Interval:
    """Paired lesion-Dice difference ``cand - base`` over lesion scans, one group bootstrap."""
    a = segmentation_metrics(base, truths, n_boot=0).dice
    b = segmentation_metrics(cand, truths, n_boot=0).dice
    lesion = [k for k, t in enumerate(truths) if t.any()]
    d = np.full(len(truths), np.nan)
    d[lesion] = np.array(b) - np.array(a)
    stat = lambda i: {"d": float(np.nanmean(d[i]))}  # noqa: E731
    draws = group_bootstrap(stat, groups, 1000, 0)["d"]
    return Interval(float(np.nanmean(d)), *(float(v) for v in np.nanpercentile(draws, [2.5, 97.5])))


def main() -> int:
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / "Dataset_BUSI_with_GT", d / "BUSBRA"], DEFAULT_SPLIT, progress=False)
    analyzer = Analyzer(REPO / "weights")
    lines = ["# Scans inside a screen capture: the frame's cost and the region crop",
             "", f"`python reports/scan_region.py`; split `{DEFAULT_SPLIT.relative_to(REPO)}` (fingerprints "
             f"{', '.join(f'{k} `{v[:12]}`' for k, v in split.fingerprints.items())}), validation scans only; shipped weights "
             f"({', '.join(analyzer.classifiers + analyzer.segmenters)}). How the captures are made and what each row "
             "reads: the script's docstring.", ""]
    for source in ("busi", "busbra"):
        chosen = split.select([c for c in cases if c.source == source], "val")
        groups = [split.groups.get(c.case_id, c.group_id) for c in chosen]
        lines += evaluate_source(analyzer, chosen, groups)
        if source == "busi":  # the source with normal scans
            lines += parts(analyzer, chosen, groups)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
