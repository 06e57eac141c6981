"""Does a classifier that reads the lesion's own neighbourhood carry benign/malignant across sites better than one
that reads the whole scan? (results in ``reports/cross_site.md``, "A lesion-crop classifier")

The whole-scan classifiers see the scanner's texture, gain and layout around the lesion as much as the lesion, and
what they learn of those does not travel. Here EfficientNet-Lite0 is trained on crops around the lesion: the
bounding box of its mask, widened by ``--margin`` of its size on every side and made square in the scan's pixels
(so the lesion's height/width ratio, a malignancy sign, is kept), then resized to 224 px. Lesion scans only: the
crop model answers benign or malignant, the whole-scan ensemble keeps the normal call.

    python reports/lesion_crop.py train --source busi --seed 0       # runs/lesion-crop/busi-m30-s0
    python reports/lesion_crop.py evaluate                            # every finished run, beside its twin

Training is the one-source cross-site recipe of ``reports/aspect_fit.py`` (12 epochs, batch 32, lr 3e-4, patience
6), validated on the training source's own validation crops. Each run is read on the other source's validation
lesion scans with crops from the reference mask (``truth``: what a perfect segmenter would give) and from the mask
of the U-Net trained on the same source and seed (``unet``: what the pipeline would give; a scan whose mask is empty
is read whole). Its twin is the whole-scan Lite0 of the same source and seed (``runs/aspect-fit/*-squash-s*``),
read on the same scans. Score: malignant AUC among lesion scans. Test splits are not read.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.records import CLASSES  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.inference.ensemble import run_model, softmax  # noqa: E402
from models.preprocess import CaseArrays, lesion_box, read_case, resize_mask, resize_scan, to_scan  # noqa: E402
from models.zoo import REGISTRY, build_model, load_state_file  # noqa: E402

sys.path.insert(0, str(REPO / "reports"))
from aspect_fit import FOLDERS, OTHER, finished, runs_of, seed_difference  # noqa: E402

MODEL = "efficientnet_lite0"
SEGMENTER = "unet_lite0"
RUNS = REPO / "runs" / "lesion-crop"
MALIGNANT = CLASSES.index("malignant")


def crop(gray: np.ndarray, mask: np.ndarray, box, size: int) -> tuple[np.ndarray, np.ndarray]:
    if box is None:
        return resize_scan(gray, size), resize_mask(mask, size)
    t, l, b, r = box
    return resize_scan(gray[t:b, l:r], size), resize_mask(mask[t:b, l:r], size)


def lesion_cases(split, cases, source: str, name: str):
    return [c for c in split.select([c for c in cases if c.source == source], name) if c.label != "normal"]


def crop_arrays(chosen, groups, size: int, margin: float, masks: list[np.ndarray] | None = None) -> CaseArrays:
    """The cases' lesion crops; boxes from ``masks`` (in each scan's pixels) where given, else the reference's."""
    images = np.empty((len(chosen), size, size), np.uint8)
    out_masks = np.empty((len(chosen), size, size), bool)
    for k, case in enumerate(chosen):
        gray, mask = read_case(case)
        box = lesion_box(mask if masks is None else masks[k], margin)
        images[k], out_masks[k] = crop(gray, mask, box, size)
    return CaseArrays(tuple(c.case_id for c in chosen), tuple(c.source for c in chosen),
                      tuple(groups.get(c.case_id, c.group_id) for c in chosen),
                      np.array([CLASSES.index(c.label) for c in chosen]), images, out_masks)


def run_dir(source: str, margin: float, seed: int) -> Path:
    return RUNS / f"{source}-m{round(100 * margin)}-s{seed}"


def train(args) -> int:
    from models.training.train import RunConfig, pick_device, seed_everything, train_model
    spec = REGISTRY[MODEL]
    split, cases = load_verified([DEFAULT_DATA_DIR / FOLDERS[args.source]], DEFAULT_SPLIT, progress=False)
    tr, va = (crop_arrays(lesion_cases(split, cases, args.source, n), split.groups, spec.input_size, args.margin)
              for n in ("train", "val"))
    config = RunConfig.for_model(spec, pick_device("cpu"), epochs=12, batch_size=32, lr=3e-4, patience=6,
                                 seed=args.seed, data=(args.source,), split_fingerprints=split.fingerprints)
    seed_everything(args.seed)
    out = run_dir(args.source, args.margin, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{out.name}: {len(tr)} train / {len(va)} validation lesion crops", flush=True)
    train_model(spec, tr, va, config, out / MODEL, progress=False)
    return 0


def predicted_masks(run: Path, scans: list[np.ndarray]) -> list[np.ndarray]:
    spec = REGISTRY[SEGMENTER]
    net = build_model(SEGMENTER, init=None)
    load_state_file(net, run / SEGMENTER / "best.pt")
    probs = run_model(net.eval(), spec, np.stack([resize_scan(g, spec.input_size) for g in scans]))
    return [to_scan(p, g.shape) > 0.5 for p, g in zip(probs, scans)]


def malignant_probs(weights: Path, chosen, groups, margin: float, masks) -> np.ndarray:
    net = build_model(MODEL, init=None)
    load_state_file(net, weights)
    arrays = crop_arrays(chosen, groups, REGISTRY[MODEL].input_size, margin, masks)
    return softmax(run_model(net.eval(), REGISTRY[MODEL], arrays.images))[:, MALIGNANT]


def probabilities(run: Path, chosen, groups) -> dict[str, np.ndarray]:
    """The crop model's malignant probability on crops from the reference and from the U-Net of the same source and
    seed, the whole-scan twin's, and the U-Net's empty masks."""
    source, tag, seed = run.name.split("-")
    margin = int(tag[1:]) / 100
    scans = [read_case(c) for c in chosen]
    empty = [np.zeros_like(m) for _, m in scans]
    out = {"truth": malignant_probs(run / MODEL / "best.pt", chosen, groups, margin, None),
           "whole": malignant_probs(runs_of(MODEL) / f"{source}-squash-{seed}" / MODEL / "best.pt", chosen, groups,
                                    margin, empty)}
    masks = predicted_masks(runs_of(SEGMENTER) / f"{source}-squash-{seed}", [g for g, _ in scans])
    out["empty"] = np.array([not m.any() for m in masks])
    out["unet"] = malignant_probs(run / MODEL / "best.pt", chosen, groups, margin, masks)
    return out


def scores(p: dict[str, np.ndarray], malignant: np.ndarray) -> dict[str, float]:
    """Malignant AUC of each way of reading: a U-Net crop whose mask is empty falls back to the whole scan."""
    unet = np.where(p["empty"], p["whole"], p["unet"])
    ways = {"whole scan (twin)": p["whole"], "crop, reference mask": p["truth"], "crop, U-Net mask": unet,
            "mean of whole and reference crop": (p["whole"] + p["truth"]) / 2,
            "mean of whole and U-Net crop": (p["whole"] + unet) / 2}
    return {k: float(roc_auc_score(malignant, v)) for k, v in ways.items()}


def evaluate(args) -> int:
    split, cases = load_verified([DEFAULT_DATA_DIR / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    rows: dict[tuple, list[float]] = {}
    empty: dict[tuple, list[float]] = {}
    for run in sorted(r for r in RUNS.glob("*-s*") if finished(r)):
        source, tag, seed = run.name.split("-")
        if not (finished(runs_of(MODEL) / f"{source}-squash-{seed}")
                and finished(runs_of(SEGMENTER) / f"{source}-squash-{seed}", SEGMENTER)):
            print(f"{run.name}: its twins have not finished; skipped")
            continue
        for read in (OTHER[source], source):
            chosen = lesion_cases(split, cases, read, "val")
            p = probabilities(run, chosen, split.groups)
            malignant = np.array([c.label == "malignant" for c in chosen])
            for k, v in scores(p, malignant).items():
                rows.setdefault((source, tag, read, k), []).append(v)
            empty.setdefault((source, tag, read), []).append(float(p["empty"].mean()))
            print(run.name, read, flush=True)
    print("\nMalignant AUC among validation lesion scans (mean over seeds; minus the whole scan paired by seed, "
          "95% t interval)\n")
    print("| trained on | margin | read on | U-Net empty | reading | seeds | AUC | minus whole scan |")
    print("|---|---|---|---|---|---|---|---|")
    for (source, tag, read, k), v in rows.items():
        base = np.array(rows[source, tag, read, "whole scan (twin)"])
        diff = "" if k.startswith("whole") else seed_difference(np.array(v) - base)
        print(f"| {source} | {tag} | {read} | {np.mean(empty[source, tag, read]):.0%} | {k} | {len(v)} | "
              f"{np.mean(v):.3f} | {diff} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--source", choices=tuple(FOLDERS), required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--margin", type=float, default=0.3)
    sub.add_parser("evaluate")
    args = ap.parse_args(argv)
    return train(args) if args.command == "train" else evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
