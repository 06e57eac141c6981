"""Does a classifier that reads the lesion's own neighbourhood carry benign/malignant across sites better than one
that reads the whole scan? (results in ``reports/cross_site.md``, "A lesion grader")

The whole-scan classifiers see the scanner's texture, gain and layout around the lesion as much as the lesion, and
what they learn of those does not travel. Here EfficientNet-Lite0 is trained on crops around the lesion: the
bounding box of its mask, widened by ``--margin`` of its size on every side and made square in the scan's pixels
(so the lesion's height/width ratio, a malignancy sign, is kept), then resized to 224 px. Lesion scans only: the
crop model answers benign or malignant, the whole-scan ensemble keeps the normal call.

    python reports/lesion_crop.py train --source busi --seed 0       # runs/lesion-crop/busi-m30-s0
    python reports/lesion_crop.py train --source busi --augment scanner   # busi-m30scanner-s0: scanner shift too
    python reports/lesion_crop.py evaluate [--source S] [--augment A]  # every finished run, beside its twin
    python reports/lesion_crop.py in-domain --weights runs/cand-grader   # the ensemble's validation at each share

Training is the one-source cross-site recipe of ``reports/aspect_fit.py`` (12 epochs, batch 32, lr 3e-4, patience
6), validated on the training source's own validation crops. Each run is read on the other source's validation
lesion scans (and its own) with crops from the reference mask (what a perfect segmenter would give) and from the
cleaned mask of the U-Net trained on the same source and seed (what the pipeline would give). Its twin is the
whole-scan Lite0 of the same source and seed (``runs/aspect-fit/*-squash-s*``), read on the same scans; "graded"
re-splits the twin's lesion probability by the crop model's as the ensemble does (``Fusion.grade``) at several
shares, the twin alone where the U-Net's mask is empty. Score: malignant AUC among lesion scans, each reading minus
the twin's paired by seed. Each run's scores are kept in ``scores-<source read>.json`` beside its weights and read
again only when its or its twins' weights are newer or the committed split changed. Test splits are not read.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.records import CLASSES  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.inference.ensemble import Fusion, run_model, softmax  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.preprocess import decode_for, decode_lesions, read_case, resize_scan, to_scan  # noqa: E402
from models.training.augment import AUGMENTATIONS  # noqa: E402
from models.zoo import REGISTRY, build_model, load_state_file  # noqa: E402

sys.path.insert(0, str(REPO / "reports"))
from aspect_fit import FOLDERS, OTHER, finished, runs_of, seed_difference  # noqa: E402

MODEL = "efficientnet_lite0"
SEGMENTER = "unet_lite0"
RUNS = REPO / "runs" / "lesion-crop"
MALIGNANT = CLASSES.index("malignant")


def lesion_cases(split, cases, source: str, name: str):
    return [c for c in split.select([c for c in cases if c.source == source], name) if c.label != "normal"]


def grader_spec(margin: float):
    """Lite0 reading lesion crops with ``margin`` (``models.preprocess.decode_lesions``), as the report's runs do."""
    return dataclasses.replace(REGISTRY[MODEL], task="grade", crop_margin=margin)


def run_dir(source: str, margin: float, seed: int, augment: str = "standard") -> Path:
    """``runs/lesion-crop/busi-m30-s0``; ``busi-m30scanner-s0`` with the scanner-shift augmentation."""
    return RUNS / f"{source}-m{round(100 * margin)}{'' if augment == 'standard' else augment}-s{seed}"


def run_tag(tag: str) -> tuple[float, str]:
    """The margin and augmentation a run's tag (``m30``, ``m30scanner``) names: ``run_dir``'s naming read back."""
    found = re.fullmatch(r"m(\d+)(\w*)", tag)
    return int(found[1]) / 100, found[2] or "standard"


def train(args) -> int:
    from models.training.train import RunConfig, pick_device, seed_everything, train_model
    spec = REGISTRY[MODEL]
    split, cases = load_verified([DEFAULT_DATA_DIR / FOLDERS[args.source]], DEFAULT_SPLIT, progress=False)
    tr, va = (decode_lesions(lesion_cases(split, cases, args.source, n), grader_spec(args.margin), split.groups,
                             progress=False) for n in ("train", "val"))
    config = RunConfig.for_model(spec, pick_device("cpu"), epochs=12, batch_size=32, lr=3e-4, patience=6,
                                 seed=args.seed, data=(args.source,), split_fingerprints=split.fingerprints,
                                 augment=args.augment)
    seed_everything(args.seed)
    out = run_dir(args.source, args.margin, args.seed, args.augment)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{out.name}: {len(tr)} train / {len(va)} validation lesion crops", flush=True)
    train_model(spec, tr, va, config, out / MODEL, progress=False)
    return 0


def predicted_masks(run: Path, scans: list[np.ndarray]) -> list[np.ndarray]:
    """The U-Net's masks at each scan's size, cleaned as the analysis cleans them."""
    spec = REGISTRY[SEGMENTER]
    net = build_model(SEGMENTER, init=None)
    load_state_file(net, run / SEGMENTER / "best.pt")
    probs = run_model(net.eval(), spec, np.stack([resize_scan(g, spec.input_size) for g in scans]))
    return [clean_mask(to_scan(p, g.shape) > 0.5) for p, g in zip(probs, scans)]


def logits(weights: Path, images: np.ndarray) -> np.ndarray:
    net = build_model(MODEL, init=None)
    load_state_file(net, weights)
    return run_model(net.eval(), REGISTRY[MODEL], images)


def outputs(run: Path, chosen, groups) -> dict[str, np.ndarray]:
    """The crop model's logits on crops from the reference mask and from the U-Net's of the same source and seed
    (NaN rows where that mask is empty), and the whole-scan twin's probabilities."""
    source, tag, seed = run.name.split("-")
    spec = grader_spec(run_tag(tag)[0])
    masks = predicted_masks(runs_of(SEGMENTER) / f"{source}-squash-{seed}", [read_case(c)[0] for c in chosen])
    found = [k for k, m in enumerate(masks) if m.any()]
    unet = np.full((len(chosen), len(CLASSES)), np.nan, np.float32)
    unet[found] = logits(run / MODEL / "best.pt", decode_lesions([chosen[k] for k in found], spec, groups, False,
                                                                 [masks[k] for k in found]).images)
    whole = decode_for(chosen, REGISTRY[MODEL], groups, progress=False).images
    return {"truth": logits(run / MODEL / "best.pt", decode_lesions(chosen, spec, groups, progress=False).images),
            "unet": unet, "whole": softmax(logits(runs_of(MODEL) / f"{source}-squash-{seed}" / MODEL / "best.pt", whole))}


SHARES = (0.1, 0.3, 0.5, 0.7, 1.0)


def scores(p: dict[str, np.ndarray], malignant: np.ndarray) -> dict[str, float]:
    """Malignant AUC of the twin, of the crop model alone, and of the twin's probabilities re-split by the crop model
    as the ensemble does it (``Fusion.grade``) at several shares. Where the U-Net's mask is empty the twin answers."""
    ways = {"whole scan (twin)": p["whole"][:, MALIGNANT],
            "crop alone, reference mask": softmax(p["truth"][:, :2])[:, 1]}
    for share in SHARES:
        graded = Fusion({}, {}, {}, grade_share=share).grade(p["whole"], {"crop": p["unet"]})
        ways[f"graded, U-Net mask, share {share}"] = graded[:, MALIGNANT]
    return {k: float(roc_auc_score(malignant, v)) for k, v in ways.items()}


def read_scores(run: Path, read: str, split, cases) -> dict:
    """``scores`` of ``run`` on ``read``'s validation lesion scans and the share of them its U-Net left empty, kept in
    ``run/scores-<read>.json`` (read again when the run's or its twins' weights are newer, or the split differs)."""
    source, _, seed = run.name.split("-")
    kept = run / f"scores-{read}.json"
    inputs = [run / MODEL / "best.pt", runs_of(MODEL) / f"{source}-squash-{seed}" / MODEL / "best.pt",
              runs_of(SEGMENTER) / f"{source}-squash-{seed}" / SEGMENTER / "best.pt"]
    if kept.exists() and all(kept.stat().st_mtime > f.stat().st_mtime for f in inputs):
        got = json.loads(kept.read_text())
        if got["split"] == split.fingerprints:  # scores of another split are read again
            return got
    chosen = lesion_cases(split, cases, read, "val")
    p = outputs(run, chosen, split.groups)
    got = {"scores": scores(p, np.array([c.label == "malignant" for c in chosen])),
           "empty": float(np.isnan(p["unet"]).any(1).mean()), "split": split.fingerprints}
    kept.write_text(json.dumps(got, indent=1))
    return got


def evaluate(args) -> int:
    split, cases = load_verified([DEFAULT_DATA_DIR / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    rows: dict[tuple, list[float]] = {}
    empty: dict[tuple, list[float]] = {}
    for run in sorted(r for r in RUNS.glob(f"{args.source or '*'}-*-s*") if finished(r)):
        source, tag, seed = run.name.split("-")
        if args.augment and run_tag(tag)[1] != args.augment:
            continue
        if not (finished(runs_of(MODEL) / f"{source}-squash-{seed}")
                and finished(runs_of(SEGMENTER) / f"{source}-squash-{seed}", SEGMENTER)):
            print(f"{run.name}: its twins have not finished; skipped")
            continue
        for read in (OTHER[source], source):
            got = read_scores(run, read, split, cases)
            for k, v in got["scores"].items():
                rows.setdefault((source, tag, read, k), []).append(v)
            empty.setdefault((source, tag, read), []).append(got["empty"])
            print(run.name, read, " ".join(f"{v:.3f}" for v in got["scores"].values()), flush=True)
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


def in_domain(args) -> int:
    """The ensemble of ``--weights`` (with a grader shipped) on both validation splits, its graders' share set to each
    of ``SHARES`` against 0: what the share costs or gains where the models were trained."""
    from models.inference.ensemble import predict_cases
    from models.training.calibrate import nll
    from models.training.metrics import classification_metrics, paired_class_differences
    from models.weights import Manifest

    manifest = Manifest.read(args.weights)
    fusion = Fusion.from_manifest(manifest)
    split, cases = load_verified([DEFAULT_DATA_DIR], DEFAULT_SPLIT, progress=False)
    print(f"{args.weights}: fitted share {fusion.grade_share}\n")
    print("| source (val) | share | macro-F1 | malignant AUC | NLL | macro-F1 minus share 0 | AUC minus share 0 |")
    print("|---|---|---|---|---|---|---|")
    for source in FOLDERS:
        chosen = split.select([c for c in cases if c.source == source], "val")
        preds = predict_cases(manifest, chosen, split.groups, progress=False)
        _, plain = fusion.classify(preds.logits)
        y = [CLASSES[k] for k in preds.labels]
        present = [c for c in CLASSES if c in set(y)]
        for share in sorted({0.0, fusion.grade_share, *SHARES}):
            graded = dataclasses.replace(fusion, grade_share=share).grade(plain, preds.grade_logits)
            m = classification_metrics(y, graded, average_over=present, n_boot=0).scores
            d = paired_class_differences(y, plain, graded, groups=preds.groups, average_over=present, n_boot=1000)
            print(f"| {source} | {share} | {m['macro_f1'].value:.3f} | {m['malignant_auc'].value:.3f} | "
                  f"{nll(graded, preds.labels):.4f} | {d['macro_f1']} | {d['malignant_auc']} |", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--source", choices=tuple(FOLDERS), required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--margin", type=float, default=0.3)
    t.add_argument("--augment", choices=AUGMENTATIONS, default="standard",
                   help='"scanner": also scanner-shift changes of intensity (models/training/augment.py)')
    e = sub.add_parser("evaluate")
    e.add_argument("--source", choices=tuple(FOLDERS), help="only the runs trained on this source (default: all)")
    e.add_argument("--augment", choices=AUGMENTATIONS, help="only the runs trained with this augmentation")
    d = sub.add_parser("in-domain")
    d.add_argument("--weights", type=Path, required=True, help="a weights folder with a lesion grader shipped")
    args = ap.parse_args(argv)
    return {"train": train, "evaluate": evaluate, "in-domain": in_domain}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
