"""The analysis engine: one call on one scan gives everything the UI and the CLI show.

Models load once, lazily, from the shipped weights (checksums verified), and run through
``models.inference.runtime`` (ONNX Runtime on the CPU); the scan is resized once per input size, not once per
model. Grad-CAM heatmaps are not part of ``analyze``: they are computed on demand by
``Analyzer.explain``, on the PyTorch model.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from models.data.records import CLASSES
from models.inference.ensemble import Fusion
from models.inference.explain import Heatmap, explain
from models.inference.measure import Measurements, measure
from models.inference.postprocess import clean_mask
from models.inference.review import review_reasons
from models.inference.runtime import Runner, check_backend, make_runner
from models.field_of_view import Region
from models.inference.scan import Scan
from models.preprocess import lesion_crop, to_input, to_scan
from models.weights import WEIGHTS_DIR, Manifest
from models.zoo import get_spec


@dataclass(frozen=True)
class Analysis:
    scan_name: str
    scan_sha256: str
    label: str  # the ensemble's most probable class
    probabilities: dict[str, float]  # ensemble, calibrated
    per_model: dict[str, dict[str, float]]  # classifier -> calibrated probabilities
    uncertainty: float  # normalized entropy of the ensemble probabilities, 0 (sure) to 1
    review: bool
    review_reasons: tuple[str, ...]
    mask: np.ndarray = field(repr=False)  # (H, W) bool, cleaned ensemble mask at the scan's size
    lesion_probability: np.ndarray = field(repr=False)  # (H, W) float32 ensemble map
    segmenter_maps: dict[str, np.ndarray] = field(repr=False)  # segmenter -> (H, W) float32
    measurements: Measurements | None
    threshold: float
    model_versions: dict[str, str]  # model -> first 12 hex of its weights' sha256
    region: Region | None = None  # the imaging region the models read (None: the whole scan)
    # the lesion graders' calibrated benign/malignant probabilities on the square around the mask (None: no grader
    # shipped, or no lesion found); already part of ``probabilities`` with the ensemble's fitted share
    lesion_grade: dict[str, float] | None = None



class _Clock:
    """Seconds since the last lap, into ``timings`` (a no-op when it is None)."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings, self.t = timings, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
            self.t = now


class Analyzer:
    """Loads the shipped ensemble on first use and analyses scans; safe to share between threads."""

    def __init__(self, weights: Path = WEIGHTS_DIR, device: str = "cpu", backend: str | None = None):
        self.manifest = Manifest.read(weights)
        if not self.manifest.shipped():
            raise FileNotFoundError(f"{Path(weights) / 'manifest.json'}: no shipped models; train and ship them first "
                                    "(see README, 'Models, training and evaluation')")
        self.device = device
        self.backend = check_backend(backend, device)
        self.fusion = Fusion.from_manifest(self.manifest)
        self._models: dict[str, torch.nn.Module] = {}
        self._runners: dict[str, Runner] = {}
        self._lock = threading.RLock()

    @property
    def classifiers(self) -> list[str]:
        return self.manifest.shipped("classify")

    @property
    def segmenters(self) -> list[str]:
        return self.manifest.shipped("segment")

    @property
    def graders(self) -> list[str]:
        return self.manifest.shipped("grade") if self.segmenters else []

    def model(self, name: str) -> torch.nn.Module:
        with self._lock:
            if name not in self._models:
                # Built outside inference mode even when first asked for inside it, so that
                # Grad-CAM can later take gradients through the same parameters.
                with torch.inference_mode(False):
                    self._models[name] = self.manifest.load(name, self.device)
            return self._models[name]

    def runner(self, name: str) -> Runner:
        with self._lock:
            if name not in self._runners:
                self._runners[name] = make_runner(self.model(name), get_spec(name), self.backend, self.device,
                                                  self.manifest.int8_ranges(name))
            return self._runners[name]

    def warm_up(self) -> None:
        """Load every shipped model and prepare its runner now (a few seconds), not at the first scan."""
        for name in self.classifiers + self.segmenters + self.graders:
            self.runner(name)

    def model_versions(self) -> dict[str, str]:
        return {n: m["sha256"][:12] for n, m in self.manifest.models.items()}

    @staticmethod
    def _input_key(name: str) -> tuple:
        spec = get_spec(name)
        return spec.input_size, spec.fit, spec.mean, spec.std

    def _inputs(self, gray: np.ndarray) -> dict[tuple, np.ndarray]:
        """The scan prepared once per distinct input size, fit and normalization, shared by the models."""
        specs = {self._input_key(n): get_spec(n) for n in self.classifiers + self.segmenters}
        return {key: to_input(gray, spec).numpy() for key, spec in specs.items()}

    def _raw(self, name: str, inputs: dict[tuple, np.ndarray]) -> np.ndarray:
        """Logits ``(classes,)`` of a classifier or the lesion probabilities ``(S, S)`` of a segmenter."""
        out = self.runner(name)(inputs[self._input_key(name)])
        return expit(out[0, 0]).astype(np.float32) if get_spec(name).task == "segment" else out[0]

    def _grades(self, gray: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Each grader's logits ``(1, classes)`` on the square around ``mask`` (both at the region's size); none
        when the mask is empty."""
        out = {}
        for n in self.graders:
            crop = lesion_crop(gray, mask, get_spec(n))
            if crop is None:
                return {}
            out[n] = self.runner(n)(to_input(crop, get_spec(n)).numpy())[:1]
        return out

    def analyze(self, scan: Scan, timings: dict[str, float] | None = None) -> Analysis:
        """The full analysis of one scan; ``timings``, if given, receives seconds per stage."""
        clock = _Clock(timings)
        gray = scan.model_view  # the imaging region: the maps are computed there and placed back in the whole scan
        h, w = gray.shape
        inputs = self._inputs(gray)
        clock.lap("preprocess")
        logits = {}
        for n in self.classifiers:
            logits[n] = self._raw(n, inputs)[None]
            clock.lap(f"model {n}")
        maps = {}
        for n in self.segmenters:
            maps[n] = to_scan(self._raw(n, inputs), (h, w), get_spec(n).fit)
            clock.lap(f"model {n}")
        lesion = self.fusion.segment(maps).astype(np.float32) if maps else np.zeros((h, w), np.float32)
        clock.lap("fusion")
        mask = clean_mask(lesion > self.fusion.threshold)  # at the region's size: specks are judged against the scan
        grades = self._grades(gray, mask) if logits else {}
        clock.lap("lesion grading")
        per_model, fused = (self.fusion.classify(logits, grades) if logits
                            else ({}, np.full((1, len(CLASSES)), 1 / len(CLASSES))))
        probs = fused[0]
        maps = {n: scan.place(m) for n, m in maps.items()}
        lesion, mask = scan.place(lesion), scan.place(mask)
        label = CLASSES[int(np.argmax(probs))]
        entropy = float(-(probs * np.log(np.clip(probs, 1e-12, 1))).sum() / np.log(len(CLASSES)))
        # Votes of the members the ensemble listens to, each with its share of the ensemble's weight
        votes = self.fusion.votes({n: p[0] for n, p in per_model.items()})
        reasons = review_reasons(probs, votes, [maps[n] > self.fusion.threshold for n in self.fusion.seg_voters(maps)],
                                 mask if maps else None)
        measurements = measure(mask, scan.spacing_mm)
        clock.lap("post-processing")
        return Analysis(
            scan_name=scan.name, scan_sha256=scan.sha256, label=label,
            probabilities={c: float(p) for c, p in zip(CLASSES, probs)},
            per_model={n: {c: float(v) for c, v in zip(CLASSES, p[0])} for n, p in per_model.items()},
            uncertainty=entropy, review=bool(reasons), review_reasons=tuple(reasons), mask=mask,
            lesion_probability=lesion, segmenter_maps=maps, measurements=measurements,
            threshold=self.fusion.threshold, model_versions=self.model_versions(), region=scan.region,
            lesion_grade=({c: float(v) for c, v in zip(("benign", "malignant"), self.fusion.lesion_grade(grades)[0])}
                          if grades else None))

    def explain(self, scan: Scan, model: str, target_class: str | None = None, method: str = "Grad-CAM") -> Heatmap:
        """A Grad-CAM heatmap of one classifier (computed now, not part of ``analyze``)."""
        if model not in self.classifiers:
            raise ValueError(f"{model!r} is not a shipped classifier; choose one of {', '.join(self.classifiers)}")
        with self._lock:  # CAM hooks attach to the shared model; one at a time
            heatmap = explain(self.model(model), get_spec(model), scan.model_view, target_class, method)
        return replace(heatmap, cam=scan.place(heatmap.cam))
