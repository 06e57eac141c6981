"""Soft targets for distillation: ``sonomark train --models NAME --distil [--weights DIR]``.

A member without offline ImageNet weights (ResNet-18, SegFormer-B0) learns from the shipped ensemble's other
members of its task as well as from the labels. Each training scan's target is what the ensemble would say
without the student, computed once on the un-augmented scans as the engine runs them:
- a classifier learns the other classifiers' calibrated probabilities, fused with their fitted weights;
- a segmenter learns the other segmenters' lesion probability map, fused with their fitted weights, at the
  student's input size (training warps it with the scan, as it warps the mask).
The loss mixes them with the labels (``RunConfig.distil_weight``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from models.data.records import Case
from models.inference.ensemble import Fusion, predict_cases
from models.preprocess import resize_map
from models.weights import MANIFEST, Manifest, sha256_file
from models.zoo import get_spec

MEMBER = {"classify": "classifier", "segment": "segmenter"}


def teachers(manifest: Manifest, student: str) -> list[str]:
    """The shipped members of ``student``'s task that teach it: every other one with a share of its task's weight."""
    task = get_spec(student).task
    if task not in MEMBER:
        raise ValueError(f"{student} is a lesion grader: it reads crops the other members never saw, so there is "
                         "nothing to distil from; train it without --distil")
    fusion = Fusion.from_manifest(manifest)
    others = [n for n in manifest.shipped(task) if n != student]
    shares = fusion.class_shares(others) if task == "classify" else fusion.seg_shares(others)
    chosen = [n for n, share in shares.items() if share > 0]
    if not chosen:
        raise ValueError(f"{manifest.folder / MANIFEST}: no shipped {MEMBER[task]} other than {student!r} to distil "
                         "from; ship and calibrate the ensemble first")
    return chosen


def teacher_id(manifest: Manifest) -> str:
    """What a distilled run learned from, for its checkpoint and manifest: the teachers' manifest by checksum."""
    return f"{manifest.folder} (manifest sha256 {sha256_file(manifest.folder / MANIFEST)[:12]})"


def soft_targets(manifest: Manifest, student: str, cases: Sequence[Case], groups: Mapping[str, str] | None = None,
                 progress: bool = True) -> np.ndarray:
    """The teachers' fused output for each case, in order: calibrated probabilities ``(len(cases), classes)``
    for a classifier, lesion probabilities ``(len(cases), S, S)`` at the student's input size for a segmenter."""
    names = teachers(manifest, student)
    view = Manifest(manifest.folder, {**manifest.data, "models": {n: manifest.models[n] for n in names}})
    preds = predict_cases(view, list(cases), groups, progress=progress)
    if preds.case_ids != tuple(c.case_id for c in cases):
        raise RuntimeError("soft targets came back in another order than the training cases")
    fusion = Fusion.from_manifest(manifest)
    if get_spec(student).task == "classify":
        return fusion.classify(preds.logits)[1].astype(np.float32)
    size = get_spec(student).input_size
    if get_spec(student).fit != preds.seg_fit:  # the maps lie in the teachers' square frame
        raise ValueError(f"{student} reads scans with fit {get_spec(student).fit!r}, but its teachers' maps are "
                         f"fused in the {preds.seg_fit!r} frame; distil into a student of that fit")
    fused = fusion.segment(preds.seg_probs).astype(np.float32)
    if fused.shape[-1] != size:
        fused = np.stack([resize_map(m, (size, size)) for m in fused]).astype(np.float32)
    return fused
