"""Mask editing for the annotation UI: the mask as an editor layer and back, clean-up, GrabCut.

Gradio's ImageEditor returns each layer as RGBA at the canvas size: painted pixels have alpha,
brush edges are antialiased, and an eraser clears alpha. The mask is read from layer alpha above
half, so antialiased fringes do not grow it.

The editor works on a fixed canvas (``CANVAS``) with the scan centred in it. Measured in gradio
6.31: with ``fixed_canvas=False`` a programmatic layer is placed as if centred in the default
800x800 canvas while the background sits at the origin, so the mask appears shifted by
((800 - width) / 2, (800 - height) / 2); with the background exactly the canvas size, layers line
up. Every BUSI and BUS-BRA scan fits the canvas unscaled, so the round trip is exact for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from models.inference.postprocess import clean_mask

MASK_RGB = (0, 220, 90)
LESION_RGB = (MASK_RGB, (255, 170, 0), (0, 170, 255), (230, 60, 200))  # lesion 1, 2, 3, 4 (then again)
MASK_ALPHA = 150  # translucent, so the scan shows through; well above the 127 read threshold
ALPHA_THRESHOLD = 127


CANVAS = (1056, 768)  # width, height of the editor canvas


@dataclass(frozen=True)
class Frame:
    """Where a scan sits on the canvas: scaled by ``scale`` (never up), its top-left at (x0, y0)."""

    scale: float
    x0: int
    y0: int
    width: int
    height: int


def frame_for(shape: tuple[int, int], canvas: tuple[int, int] = CANVAS) -> Frame:
    h, w = shape
    scale = min(1.0, canvas[0] / w, canvas[1] / h)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    return Frame(scale, (canvas[0] - sw) // 2, (canvas[1] - sh) // 2, sw, sh)


def to_canvas(image: np.ndarray, nearest: bool = False, canvas: tuple[int, int] = CANVAS) -> np.ndarray:
    """``image`` (H, W[, C]) centred on a canvas-sized array of zeros, scaled down only if it must."""
    f = frame_for(image.shape[:2], canvas)
    if f.scale != 1.0:
        image = cv2.resize(image, (f.width, f.height), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    out = np.zeros((canvas[1], canvas[0], *image.shape[2:]), image.dtype)
    out[f.y0:f.y0 + f.height, f.x0:f.x0 + f.width] = image
    return out


def from_canvas(painted: np.ndarray, shape: tuple[int, int], canvas: tuple[int, int] = CANVAS) -> np.ndarray:
    """The scan's region of a canvas-sized bool array, back at the scan's ``shape``."""
    f = frame_for(shape, canvas)
    region = painted[f.y0:f.y0 + f.height, f.x0:f.x0 + f.width].astype(np.uint8)
    if region.shape != tuple(shape):
        region = cv2.resize(region, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return region > 0


def mask_layer(mask: np.ndarray, rgb: tuple[int, int, int] = MASK_RGB) -> np.ndarray:
    """A translucent RGBA layer showing ``mask`` (what the editor opens with)."""
    layer = np.zeros((*mask.shape, 4), np.uint8)
    layer[mask.astype(bool)] = (*rgb, MASK_ALPHA)
    return layer


def editor_value(display_rgb: np.ndarray, masks: np.ndarray | list[np.ndarray]) -> dict[str, Any]:
    """The editor's value: the scan and one layer per lesion (at least one, maybe empty), placed on the canvas."""
    masks = [masks] if isinstance(masks, np.ndarray) else list(masks)
    masks = masks or [np.zeros(display_rgb.shape[:2], bool)]
    background = to_canvas(np.dstack([display_rgb, np.full(display_rgb.shape[:2], 255, np.uint8)]))
    layers = [to_canvas(mask_layer(m, LESION_RGB[k % len(LESION_RGB)]), nearest=True) for k, m in enumerate(masks)]
    return {"background": background, "layers": layers, "composite": None}


class LayerError(ValueError):
    """A mask layer that does not fit the scan; the message says what to send instead."""


def _painted(layer: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(layer)
    if arr.ndim != 3 or arr.shape[2] != 4:
        raise LayerError(f"a mask layer must be RGBA, painted where alpha > {ALPHA_THRESHOLD}; this one has shape "
                         f"{arr.shape}: send a transparent PNG with the lesion painted")
    painted = arr[..., 3] > ALPHA_THRESHOLD
    h, w = shape
    if painted.shape == (CANVAS[1], CANVAS[0]) and painted.shape != (h, w):
        return from_canvas(painted, shape)
    if painted.shape != (h, w):
        lh, lw = painted.shape
        # Another size is taken only as the same picture at another scale: same aspect ratio, not much smaller
        if abs(lw / lh - w / h) > 0.02 * (w / h) or 2 * min(lh, lw) < min(h, w):
            raise LayerError(f"the mask layer is {lw}x{lh} pixels, but the scan is {w}x{h} (and the editor canvas "
                             f"{CANVAS[0]}x{CANVAS[1]}); paint the mask at the scan's size")
        painted = cv2.resize(painted.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return painted


def masks_from_editor(value: dict | None, shape: tuple[int, int]) -> list[np.ndarray]:
    """Each of the editor's layers (one per lesion) as a bool mask of ``shape``; see ``mask_from_editor``."""
    masks = []
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        painted = _painted(layer, shape)
        if painted.all():
            raise LayerError("the mask layer is painted everywhere (an opaque image?); paint only the lesion and "
                             "leave the rest transparent")
        masks.append(painted)
    return masks


def mask_from_editor(value: dict | None, shape: tuple[int, int]) -> np.ndarray:
    """The union of the editor's painted layers as a bool mask of ``shape`` (height, width).

    Canvas-sized layers (from the browser) are mapped back through the scan's frame; scan-sized
    layers (e.g. from an API client) are taken as they are; the same picture at another scale is
    resized. Raises ``LayerError`` for anything else, and for a layer painted everywhere (an opaque
    image sent as a layer), rather than guess.
    """
    mask = np.zeros(shape, bool)
    for painted in masks_from_editor(value, shape):
        mask |= painted
    return mask


def smooth_mask(mask: np.ndarray, radius: int | None = None) -> np.ndarray:
    """Open then close with a disc (removes ragged brush edges and notches), then clean."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    radius = radius or max(2, round(0.01 * max(mask.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel)
    return clean_mask(m > 0)


def grabcut_refine(gray: np.ndarray, mask: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Snap a rough mask to the lesion's edges with OpenCV GrabCut seeded by the mask.

    The mask's eroded core is certain lesion, the mask probable lesion, a ring around it probable
    background, and everything further away certain background.
    """
    mask = np.asarray(mask, bool)
    if not mask.any() or mask.all():
        return mask
    size = max(3, int(0.15 * np.sqrt(mask.sum())))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * size + 1, 2 * size + 1))
    m8 = mask.astype(np.uint8)
    seeds = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    seeds[cv2.dilate(m8, kernel) > 0] = cv2.GC_PR_BGD
    seeds[mask] = cv2.GC_PR_FGD
    core = cv2.erode(m8, kernel) > 0
    seeds[core] = cv2.GC_FGD
    rgb = cv2.cvtColor(np.ascontiguousarray(gray, np.uint8), cv2.COLOR_GRAY2BGR)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(rgb, seeds, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return clean_mask((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD))
