"""Do two training recipes from the domain-generalisation literature carry the models across sites? (results in
``reports/cross_site.md``, "A moving average of the weights, and linear probing before fine-tuning")

- ``ema2``: ``sonomark train --ema-epochs 2`` validates and keeps a moving average of the weights over about the last
  two epochs. Averaging weights along training (SWA, SWAD) finds flatter minima, reported to hold better on unseen
  domains than one step's weights.
- ``lpft``: ``sonomark train --linear-probe`` first fits the classifier's head on the frozen ImageNet trunk's features
  (logistic regression), then fine-tunes everything (LP-FT): fine-tuning with an untrained head distorts the
  pretrained features, which is reported to cost accuracy out of distribution more than in it. Classifiers only.

Each trains the one-source cross-site recipe of ``reports/aspect_fit.py`` (squashed fit) with the change, and is
paired with the run of the same source and seed there, without it:

    python reports/recipe_variants.py train --recipe ema2 --model unet_lite0 --source busi --seed 0
    python reports/recipe_variants.py evaluate      # every finished run in runs/recipe-variants, beside its twin

Read as ``reports/intensity_match.py`` reads: the U-Net (Dice at its 160 px, empty masks on lesion scans, any lesion
on a normal scan) and EfficientNet-Lite0 (malignant AUC, macro-F1), on the other source's validation split (which
would choose) and on the training source's own. Test splits are not read. Differences are paired by training seed,
with a 95% t interval over seeds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import run_model  # noqa: E402
from models.preprocess import CaseArrays, decode_for  # noqa: E402
from models.zoo import REGISTRY, build_model, load_state_file  # noqa: E402

sys.path.insert(0, str(REPO / "reports"))
from aspect_fit import FOLDERS, MODELS, OTHER, finished, runs_of, seed_difference, train_args  # noqa: E402
from intensity_match import read_scores  # noqa: E402

RECIPES = {"ema2": ["--ema-epochs", "2"], "lpft": ["--linear-probe"]}
RUNS = REPO / "runs" / "recipe-variants"


def run_dir(recipe: str, model: str, source: str, seed: int) -> Path:
    return RUNS / model / f"{source}-{recipe}-s{seed}"


def train(args) -> int:
    from models.training import train as T
    return T.main(train_args(args.model, args.source, run_dir(args.recipe, args.model, args.source, args.seed),
                             args.seed) + RECIPES[args.recipe])


def paired_runs(recipe: str, model: str) -> list[tuple[str, int, Path, Path]]:
    """``(source, seed, without, with)`` for every finished run of ``recipe`` whose aspect-fit twin has finished."""
    out = []
    for run in sorted((RUNS / model).glob(f"*-{recipe}-s*")):
        source, _, seed = run.name.split("-")
        twin = runs_of(model) / f"{source}-squash-{seed}"
        if finished(run, model) and finished(twin, model):
            out.append((source, int(seed[1:]), twin, run))
    return out


def score_pairs(recipe: str, model: str, split, cases) -> dict[tuple[str, str, str, str], list[float]]:
    """``{(trained on, read on, "without"|"with", score): [one value per seed]}``."""
    spec = REGISTRY[model]
    decoded: dict[str, CaseArrays] = {}
    out: dict[tuple, list[float]] = {}
    for source, seed, *weights in paired_runs(recipe, model):
        for variant, run in zip(("without", "with"), weights):
            net = build_model(model, init=None)
            load_state_file(net, run / model / "best.pt")
            for read in (OTHER[source], source):
                if read not in decoded:
                    decoded[read] = decode_for(split.select([c for c in cases if c.source == read], "val"), spec,
                                               split.groups, progress=False)
                y = run_model(net.eval(), spec, decoded[read].images)
                for score, value in read_scores(y, decoded[read], spec).items():
                    out.setdefault((source, read, variant, score), []).append(value)
        print(f"{recipe} {model} {source} seed {seed}: scored", flush=True)
    return out


def table(recipe: str, model: str, values: dict) -> str:
    lines = [f"**{model}, {recipe}** ({' '.join(RECIPES[recipe])}; validation splits; mean over seeds, SD in "
             "brackets; with minus without, paired by seed, mean with 95% t interval)", "",
             "| trained on | read on (val) | score | seeds | without | with | with minus without | "
             "per seed, with / without |", "|---|---|---|---|---|---|---|---|"]
    for (source, read, variant, score), base in values.items():
        if variant != "without":
            continue
        base, changed = np.array(base), np.array(values[source, read, "with", score])
        sd = (lambda v: f" ({v.std(ddof=1):.3f})" if len(v) > 1 else "")
        lines.append(f"| {source} | {read} | {score} | {len(base)} | {base.mean():.3f}{sd(base)} | "
                     f"{changed.mean():.3f}{sd(changed)} | {seed_difference(changed - base)} | "
                     + ", ".join(f"{x:.3f} / {y:.3f}" for x, y in zip(changed, base)) + " |")
    return "\n".join(lines)


def evaluate(args) -> int:
    split, cases = load_verified([DEFAULT_DATA_DIR / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    print("dataset fingerprints: " + ", ".join(f"{s} {f}" for s, f in split.fingerprints.items()))
    for recipe in RECIPES:
        for model in MODELS[::-1]:
            if paired_runs(recipe, model):
                print("\n" + table(recipe, model, score_pairs(recipe, model, split, cases)), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--recipe", choices=tuple(RECIPES), required=True)
    t.add_argument("--model", choices=MODELS, required=True)
    t.add_argument("--source", choices=tuple(FOLDERS), required=True)
    t.add_argument("--seed", type=int, default=0)
    sub.add_parser("evaluate")
    args = ap.parse_args(argv)
    return {"train": train, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
