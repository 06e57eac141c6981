"""Does standardising a scan's grey levels to the training scanner's carry the models across sites? (results in
``reports/cross_site.md``, "Grey levels standardised at test time")

BUSI and BUS-BRA differ in grey levels before anything else: at 160 px the median scan's 2nd percentile is 9 on
BUSI and 36 on BUS-BRA, its 98th 197 and 178. A model trained on one scanner then reads another scanner's tissue at
grey levels it never met. This maps each scan, before the model, onto the training source's grey levels:

- ``quantile``: the scan's 2nd, 25th, 50th, 75th and 98th percentiles onto the training split's medians of the
  same percentiles (a piecewise-linear, monotone map: gain, offset and gamma, little else);
- ``match``: full histogram matching of the scan onto the training split's mean grey-level distribution.

Read with the single-source runs of ``reports/aspect_fit.py`` (squashed fit): the U-Net (Dice at its 160 px, empty
masks on lesion scans, any lesion on a normal scan) and EfficientNet-Lite0 (malignant AUC, macro-F1), each on the
other source's validation split (which would choose) and on its own source's validation split. Test splits are not
read: nothing is adopted. Differences are paired by training seed, with a 95% t interval over seeds.

    python reports/intensity_match.py        # a few minutes; every finished squash run in runs/aspect-fit
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.masks import dice_iou  # noqa: E402
from models.data.records import CLASSES  # noqa: E402
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import run_model, softmax  # noqa: E402
from models.preprocess import CaseArrays, decode_for  # noqa: E402
from models.training.metrics import classification_metrics  # noqa: E402
from models.zoo import REGISTRY, build_model, load_state_file  # noqa: E402

sys.path.insert(0, str(REPO / "reports"))
from aspect_fit import (FOLDERS, MODEL, OTHER, SEGMENTER, finished, runs_of, seed_difference,  # noqa: E402
                        seg_scores)

QUANTILES = (2, 25, 50, 75, 98)
LEVELS = np.arange(256)
VARIANTS = ("none", "quantile", "match")


def grey_cdf(image: np.ndarray) -> np.ndarray:
    """The share of an uint8 image's pixels at or below each grey level."""
    counts = np.cumsum(np.bincount(image.ravel(), minlength=256)).astype(float)
    return counts / counts[-1]


def reference(images: np.ndarray) -> dict[str, np.ndarray]:
    """A training split's grey levels: its mean distribution, and the medians of its scans' percentiles."""
    return {"cdf": np.mean([grey_cdf(im) for im in images], axis=0),
            "quantiles": np.median(np.percentile(images.reshape(len(images), -1), QUANTILES, axis=1), axis=1)}


def _apply(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return np.clip(np.round(lut), 0, 255).astype(np.uint8)[image]


def standardise(images: np.ndarray, ref: dict[str, np.ndarray], variant: str) -> np.ndarray:
    """uint8 scans ``(N, S, S)`` mapped onto ``ref``'s grey levels by ``variant`` (``none`` leaves them)."""
    if variant == "none":
        return images
    out = np.empty_like(images)
    for k, image in enumerate(images):
        if variant == "match":
            lut = np.minimum(np.searchsorted(ref["cdf"], grey_cdf(image) - 1e-9), 255)  # the first level reaching it
        else:
            xs, first = np.unique(np.concatenate([[0], np.percentile(image, QUANTILES), [255]]), return_index=True)
            lut = np.interp(LEVELS, xs, np.concatenate([[0], ref["quantiles"], [255]])[first])
        out[k] = _apply(image, lut)
    return out


def seg_point(probs: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """``aspect_fit.seg_scores`` of masks at 0.5 at the model's size: mean Dice and empty masks on lesion scans, any
    lesion on normal scans."""
    pred = probs > 0.5
    return seg_scores({"dice": [dice_iou(p, m)[0] for p, m in zip(pred, masks)], "area": pred.mean(axis=(1, 2)),
                       "lesion": masks.any(axis=(1, 2))})


def class_point(logits: np.ndarray, a: CaseArrays) -> dict[str, float]:
    m = classification_metrics([CLASSES[k] for k in a.labels], softmax(logits), n_boot=0).scores
    return {k: float(m[k].value) for k in ("malignant_auc", "macro_f1") if k in m}


def read_scores(outputs: np.ndarray, a: CaseArrays, spec) -> dict[str, float]:
    """A model's outputs on ``a`` scored: ``seg_point`` for a segmenter, ``class_point`` for a classifier."""
    return seg_point(outputs, a.masks) if spec.task == "segment" else class_point(outputs, a)


def score_runs(model: str, split, cases) -> dict[tuple[str, str, str], list[float]]:
    """``{(trained on, read on, variant, score): [one value per seed]}`` over the finished squash runs."""
    spec = REGISTRY[model]
    decoded: dict[tuple[str, str], CaseArrays] = {}

    def arrays(source: str, name: str) -> CaseArrays:
        if (source, name) not in decoded:
            decoded[source, name] = decode_for(split.select([c for c in cases if c.source == source], name), spec,
                                               split.groups, progress=False)
        return decoded[source, name]

    out: dict[tuple, list[float]] = {}
    for run in sorted(p for p in runs_of(model).glob("*-squash-s*") if finished(p, model)):
        source = run.name.split("-")[0]
        ref = reference(arrays(source, "train").images)
        net = build_model(model, init=None)
        load_state_file(net, run / model / "best.pt")
        for read in (OTHER[source], source):
            a = arrays(read, "val")
            for variant in VARIANTS:
                y = run_model(net.eval(), spec, standardise(a.images, ref, variant))
                for score, value in read_scores(y, a, spec).items():
                    out.setdefault((source, read, variant, score), []).append(value)
        print(f"{model} {run.name}: scored", flush=True)
    return out


def table(model: str, values: dict) -> str:
    lines = [f"**{model}** (mean over seeds; standardised minus none, paired by seed, mean with 95% t interval)", "",
             "| trained on | read on (val) | score | seeds | none | quantile | quantile minus none | match | "
             "match minus none |", "|---|---|---|---|---|---|---|---|---|"]
    for (source, read, variant, score), base in values.items():
        if variant != "none":
            continue
        base = np.array(base)
        cells = [f"{base.mean():.3f}"]
        for other in VARIANTS[1:]:
            v = np.array(values[source, read, other, score])
            cells += [f"{v.mean():.3f}", seed_difference(v - base)]
        lines.append(f"| {source} | {read} | {score} | {len(base)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    split, cases = load_verified([DEFAULT_DATA_DIR / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    print("dataset fingerprints: " + ", ".join(f"{s} {f}" for s, f in split.fingerprints.items()))
    for model in (SEGMENTER, MODEL):
        print("\n" + table(model, score_runs(model, split, cases)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
