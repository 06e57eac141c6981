"""Soft targets for distillation: ``sonomark train --models resnet18 --distil [--weights DIR]``.

A member without offline ImageNet weights (ResNet-18) learns from the shipped ensemble's other classifiers as
well as from the labels: each training scan's target is the ensemble's calibrated probabilities, fused with
its fitted weights over the classifiers other than the student (computed once, on the un-augmented scans, as
the engine would run them). The loss mixes them with the labels (``RunConfig.distil_weight``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from models.data.records import Case
from models.inference.ensemble import Fusion, predict_cases
from models.weights import MANIFEST, Manifest, sha256_file


def teachers(manifest: Manifest, student: str) -> list[str]:
    """The shipped classifiers that teach ``student``: every other one with a share of the ensemble's weight."""
    fusion = Fusion.from_manifest(manifest)
    others = [n for n in manifest.shipped("classify") if n != student]
    chosen = [n for n, share in fusion.class_shares(others).items() if share > 0]
    if not chosen:
        raise ValueError(f"{manifest.folder / MANIFEST}: no shipped classifier other than {student!r} to distil "
                         "from; ship and calibrate the ensemble first")
    return chosen


def teacher_id(manifest: Manifest) -> str:
    """What a distilled run learned from, for its checkpoint and manifest: the teachers' manifest by checksum."""
    return f"{manifest.folder} (manifest sha256 {sha256_file(manifest.folder / MANIFEST)[:12]})"


def soft_targets(manifest: Manifest, student: str, cases: Sequence[Case], groups: Mapping[str, str] | None = None,
                 progress: bool = True) -> np.ndarray:
    """``(len(cases), classes)``: the teachers' fused calibrated probabilities for each case, in order."""
    names = teachers(manifest, student)
    view = Manifest(manifest.folder, {**manifest.data, "models": {n: manifest.models[n] for n in names}})
    preds = predict_cases(view, list(cases), groups, progress=progress)
    if preds.case_ids != tuple(c.case_id for c in cases):
        raise RuntimeError("soft targets came back in another order than the training cases")
    return Fusion.from_manifest(manifest).classify(preds.logits)[1].astype(np.float32)
