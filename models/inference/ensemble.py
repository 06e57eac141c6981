"""Running models and fusing their outputs: the ensemble's arithmetic, shared by calibration,
evaluation and the analysis engine.

Classifiers: each model's logits are divided by its temperature (fitted on validation), turned
into probabilities, and averaged with the ensemble's weights. Segmenters: lesion probability maps
are averaged with their weights and thresholded at the fitted threshold. A lesion grader (task "grade") reads the
square around that mask and re-splits the classifiers' lesion probability between benign and malignant
(``Fusion.grade``); the normal probability stays the classifiers'.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn
from tqdm import tqdm

from models.data.records import CLASSES
from models.inference.runtime import onnx_runner
from models.inference.postprocess import clean_mask
from models.preprocess import lesion_crop, normalize, read_case, reframe, to_scan
from models.zoo import ModelSpec

ENSEMBLE = "ensemble"  # the fused output's name wherever members and the ensemble are reported side by side


@torch.no_grad()
def run_model(model: nn.Module, spec: ModelSpec, images: np.ndarray, batch_size: int = 16, device: str = "cpu",
              bf16: bool = False) -> np.ndarray:
    """Raw outputs for uint8 scans ``(N, S, S)`` at the spec's size: logits ``(N, classes)`` for a
    classifier, lesion probabilities ``(N, S, S)`` for a segmenter."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device), spec)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            y = model(x).float()
        out.append((torch.sigmoid(y[:, 0]) if spec.task == "segment" else y).cpu().numpy())
    return np.concatenate(out) if out else np.empty((0,))


def run_int8(model: nn.Module, spec: ModelSpec, images: np.ndarray, ranges: Mapping[str, list[float]]) -> np.ndarray:
    """``run_model``'s outputs from the int8 graph the analysis engine runs (ONNX Runtime, batch 1, on the CPU)."""
    run = onnx_runner(model, spec, ranges)
    out = [run(normalize(torch.from_numpy(np.ascontiguousarray(image[None])), spec).numpy()) for image in images]
    if spec.task == "segment":
        out = [expit(y[:, 0]).astype(np.float32) for y in out]
    return np.concatenate(out) if out else np.empty((0,))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalized(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"ensemble weights {dict(weights)} must have a positive sum")
    return {k: v / total for k, v in weights.items()}


MIN_SAY = 0.05  # the share of its task's weight a member needs for its vote to count (voters, seg_voters)


def _shares(weights: Mapping[str, float], members: Iterable[str]) -> dict[str, float]:
    """Each member's share of its task's weight (an unfitted member weighs 1); none without members."""
    chosen = {n: weights.get(n, 1.0) for n in members}
    return normalized(chosen) if chosen else {}


def _with_say(shares: Mapping[str, float]) -> list[str]:
    return [n for n, share in shares.items() if share >= MIN_SAY]


@dataclass(frozen=True)
class Fusion:
    """The ensemble's fitted parameters (from the manifest)."""

    temperatures: dict[str, float]
    class_weights: dict[str, float]
    seg_weights: dict[str, float]
    threshold: float = 0.5
    # per classifier, a logit offset per class after the temperature (fitted by `sonomark adapt` on a site's
    # held-out cases: the site's class mix, e.g. normal scans its base never saw); none by default
    class_bias: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # the lesion graders' share of the benign/malignant split where a lesion was found (fitted on validation)
    grade_share: float = 0.0

    def calibrated(self, name: str, logits: np.ndarray) -> np.ndarray:
        """One classifier's calibrated probabilities: softmax(logits / T + bias)."""
        t = self.temperatures.get(name, 1.0)
        bias = self.class_bias.get(name)
        return softmax(logits if bias is None else logits + t * np.asarray(bias), t)

    def classify(self, logits: Mapping[str, np.ndarray],
                 grades: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-model calibrated probabilities and the weighted ensemble probabilities, re-split by the lesion
        graders' ``grades`` where given (``grade``)."""
        per_model = {n: self.calibrated(n, l) for n, l in logits.items()}
        w = self.class_shares(per_model)
        fused = sum(w[n] * p for n, p in per_model.items())
        return per_model, self.grade(fused, grades) if grades else fused

    def lesion_grade(self, grades: Mapping[str, np.ndarray]) -> np.ndarray:
        """The graders' mean calibrated (benign, malignant) probabilities ``(N, 2)`` from their logits ``(N,
        classes)``; NaN rows where no lesion was found to read. The normal logit, never trained, is left out."""
        pair = [CLASSES.index("benign"), CLASSES.index("malignant")]
        return np.mean([softmax(l[:, pair], self.temperatures.get(n, 1.0)) for n, l in grades.items()], axis=0)

    def grade(self, probs: np.ndarray, grades: Mapping[str, np.ndarray]) -> np.ndarray:
        """The ensemble's ``probs`` ``(N, classes)`` with the lesion probability (benign + malignant) split between
        benign and malignant as ``(1 - grade_share) x`` the classifiers' split plus ``grade_share x`` the graders'
        (``lesion_grade``); unchanged where no lesion was found. The normal probability is the classifiers'."""
        pair = [CLASSES.index("benign"), CLASSES.index("malignant")]
        q = self.lesion_grade(grades)
        lesion = probs[:, pair].sum(1, keepdims=True)
        split = probs[:, pair] / np.clip(lesion, 1e-12, None)
        mixed = np.where(np.isnan(q), split, (1 - self.grade_share) * split + self.grade_share * np.nan_to_num(q))
        out = probs.copy()
        out[:, pair] = lesion * mixed
        return out

    def class_shares(self, classifiers: Iterable[str]) -> dict[str, float]:
        """Each classifier's share of the ensemble's probabilities; none for a segment-only ensemble."""
        return _shares(self.class_weights, classifiers)

    def seg_shares(self, segmenters: Iterable[str]) -> dict[str, float]:
        """Each segmenter's share of the lesion probability."""
        return _shares(self.seg_weights, segmenters)

    def voters(self, classifiers: Iterable[str]) -> list[str]:
        """The classifiers with a say: at least ``MIN_SAY`` of the ensemble's weight.

        A member under that share moves no ensemble probability by more than 0.05, so the review flag does
        not count its vote (calibration once gave the from-scratch ResNet-18 0.02).
        """
        return _with_say(self.class_shares(classifiers))

    def votes(self, probs: Mapping[str, np.ndarray]) -> dict[str, tuple[str, float]]:
        """Per classifier with a say, the class it picks for one scan (``probs``: its probabilities in
        ``CLASSES`` order) and its share of the ensemble's weight (`models.inference.review`)."""
        shares = self.class_shares(probs)
        return {n: (CLASSES[int(np.argmax(probs[n]))], shares[n]) for n in self.voters(probs)}

    def seg_voters(self, segmenters: Iterable[str]) -> list[str]:
        """The segmenters with a say, by the classifiers' rule (calibration gave SegFormer-B0 0)."""
        return _with_say(self.seg_shares(segmenters))

    def segment(self, probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The weighted mean lesion probability (maps must share one shape)."""
        w = self.seg_shares(probs)
        return sum(w[n] * p for n, p in probs.items())

    @classmethod
    def from_manifest(cls, manifest) -> Fusion:
        fitted = manifest.ensemble.get("fitted", {})
        return cls(temperatures={n: m.get("temperature", 1.0) for n, m in manifest.models.items()},
                   class_weights=fitted.get("class_weights", {}), seg_weights=fitted.get("seg_weights", {}),
                   threshold=fitted.get("threshold", 0.5), grade_share=fitted.get("grade_share", 0.0),
                   class_bias={n: tuple(m["class_bias"]) for n, m in manifest.models.items() if m.get("class_bias")})


@dataclass(frozen=True)
class CasePredictions:
    """Every shipped model's raw output on a list of cases (at each model's input size)."""

    case_ids: tuple[str, ...]
    sources: tuple[str, ...]
    groups: tuple[str, ...]
    labels: np.ndarray  # index into CLASSES
    logits: dict[str, np.ndarray]  # classifier -> (N, classes)
    seg_probs: dict[str, np.ndarray]  # segmenter -> (N, S, S), S the largest segmenter input size
    masks: np.ndarray  # (N, S, S) ground truth at that size
    seg_fit: str = "squash"  # how the segmenters' square frame holds the scan (models.preprocess.to_scan)
    # lesion grader -> (N, classes) logits on the crop around the ensemble's mask; NaN rows where it is empty
    grade_logits: dict[str, np.ndarray] = field(default_factory=dict)


def predict_cases(manifest, cases, groups: Mapping[str, str] | None = None, device: str = "cpu",
                  progress: bool = True, grade: bool = True) -> CasePredictions:
    """Run every model of ``manifest`` over ``cases`` (each scan decoded once per input size and fit); the lesion
    graders (unless ``grade`` is False) on the crops around the manifest's fused masks (``grade_cases``)."""
    from models.preprocess import decode_cases, decode_for
    from models.zoo import get_spec

    seg_fits = {get_spec(n).fit for n in manifest.shipped("segment")}
    # the maps are fused in one square frame: the members' own where they share a fit, else the squashed scan's
    frame = next(iter(seg_fits)) if len(seg_fits) == 1 else "squash"
    by_size: dict[tuple[int, str], object] = {}
    logits, seg = {}, {}
    graders = [n for n in manifest.shipped() if get_spec(n).task == "grade"]
    for name in manifest.shipped():
        spec = get_spec(name)
        if name in graders:  # they read the crops around the fused masks, below
            continue
        if (spec.input_size, spec.fit) not in by_size:
            by_size[spec.input_size, spec.fit] = decode_for(cases, spec, groups, progress=progress)
        arrays = by_size[spec.input_size, spec.fit]
        model = manifest.load(name, device)
        # a member the engine runs int8 on the CPU is measured (calibrated, evaluated) as it runs there
        ranges = manifest.int8_ranges(name) if device == "cpu" else None
        out = run_int8(model, spec, arrays.images, ranges) if ranges else run_model(model, spec, arrays.images,
                                                                                    device=device)
        (logits if spec.task == "classify" else seg)[name] = out
    first = next(iter(by_size.values())) if by_size else decode_cases(cases, 224, groups, progress=progress)
    masks = first.masks
    if seg:  # fused at the largest segmenter's size, each map placed in the frame as the analysis places it on the scan
        size = max(get_spec(n).input_size for n in seg)
        if (size, frame) not in by_size:
            by_size[size, frame] = decode_cases(cases, size, groups, progress=progress, fit=frame)
        arrays = by_size[size, frame]
        masks = arrays.masks
        seg = {n: _in_frame(p, get_spec(n), size, frame, arrays.shapes) for n, p in seg.items()}
    preds = CasePredictions(first.case_ids, first.sources, first.groups, first.labels, logits, seg, masks, frame)
    if grade and graders and seg:
        preds = replace(preds, grade_logits=grade_cases(manifest, cases, preds, Fusion.from_manifest(manifest), device,
                                                        progress))
    return preds


def grade_cases(manifest, cases, preds: CasePredictions, fusion: Fusion, device: str = "cpu",
                progress: bool = True) -> dict[str, np.ndarray]:
    """Each shipped lesion grader's logits on the crop around ``fusion``'s cleaned mask of each case, taken at the
    scan's own size as the analysis takes it; NaN rows where the mask is empty. Called again by calibration once
    the segmenters' weights and threshold are fitted."""
    from models.zoo import get_spec

    fused = fusion.segment(preds.seg_probs)
    out = {}
    for name in manifest.shipped("grade"):
        spec = get_spec(name)
        model = manifest.load(name, device)
        crops = []
        for i, case in enumerate(tqdm(cases, desc=f"{name}: reading lesions", unit="scan", disable=not progress)):
            gray = read_case(case)[0]
            crops.append(lesion_crop(gray, clean_mask(to_scan(fused[i], gray.shape, preds.seg_fit) > fusion.threshold),
                                     spec))
        found = [i for i, c in enumerate(crops) if c is not None]
        logits = np.full((len(cases), len(spec.classes)), np.nan, np.float32)
        if found:
            logits[found] = run_model(model, spec, np.stack([crops[i] for i in found]), device=device)
        out[name] = logits
    return out


def _in_frame(maps: np.ndarray, spec: ModelSpec, size: int, frame: str,
              shapes: Sequence[tuple[int, int]]) -> np.ndarray:
    """A segmenter's ``(N, s, s)`` maps in the ``size`` square frame that reads scans with ``frame``."""
    if not len(maps) or (spec.input_size, spec.fit) == (size, frame):
        return maps
    return np.stack([reframe(m, shape, size, spec.fit, frame) for m, shape in zip(maps, shapes)])
