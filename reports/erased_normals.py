"""Does a model trained on one source with erased lesions as normal scans recognise another source's real
normal scans? (`models/training/erased_normals.py`; results in `reports/cross_site.md`.)

    python reports/erased_normals.py --model efficientnet_lite0 --source busbra \
        baseline=runs/without-busi erased=runs/en-without-busi control-ft=runs/ft-without-busi \
        erased-ft=runs/en-ft-without-busi
    python reports/erased_normals.py --model efficientnet_lite0 --source both shipped=weights erased-ft=runs/en-ft
    python reports/erased_normals.py --model unet_lite0 --source busbra baseline=runs/seg-without-busi \
        erased=runs/seg-en-without-busi
    python reports/erased_normals.py --model efficientnet_lite0 efficientnet_lite1 --source busbra \
        baseline=runs/without-busi erased=runs/en-without-busi

Each ``label=folder`` is a weights folder with a manifest (the member as shipped there) or a training run
folder (``<folder>/<model>/best.pt``). For the source it was trained on, the validation split; for the
other source, its validation split (which chooses) and its test split (which only reports). Per row: normal
recall and lesion recall at the argmax; macro-F1 (the training score's, over the classes the split has); how well p(normal) ranks normal above lesion scans (AUC), and its
median on each; malignant AUC among lesion scans. The argmax can stay "lesion" while p(normal) ranks well,
so each row also shows the calls with a normal threshold set on the *training source's* validation lesions
(the threshold under which 95% of them stay, the left-out source unseen).

Several classifiers (``--model A B``) give one row per label: the mean of their softmax probabilities, an
unweighted ensemble (a one-source ensemble cannot fit a normal weight on a source without normal scans).

A segmenter (``--model unet_lite0``) gets its own rows: its masks at its input size, thresholded at 0.5 and
cleaned as the analysis cleans them; mean and median lesion Dice, lesion scans left empty, and normal scans
with a false lesion (any lesion pixel), with 95% group-bootstrap intervals.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import run_model, softmax  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.preprocess import decode_for  # noqa: E402
from models.training.metrics import classification_metrics, segmentation_metrics  # noqa: E402
from models.weights import MANIFEST, Manifest  # noqa: E402
from models.zoo import build_model, get_spec, load_state_file  # noqa: E402

NORMAL, MALIGNANT = CLASSES.index("normal"), CLASSES.index("malignant")
KEEP = 0.95  # the share of the training source's validation lesions kept under the normal threshold


def load(model: str, folder: Path) -> torch.nn.Module:
    if (folder / MANIFEST).is_file():
        return Manifest.read(folder).load(model)
    checkpoint = folder / model / "best.pt"
    if not checkpoint.is_file():
        raise SystemExit(f"{folder}: neither a weights folder ({MANIFEST}) nor a run with {model}/best.pt")
    net = build_model(model, init=None)
    load_state_file(net, checkpoint)
    return net.eval()


def row(label: str, split: str, probs: np.ndarray, y: np.ndarray, threshold: float) -> str:
    normal = y == NORMAL
    call = probs.argmax(1)
    by_threshold = probs[:, NORMAL] > threshold

    def recalls(said_normal: np.ndarray) -> str:
        nr = f"{said_normal[normal].mean():.3f}" if normal.any() else "—"
        return f"{nr} / {(~said_normal[~normal]).mean():.3f}"
    p = probs[:, NORMAL]
    auc = f"{roc_auc_score(normal, p):.3f}" if normal.any() else "—"
    medians = (f"{np.median(p[normal]):.3f}" if normal.any() else "—") + f" / {np.median(p[~normal]):.4f}"
    mal = y[~normal] == MALIGNANT
    mal_auc = roc_auc_score(mal, probs[~normal, MALIGNANT]) if 0 < mal.sum() < len(mal) else float("nan")
    f1 = classification_metrics([CLASSES[k] for k in y], probs, n_boot=0).scores["macro_f1"].value
    return (f"| {label} | {split} | {len(y)} ({normal.sum()}) | {f1:.3f} | {recalls(call == NORMAL)} | {auc} | {medians} "
            f"| {mal_auc:.3f} | {threshold:.3f}: {recalls(by_threshold)} |")


def seg_row(label: str, split: str, probs: np.ndarray, arrays) -> str:
    """A segmenter's row: its masks at its input size, thresholded at 0.5 and cleaned as the analysis does."""
    masks = [clean_mask(p > 0.5) for p in probs]
    m = segmentation_metrics(masks, list(arrays.masks), arrays.groups)
    normal = int((~arrays.masks.reshape(len(arrays), -1).any(1)).sum())

    def iv(key: str, pct: bool = False) -> str:  # Interval's own text, or as percentages
        v = m.scores.get(key)
        if v is None or not pct:
            return "—" if v is None else str(v)
        return f"{100 * v.value:.1f}% [{100 * v.low:.1f}%, {100 * v.high:.1f}%]"
    return (f"| {label} | {split} | {len(arrays)} ({normal}) | {iv('dice_mean')} | {m.scores['dice_median'].value:.3f} "
            f"| {iv('empty_rate', True)} | {iv('fp_image_rate', True)} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", default=["efficientnet_lite0"],
                    help="one segmenter, or one or more classifiers (their probabilities averaged)")
    ap.add_argument("--source", required=True, choices=("busbra", "busi", "both"),
                    help="the source the members were trained on; both: in-domain, the two validation splits only")
    ap.add_argument("members", nargs="+", metavar="LABEL=FOLDER")
    args = ap.parse_args(argv)
    specs = [get_spec(m) for m in args.model]
    if any(s.task == "segment" for s in specs) and len(specs) > 1:
        raise SystemExit(f"--model {' '.join(args.model)}: one segmenter at a time, or classifiers only")
    spec = specs[0]
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / "Dataset_BUSI_with_GT", d / "BUSBRA"], DEFAULT_SPLIT, progress=False)
    if args.source == "both":  # in-domain: the threshold from BUS-BRA's validation lesions; no test split read
        own, wanted = ("busbra", "val"), (("busbra", "val"), ("busi", "val"))
    else:
        other = "busi" if args.source == "busbra" else "busbra"
        own, wanted = (args.source, "val"), ((args.source, "val"), (other, "val"), (other, "test"))
    frames = {(s.input_size, s.fit): s for s in specs}
    by_frame = {frame: {(s, name): decode_for(split.select([c for c in cases if c.source == s], name), fs, split.groups,
                                              progress=False) for s, name in wanted} for frame, fs in frames.items()}
    sets = by_frame[spec.input_size, spec.fit]  # labels are the same in every frame
    if spec.task == "segment":
        print("| member | split | scans (normal) | mean lesion Dice | median | lesion scans left empty "
              "| normal scans with a false lesion |")
        print("|---|---|---|---|---|---|---|")
    else:
        print("| member | split | scans (normal) | macro-F1 | normal / lesion recall, argmax | AUC p(normal), normal vs "
              "lesion | median p(normal): normal / lesion scans | malignant AUC, lesion scans "
              f"| threshold ({KEEP:.0%} of {own[0]} val lesions under it): normal / lesion recall |")
        print("|---|---|---|---|---|---|---|---|---|")
    for label, folder in (m.split("=", 1) for m in args.members):
        if spec.task == "segment":
            net = load(spec.name, REPO / folder)
            for key, a in sets.items():
                print(seg_row(label, f"{key[0]} {key[1]}", run_model(net, spec, a.images), a), flush=True)
            continue
        nets = [(s, load(s.name, REPO / folder)) for s in specs]
        probs = {key: np.mean([softmax(run_model(net, s, by_frame[s.input_size, s.fit][key].images)) for s, net in nets], 0)
                 for key in sets}
        threshold = float(np.quantile(probs[own][sets[own].labels != NORMAL, NORMAL], KEEP))
        for key, p in probs.items():
            print(row(label, f"{key[0]} {key[1]}", p, sets[key].labels, threshold), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
