"""Fitting the ensemble on the validation split: ``sonomark calibrate [--data DIR...]``.

- a temperature per classifier (minimum validation NLL), so its probabilities are calibrated;
- the classifiers' combination weights (minimum NLL of the weighted mean of calibrated probabilities);
- the segmenters' weights and the mask threshold (maximum mean Dice over validation images, where a
  normal scan scores 1 only when nothing is predicted);
- then, with that mask, each lesion grader's temperature (benign vs malignant, on the validation lesions it found)
  and the graders' share of the benign/malignant split (minimum NLL of the ensemble's probabilities, on a grid);
- first of all, the activation ranges of each member registered ``int8`` (run int8 on the CPU), so that
  the fits above are made on the outputs the engine gives.
The results go into ``weights/manifest.json``. The test split is never read.
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from scipy.optimize import minimize, minimize_scalar

from models.data.masks import dice_iou
from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.data.records import CLASSES
from models.inference.ensemble import CasePredictions, Fusion, grade_cases, predict_cases, softmax
from models.inference.quantize import activation_ranges
from models.inference.runtime import onnx_bytes
from models.preprocess import decode_for, normalize
from models.weights import WEIGHTS_DIR, Manifest
from models.zoo import get_spec

THRESHOLDS = np.round(np.arange(0.2, 0.81, 0.05), 2)
# int8 activation ranges from every 4th validation case (120 of 479): the trial's 1 in 16 training scans (104)
# kept validation macro-F1 and AUC to 0.001; min/max over many more scans only widens the ranges.
INT8_EVERY = 4


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    res = minimize_scalar(lambda log_t: nll(softmax(logits, float(np.exp(log_t))), y), bounds=(-3, 3), method="bounded")
    return float(np.exp(res.x))


def _nelder_mead(loss, x0: np.ndarray) -> np.ndarray:
    """Nelder-Mead from ``x0`` with unit first steps. Its default first steps from a zero coordinate are
    0.00025, over which a flat loss (five similar ensemble members, small class offsets) moves less than any
    useful tolerance: it stopped where it started."""
    simplex = np.vstack([x0, x0 + np.eye(len(x0))])
    return minimize(loss, x0, method="Nelder-Mead", options={"initial_simplex": simplex, "xatol": 1e-4,
                                                              "fatol": 1e-7, "maxiter": 1000 * len(x0)}).x


def fit_temperature_and_bias(logits: np.ndarray, y: np.ndarray, ridge: float = 0.01) -> tuple[float, list[float]]:
    """A temperature and a logit offset per class (the first class's fixed at 0), minimum NLL
    ("bias-corrected temperature scaling", Alexandari et al., ICML 2020).

    The offsets absorb a change of class mix between where a model was trained and where it is used,
    e.g. a site's normal scans that the base never saw. ``ridge`` keeps the offset of a class absent
    from ``y`` finite.
    """
    k = logits.shape[1]

    def loss(x: np.ndarray) -> float:
        bias = np.r_[0.0, x[1:]]
        return nll(softmax(logits / np.exp(x[0]) + bias), y) + ridge * float((x[1:] ** 2).sum())

    x = _nelder_mead(loss, np.r_[np.log(fit_temperature(logits, y)), np.zeros(k - 1)])
    return float(np.exp(x[0])), [0.0, *(round(float(b), 4) for b in x[1:])]


def fit_class_weights(probs: Mapping[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    names = sorted(probs)
    if len(names) == 1:
        return {names[0]: 1.0}

    def loss(z: np.ndarray) -> float:
        w = np.exp(z) / np.exp(z).sum()
        return nll(sum(wi * probs[n] for wi, n in zip(w, names)), y)

    z = _nelder_mead(loss, np.zeros(len(names)))
    w = np.exp(z) / np.exp(z).sum()
    return {n: round(float(wi), 4) for n, wi in zip(names, w)}


def mean_dice(prob: np.ndarray, masks: np.ndarray, threshold: float) -> float:
    return float(np.mean([dice_iou(p > threshold, m)[0] for p, m in zip(prob, masks)]))


def fit_segmentation(probs: Mapping[str, np.ndarray], masks: np.ndarray, step: float = 0.25) -> tuple[dict[str, float], float, float]:
    """(weights, threshold, validation mean Dice) by grid search over the weight simplex and thresholds."""
    names = sorted(probs)
    grid = np.round(np.arange(0, 1 + 1e-9, step), 4)
    best = (-1.0, {}, 0.5)
    for combo in itertools.product(grid, repeat=len(names)):
        if abs(sum(combo) - 1) > 1e-6:
            continue
        fused = sum(w * probs[n] for w, n in zip(combo, names))
        for t in THRESHOLDS:
            d = mean_dice(fused, masks, t)
            if d > best[0]:
                best = (d, dict(zip(names, map(float, combo))), float(t))
    return best[1], best[2], best[0]


def fit_int8_ranges(manifest: Manifest, cases, groups: Mapping[str, str] | None = None, every: int = INT8_EVERY,
                    progress: bool = True) -> list[str]:
    """Measure the activation ranges of each shipped member registered ``int8`` on every ``every``-th of
    ``cases`` and write them into its manifest entry (``models.inference.quantize``); the members done.

    Run before the members' outputs are predicted for the fits below, so that these fit the int8 outputs the
    engine will give."""
    done = []
    for name in manifest.shipped():
        spec = get_spec(name)
        if not spec.int8:
            continue
        images = decode_for(list(cases)[::every], spec, groups, progress=progress).images
        inputs = (normalize(torch.from_numpy(np.ascontiguousarray(image[None])), spec).numpy() for image in images)
        manifest.models[name]["int8_ranges"] = activation_ranges(onnx_bytes(manifest.load(name), spec), inputs)
        done.append(name)
    if done:
        manifest.write()
    return done


GRADE_SHARES = np.round(np.arange(0, 1.001, 0.05), 2)


def fit_grading(manifest: Manifest, cases, preds: CasePredictions, fusion: Fusion) -> dict:
    """The lesion graders' temperatures (into the manifest) and their share of the benign/malignant split, read
    through ``fusion``'s fitted mask: ``{"grade_share", "grade_found", "grade_val_nll"}``."""
    grades = grade_cases(manifest, cases, preds, fusion, progress=False)
    pair = [CLASSES.index("benign"), CLASSES.index("malignant")]
    lesion = np.isin(preds.labels, pair)
    temps = {}
    for name, logits in grades.items():
        read = lesion & ~np.isnan(logits).any(1)
        if read.sum() < 2 or len(set(preds.labels[read])) < 2:
            raise ValueError(f"{name}: the mask found fewer than 2 validation lesions of each kind to read; "
                             "calibrate it on more validation lesion cases")
        y = (preds.labels[read] == pair[1]).astype(int)
        temps[name] = fit_temperature(logits[read][:, pair], y)
        manifest.models[name]["temperature"] = round(temps[name], 4)
    _, fused = fusion.classify(preds.logits)
    graded = replace(fusion, temperatures={**fusion.temperatures, **temps})
    losses = {float(a): nll(replace(graded, grade_share=float(a)).grade(fused, grades), preds.labels)
              for a in GRADE_SHARES}
    share = min(losses, key=losses.get)
    found = ~np.isnan(next(iter(grades.values()))).any(1)
    return {"grade_share": share, "grade_found": round(float(found[lesion].mean()), 4),
            "grade_val_nll": {"without": round(losses[0.0], 4), "with": round(losses[share], 4)}}


def calibrate(manifest: Manifest, preds: CasePredictions, fingerprints: Mapping[str, str],
              class_bias: bool = False, cases=None) -> dict:
    """Fit and write the ensemble's calibration; ``class_bias`` also fits per-class logit offsets. The lesion
    graders are fitted only when ``cases`` (those ``preds`` were made on) are given: they read the scans again."""
    y = preds.labels
    biases: dict[str, list[float]] = {}
    if class_bias:
        fits = {n: fit_temperature_and_bias(l, y) for n, l in preds.logits.items()}
        temps = {n: t for n, (t, _) in fits.items()}
        biases = {n: b for n, (_, b) in fits.items()}
    else:
        temps = {n: fit_temperature(l, y) for n, l in preds.logits.items()}
    for n, t in temps.items():
        manifest.models[n]["temperature"] = round(t, 4)
        manifest.models[n].pop("class_bias", None)
        if n in biases:
            manifest.models[n]["class_bias"] = biases[n]
    fitted: dict = {"split": "val", "fingerprints": dict(fingerprints), "n_cases": len(y),
                    "sources": sorted(set(preds.sources))}  # what it was fitted on (cross-site evaluation checks)
    if preds.logits:
        fusion = Fusion(temps, {}, {}, class_bias={n: tuple(b) for n, b in biases.items()})
        calibrated = {n: fusion.calibrated(n, l) for n, l in preds.logits.items()}
        fitted["class_weights"] = fit_class_weights(calibrated, y)
        fitted["val_nll"] = {n: round(nll(p, y), 4) for n, p in calibrated.items()}
    if preds.seg_probs:
        weights, threshold, dice = fit_segmentation(preds.seg_probs, preds.masks)
        fitted.update(seg_weights=weights, threshold=threshold, val_mean_dice=round(dice, 4))
    if cases is not None and preds.logits and preds.seg_probs and manifest.shipped("grade"):
        fitted.update(fit_grading(manifest, cases, preds, Fusion(temps, fitted["class_weights"], fitted["seg_weights"],
                                                                 fitted["threshold"], {n: tuple(b) for n, b in biases.items()})))
    elif manifest.shipped("grade"):  # refitted without the scans (a site's adaptation): the graders keep their share
        fitted["grade_share"] = manifest.ensemble.get("fitted", {}).get("grade_share", 0.0)
    manifest.ensemble["fitted"] = fitted
    manifest.write()
    return fitted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", type=Path, default=[DEFAULT_DATA_DIR])
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    split, cases = load_verified(args.data, args.split)
    manifest = Manifest.read(args.weights)
    if not manifest.shipped():
        print(f"error: {args.weights / 'manifest.json'} lists no models; ship some first", file=sys.stderr)
        return 1
    val = split.select(cases, "val")
    for name in fit_int8_ranges(manifest, val, split.groups):
        print(f"{name}: int8 activation ranges measured on every {INT8_EVERY}th validation case")
    try:
        fitted = calibrate(manifest, predict_cases(manifest, val, split.groups, grade=False), split.fingerprints,
                           cases=val)
    except ValueError as error:  # a lesion grader with too few validation lesions to fit (fit_grading)
        print(f"error: {args.weights / 'manifest.json'}: {error}", file=sys.stderr)
        return 1
    print({k: v for k, v in fitted.items() if k != "fingerprints"})
    return 0

