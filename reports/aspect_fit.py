"""Does keeping a scan's aspect ratio (``fit="pad"``) instead of squashing it to the square carry a classifier
across sites? (results in ``reports/aspect_fit.md``)

BUSI's scans are landscape (median width/height 1.2), BUS-BRA's portrait (0.76). Squashed to the square, the
same lesion looks taller on BUSI than on BUS-BRA, and the lesions' height/width ratio, a malignancy sign, drifts
between the sources although it agrees in their own pixels. This trains EfficientNet-Lite0 on one source with
each fit and reads the other source:

    python reports/aspect_fit.py train --source busi --fit pad --seed 0     # runs/aspect-fit/busi-pad-s0
    python reports/aspect_fit.py evaluate                                   # every run there; probabilities cached
    python reports/aspect_fit.py geometry                                   # the lesions' shape, per source
    python reports/aspect_fit.py train --model unet_lite0 --source busi --fit pad   # runs/aspect-fit/unet_lite0/...
    python reports/aspect_fit.py evaluate --model unet_lite0                # Dice in the scan's own pixels

Training is the cross-site recipe of ``reports/cross_site.md`` (12 epochs, batch 32, lr 3e-4, patience 6);
``train --init RUN/efficientnet_lite0/best.pt`` fine-tunes a run instead (6 epochs, lr 1e-4: ``*-padft-*``).
The U-Net's recipe is its cross-site one (10 epochs, batch 16, lr 1e-3, patience 6); its masks are taken back to
the scan's shape (``preprocess.to_scan``) and thresholded at 0.5 before Dice, so both fits are scored alike.
Each run is scored on its own source's validation split and on the other source's validation split (which
chooses) and test split (which only reports); pad minus squash comes with 95% paired group-bootstrap intervals.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import run_model, softmax  # noqa: E402
from models.data.masks import dice_iou  # noqa: E402
from models.preprocess import decode_for, read_case, to_scan  # noqa: E402
from models.training.metrics import (Interval, classification_metrics, group_bootstrap,  # noqa: E402
                                     paired_class_differences)
from models.zoo import REGISTRY, build_model, load_state_file  # noqa: E402

MODEL = "efficientnet_lite0"
SEGMENTER = "unet_lite0"
MODELS = (MODEL, SEGMENTER)  # commit 1c423a0 adds efficientnet_lite2 (reports/cross_site.md)
RUNS = REPO / "runs" / "aspect-fit"
FOLDERS = {"busi": "Dataset_BUSI_with_GT", "busbra": "BUSBRA"}
OTHER = {"busi": "busbra", "busbra": "busi"}
SCORES = ("macro_f1", "malignant_auc", "normal_recall", "lesion_recall", "ece")
SEG_SCORES = ("dice_mean", "empty_rate", "fp_image_rate")


def use_fit(fit: str, model: str = MODEL):
    """The registry's ``model`` with ``fit``, for this process (training and evaluation read the registry)."""
    REGISTRY[model] = dataclasses.replace(REGISTRY[model], fit=fit)
    return REGISTRY[model]


def runs_of(model: str) -> Path:
    """Lite0's runs (``RUNS/busi-pad-s0``) or another model's (``RUNS/<model>/busi-pad-s0``)."""
    return RUNS if model == MODEL else RUNS / model


def train_args(model: str, source: str, runs: Path, seed: int, init: Path | None = None) -> list[str]:
    """``sonomark train``'s arguments for the one-source cross-site recipe of ``model`` (see the docstring)."""
    if model == SEGMENTER and init:
        raise SystemExit(f"--init fine-tunes classifier runs only; train {SEGMENTER} without it")
    if model == SEGMENTER:
        recipe = ["--epochs", "10", "--lr", "0.001", "--batch-size", "16"]
    else:
        recipe = (["--epochs", "6", "--lr", "0.0001", "--init", str(init)] if init
                  else ["--epochs", "12", "--lr", "0.0003"]) + ["--batch-size", "32"]
    return ["--models", model, "--data", str(DEFAULT_DATA_DIR / FOLDERS[source]), "--runs", str(runs), *recipe,
            "--patience", "6", "--seed", str(seed), "--quiet"]


def train(args) -> int:
    from models.training import train as T
    use_fit(args.fit, args.model)
    tag = f"{args.fit}ft" if args.init else args.fit
    runs = runs_of(args.model) / f"{args.source}-{tag}-s{args.seed}"
    return T.main(train_args(args.model, args.source, runs, args.seed, args.init))


def finished(run: Path, model: str = MODEL) -> bool:
    """Whether the run's training is over (not a checkpoint of a run still going or paused)."""
    last = run / model / "last.pt"
    return last.is_file() and bool(torch.load(last, map_location="cpu", weights_only=False)["state"]["done"])


def evaluate(args) -> int:
    if args.model == SEGMENTER:
        return evaluate_segmenter(args)
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    decoded: dict[tuple, object] = {}
    results = {}
    for run in sorted(p for p in runs_of(args.model).glob("*-s*") if finished(p, args.model)):
        source, tag, seed = run.name.split("-")
        spec = use_fit(tag.removesuffix("ft"), args.model)
        cache = run / "probs.json"
        if cache.is_file():
            results[run.name] = json.loads(cache.read_text())
            continue
        net = build_model(args.model, init=None)
        load_state_file(net, run / args.model / "best.pt")
        out = {}
        for s, name in ((source, "val"), (OTHER[source], "val"), (OTHER[source], "test")):
            key = (spec.fit, s, name)
            if key not in decoded:
                decoded[key] = decode_for(split.select([c for c in cases if c.source == s], name), spec, split.groups,
                                          progress=False)
            a = decoded[key]
            out[f"{s} {name}"] = {"labels": [CLASSES[k] for k in a.labels], "groups": list(a.groups),
                                  "probs": softmax(run_model(net.eval(), spec, a.images)).round(5).tolist()}
        cache.write_text(json.dumps(out))
        results[run.name] = out
        print(f"{run.name}: scored", flush=True)
    print(table(results) + "\n\n" + seed_summary(results))
    return 0


def _cell(iv) -> str:
    return "—" if iv is None or np.isnan(iv.value) else f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def table(results: dict, scores: tuple[str, ...] = SCORES, per_run=None, paired=None,
          what: str = "pad (ft: squash run fine-tuned padded)") -> str:
    """Each run's scores, then pad minus squash paired on the same cases, then the summary over seeds.

    ``per_run(r)`` and ``paired(r, base)`` give ``{score: Interval}``; the defaults are the classifier's.
    """
    per_run = per_run or (lambda r: classification_metrics(r["labels"], np.array(r["probs"]),
                                                           groups=r["groups"]).scores)
    paired = paired or (lambda r, b: paired_class_differences(r["labels"], np.array(b["probs"]),
                                                              np.array(r["probs"]), groups=r["groups"]))
    head = " | ".join(scores) + " |", "|---|---|" + "---|" * len(scores)
    lines = ["| run | split | " + head[0], head[1]]
    for name, out in results.items():
        for key, r in out.items():
            m = per_run(r)
            lines.append(f"| {name} | {key} | " + " | ".join(_cell(m.get(s)) for s in scores) + " |")
    lines += ["", f"{what} minus squash, same source, seed and cases (95% paired group bootstrap):", "",
              "| trained on, seed | split | " + head[0], head[1]]
    for name, out in results.items():
        source, fit, seed = name.split("-")
        base = results.get(f"{source}-squash-{seed}")
        if fit == "squash" or base is None:
            continue
        for key, r in out.items():
            diff = paired(r, base[key])
            lines.append(f"| {source}, {fit}, {seed} | {key} | " + " | ".join(_cell(diff.get(s)) for s in scores)
                         + " |")
    return "\n".join(lines)


def _point(r: dict, score: str) -> float:
    m = classification_metrics(r["labels"], np.array(r["probs"]), groups=r["groups"], n_boot=0).scores
    return float(m[score].value) if score in m else float("nan")


def seed_difference(d: np.ndarray) -> str:
    """Differences paired by training seed: their mean with a 95% t interval over the seeds."""
    from scipy import stats
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def seed_summary(results: dict, scores: tuple[str, ...] = ("malignant_auc", "macro_f1", "lesion_recall"),
                 point=None) -> str:
    """Across seeds: each fit's mean (SD) per split, and pad minus squash paired by seed, with a t interval.

    The bootstrap intervals above hold one seed's cases fixed; this asks whether a difference outlives the
    seed-to-seed spread of training itself.
    """
    point = point or _point
    lines = ["Across seeds (mean, SD in brackets; pad minus squash paired by seed, mean with 95% t interval "
             "over seeds):", "", "| trained on | split | score | seeds | squash | pad | pad minus squash |",
             "|---|---|---|---|---|---|---|"]
    for source in FOLDERS:
        seeds = sorted(n.split("-")[2] for n in results if n.startswith(f"{source}-pad-")
                       and f"{source}-squash-{n.split('-')[2]}" in results)
        if len(seeds) < 2:
            continue
        for key in results[f"{source}-pad-{seeds[0]}"]:
            for score in scores:
                sq = np.array([point(results[f"{source}-squash-{s}"][key], score) for s in seeds])
                pd = np.array([point(results[f"{source}-pad-{s}"][key], score) for s in seeds])
                if np.isnan(sq).any():
                    continue
                lines.append(f"| {source} | {key} | {score} | {len(sq)} | {sq.mean():.3f} ({sq.std(ddof=1):.3f}) | "
                             f"{pd.mean():.3f} ({pd.std(ddof=1):.3f}) | {seed_difference(pd - sq)} |")
    return "\n".join(lines)


def mask_records(net, spec, cases) -> dict:
    """Per case, the U-Net's mask at 0.5 in the scan's own pixels: Dice against the truth, the share of the scan
    it covers, and whether the truth holds a lesion."""
    maps = run_model(net.eval(), spec, decode_for(cases, spec, progress=False).images)
    dice, area, lesion = [], [], []
    for c, m in zip(cases, maps):
        truth = read_case(c)[1]
        pred = to_scan(m, truth.shape, spec.fit) > 0.5
        dice.append(dice_iou(pred, truth)[0])
        area.append(float(pred.mean()))
        lesion.append(bool(truth.any()))
    return {"dice": dice, "area": area, "lesion": lesion}


def seg_scores(r: dict, idx: np.ndarray | None = None) -> dict[str, float]:
    """Mean Dice and empty masks on lesion scans, false lesions on normal scans (``idx``: a resample)."""
    idx = np.arange(len(r["dice"])) if idx is None else idx
    les = np.asarray(r["lesion"])[idx]
    dice, area = np.asarray(r["dice"])[idx], np.asarray(r["area"])[idx]
    out = {"dice_mean": dice[les].mean(), "empty_rate": (area[les] == 0).mean()} if les.any() else {}
    if (~les).any():
        out["fp_image_rate"] = (area[~les] > 0).mean()
    return {k: float(v) for k, v in out.items()}


def _seg_diff(r: dict, base: dict, idx: np.ndarray | None = None) -> dict[str, float]:
    a = seg_scores(base, idx)
    return {k: v - a[k] for k, v in seg_scores(r, idx).items()}


def _seg_intervals(r: dict, stat) -> dict[str, Interval]:
    """``stat(idx)`` on all cases, with its 95% group-bootstrap interval (``idx=None``: every case)."""
    point, draws = stat(None), group_bootstrap(stat, r["groups"], 1000, 0)
    return {k: Interval(v, *np.percentile(draws[k], [2.5, 97.5])) for k, v in point.items()}


def evaluate_segmenter(args) -> int:
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    results = {}
    for run in sorted(p for p in runs_of(SEGMENTER).glob("*-s*") if finished(p, SEGMENTER)):
        source, fit, seed = run.name.split("-")
        cache = run / "masks.json"
        if not cache.is_file():
            spec = use_fit(fit, SEGMENTER)
            net = build_model(SEGMENTER, init=None)
            load_state_file(net, run / SEGMENTER / "best.pt")
            out = {}
            for s, name in ((source, "val"), (OTHER[source], "val"), (OTHER[source], "test")):
                chosen = split.select([c for c in cases if c.source == s], name)
                out[f"{s} {name}"] = {**mask_records(net, spec, chosen), "groups": [split.groups[c.case_id]
                                                                                    for c in chosen]}
            cache.write_text(json.dumps(out))
            print(f"{run.name}: scored", flush=True)
        results[run.name] = json.loads(cache.read_text())
    print(table(results, SEG_SCORES, per_run=lambda r: _seg_intervals(r, lambda i: seg_scores(r, i)),
                paired=lambda r, b: _seg_intervals(r, lambda i: _seg_diff(r, b, i)), what="pad"))
    print("\n" + seed_summary(results, SEG_SCORES, point=lambda r, s: seg_scores(r).get(s, float("nan"))))
    return 0


def geometry(args) -> int:
    """The lesions' bounding-box height/width per source and class, in the scan's pixels and squashed."""
    d = DEFAULT_DATA_DIR
    _, cases = load_verified([d / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    rows = []
    for c in cases:
        if c.label == "normal":
            continue
        mask = read_case(c)[1]
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        height, width = mask.shape
        rows.append((c.source, c.label, width / height, h / w, (h / height) / (w / width)))
    print("| source | class | lesions | scan width/height, median | lesion height/width, scan pixels: quartiles "
          "| squashed to the square |")
    print("|---|---|---|---|---|---|")
    for source in FOLDERS:
        for label in ("benign", "malignant"):
            r = np.array([x[2:] for x in rows if x[0] == source and x[1] == label])
            q = lambda v: " / ".join(f"{p:.2f}" for p in np.percentile(v, [25, 50, 75]))  # noqa: E731
            print(f"| {source} | {label} | {len(r)} | {np.median(r[:, 0]):.2f} | {q(r[:, 1])} | {q(r[:, 2])} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--source", required=True, choices=tuple(FOLDERS))
    t.add_argument("--fit", required=True, choices=("squash", "pad"))
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--model", choices=MODELS, default=MODEL)
    t.add_argument("--init", type=Path, help="fine-tune this checkpoint (6 epochs, lr 1e-4) instead: run *-<fit>ft-*")
    e = sub.add_parser("evaluate")
    e.add_argument("--model", choices=MODELS, default=MODEL)
    sub.add_parser("geometry")
    args = ap.parse_args(argv)
    return {"train": train, "evaluate": evaluate, "geometry": geometry}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
