"""Turning a scan into a model input, resolved from the model's registry entry.

Training, evaluation and the analysis engine all call ``to_input`` so that preprocessing is never
duplicated: the grayscale scan is resized to the spec's square input (area interpolation) as the spec's
``fit`` says (stretched to the square, or scaled whole and padded: ``FITS``), put in all three channels and
normalized with the spec's mean and std; ``to_scan`` takes a model's map back to the scan's shape. A scan
inside a screen capture's frame is first cropped to its imaging region (``models.field_of_view``), in training
as in the analysis.

A lesion grader (a registry entry of task "grade") reads ``lesion_crop`` instead: the square around the lesion's
mask, widened by the spec's ``crop_margin``, so that it sees the lesion at the same scale on every scanner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .data.images import load_gray, load_mask
from .data.records import CLASSES, Case
from .field_of_view import find_region
from .zoo import ModelSpec


FITS = ("squash", "pad")


def placement(shape: tuple[int, int], size: int, fit: str = "squash") -> tuple[int, int, int, int]:
    """Where a scan of ``shape`` ``(H, W)`` lies in the ``size`` square input: ``(top, left, height, width)``.
    "squash" fills the square; "pad" scales the scan whole to fit, at the top (the skin line) and centred."""
    if fit == "squash":
        return 0, 0, size, size
    if fit != "pad":
        raise ValueError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    scale = size / max(shape[0], shape[1])
    height, width = (min(size, max(1, round(n * scale))) for n in shape[:2])
    return 0, (size - width) // 2, height, width


def _fitted(image: np.ndarray, size: int, fit: str, interpolation: int) -> np.ndarray:
    top, left, height, width = placement(image.shape[:2], size, fit)
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    if (height, width) == (size, size):
        return resized
    out = np.zeros((size, size), image.dtype)
    out[top:top + height, left:left + width] = resized
    return out


def resize_scan(gray: np.ndarray, size: int, fit: str = "squash") -> np.ndarray:
    return _fitted(gray, size, fit, cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, size: int, fit: str = "squash") -> np.ndarray:
    return _fitted(mask.astype(np.uint8), size, fit, cv2.INTER_NEAREST).astype(bool)


def to_scan(values: np.ndarray, shape: tuple[int, int], fit: str = "squash") -> np.ndarray:
    """A model's square float map (lesion probability, CAM) back on a scan of ``shape``: the scan's part of the
    input (all of it unless ``fit`` padded it), linearly interpolated to ``shape``."""
    return resize_map(_scan_part(values, shape, fit), shape)


def _scan_part(values: np.ndarray, shape: tuple[int, int], fit: str) -> np.ndarray:
    """The part of a model's square map that holds a scan of ``shape`` read with ``fit``."""
    top, left, height, width = placement(shape, values.shape[-1], fit)
    return values[top:top + height, left:left + width]


def reframe(values: np.ndarray, shape: tuple[int, int], size: int, fit: str, to_fit: str = "squash") -> np.ndarray:
    """A model's square float map of a scan of ``shape``, read with ``fit``, as a ``size`` square input read with
    ``to_fit`` would hold it (zero outside the scan): how maps of members of different sizes or fits are fused."""
    t, l, h, w = placement(shape, size, to_fit)
    part = resize_map(_scan_part(values, shape, fit), (h, w))
    if (h, w) == (size, size):
        return part
    out = np.zeros((size, size), np.float32)
    out[t:t + h, l:l + w] = part
    return out


def resize_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A model's float map (lesion probability, CAM) at ``shape`` ``(H, W)``, linearly interpolated: the one
    resize behind the analysis, evaluation, calibration and heatmaps."""
    return cv2.resize(values.astype(np.float32, copy=False), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def lesion_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` of the square around ``mask``'s lesion pixels, widened by ``margin`` of its
    side on every side and moved inside the scan (cut to the scan where it is larger); None for an empty mask.

    Square in the scan's own pixels, so that the lesion's height/width ratio (a malignancy sign) is kept."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) * (1 + 2 * margin)
    spans = []
    for lo, hi, n in ((rows[0], rows[-1] + 1, mask.shape[0]), (cols[0], cols[-1] + 1, mask.shape[1])):
        s = min(int(round(side)), n)
        start = min(max(int(round((lo + hi) / 2 - s / 2)), 0), n - s)
        spans.append((start, start + s))
    return spans[0][0], spans[1][0], spans[0][1], spans[1][1]


def lesion_crop(gray: np.ndarray, mask: np.ndarray, spec: ModelSpec) -> np.ndarray | None:
    """The ``spec.input_size`` square a lesion grader reads: the scan around ``mask``'s lesion; None if empty."""
    box = lesion_box(mask, spec.crop_margin)
    if box is None:
        return None
    t, l, b, r = box
    return resize_scan(gray[t:b, l:r], spec.input_size)


def normalize(batch_uint8: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """``(B, H, W)`` or ``(B, 1, H, W)`` uint8 scans to the model's normalized ``(B, 3, H, W)`` float input."""
    x = batch_uint8.float().div_(255.0)
    if x.ndim == 3:
        x = x[:, None]
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def to_input(gray: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """One grayscale scan (any size, uint8) as the model's ``(1, 3, S, S)`` input."""
    return normalize(torch.from_numpy(resize_scan(gray, spec.input_size, spec.fit))[None], spec)


def read_case(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """A case's scan and lesion mask as the models read them: inside a screen capture's frame, its imaging region
    (``models.field_of_view``, as ``read_scan`` finds it; no BUSI or BUS-BRA scan has a frame)."""
    gray = load_gray(case.image_path)
    mask = load_mask(case.mask_paths, gray.shape)
    region = find_region(gray)
    return (region.crop(gray), region.crop(mask)) if region else (gray, mask)


@dataclass(frozen=True)
class CaseArrays:
    """Cases decoded and resized once for training: scans, masks, labels, groups."""

    case_ids: tuple[str, ...]
    sources: tuple[str, ...]
    groups: tuple[str, ...]
    labels: np.ndarray  # int index into CLASSES
    images: np.ndarray  # (N, S, S) uint8
    masks: np.ndarray  # (N, S, S) bool
    shapes: tuple[tuple[int, int], ...] = ()  # each scan's (H, W) before resizing, where decoded from files

    def __len__(self) -> int:
        return len(self.case_ids)


def decode_cases(cases: Sequence[Case], size: int, groups: dict[str, str] | None = None,
                 progress: bool = True, fit: str = "squash") -> CaseArrays:
    images = np.empty((len(cases), size, size), np.uint8)
    masks = np.empty((len(cases), size, size), bool)
    shapes = []
    for k, case in enumerate(tqdm(cases, desc=f"decoding at {size} px", unit="scan", disable=not progress)):
        gray, mask = read_case(case)
        images[k] = resize_scan(gray, size, fit)
        masks[k] = resize_mask(mask, size, fit)
        shapes.append(gray.shape[:2])
    return CaseArrays(tuple(c.case_id for c in cases), tuple(c.source for c in cases),
                      tuple((groups or {}).get(c.case_id, c.group_id) for c in cases),
                      np.array([CLASSES.index(c.label) for c in cases]), images, masks, tuple(shapes))


def decode_for(cases: Sequence[Case], spec: ModelSpec, groups: dict[str, str] | None = None,
               progress: bool = True) -> CaseArrays:
    """``decode_cases`` as ``spec``'s model reads them: its input size and fit; for a lesion grader, the crop
    around each case's reference mask (``decode_lesions``)."""
    if spec.task == "grade":
        return decode_lesions(cases, spec, groups, progress)
    return decode_cases(cases, spec.input_size, groups, progress, spec.fit)


def decode_lesions(cases: Sequence[Case], spec: ModelSpec, groups: dict[str, str] | None = None,
                   progress: bool = True, boxes_from: Sequence[np.ndarray] | None = None) -> CaseArrays:
    """Lesion cases as a grader reads them: the crop around the reference mask (``lesion_crop``), or around
    ``boxes_from[k]`` (a mask at case k's scan size, e.g. a segmenter's) where given."""
    size = spec.input_size
    images = np.empty((len(cases), size, size), np.uint8)
    masks = np.empty((len(cases), size, size), bool)
    for k, case in enumerate(tqdm(cases, desc=f"cropping lesions at {size} px", unit="scan", disable=not progress)):
        gray, mask = read_case(case)
        box = lesion_box(mask if boxes_from is None else boxes_from[k], spec.crop_margin)
        if box is None:
            raise ValueError(f"{case.image_path}: {case.label} case {case.case_id} has an empty lesion mask; a lesion "
                             "grader reads lesion cases with masks only (check its mask files, or leave it out)")
        t, l, b, r = box
        images[k], masks[k] = resize_scan(gray[t:b, l:r], size), resize_mask(mask[t:b, l:r], size)
    return CaseArrays(tuple(c.case_id for c in cases), tuple(c.source for c in cases),
                      tuple((groups or {}).get(c.case_id, c.group_id) for c in cases),
                      np.array([CLASSES.index(c.label) for c in cases]), images, masks)
