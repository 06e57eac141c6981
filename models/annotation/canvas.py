"""The annotation workspace's one view: the scan with its lesions, Grad-CAM, and the prompt being drawn."""
from __future__ import annotations

import cv2
import numpy as np

from models.field_of_view import Region
from models.inference.overlay import overlay_mask

from .editing import LESION_RGB
from .lesions import LesionMasks

BOX_RGB = (255, 220, 0)
ADD_RGB, REMOVE_RGB = (0, 255, 120), (255, 60, 60)
RULER_RGB = (80, 200, 255)
REGION_RGB = (160, 160, 160)  # the imaging region the models read, in a screen capture


def lesion_colour(k: int) -> tuple[int, int, int]:
    return LESION_RGB[k % len(LESION_RGB)]


def draw(base_rgb: np.ndarray, state: LesionMasks, fill: bool = True, contour: bool = True, opacity: float = 0.35,
         ruler: list[tuple[float, float]] | None = None, region: Region | None = None) -> np.ndarray:
    """``base_rgb`` (the scan, or the scan under Grad-CAM, at the scan's size or scaled for display) with every
    lesion in its colour (the active one outlined thicker), the box and clicks of the active lesion, the ruler's
    points and, in a screen capture, the outline of the region the models read, all drawn at ``base_rgb``'s size:
    lines stay sharp on a scaled view."""
    out = np.ascontiguousarray(base_rgb[..., :3], np.uint8)
    scale = out.shape[1] / state.shape[1]
    side = max(out.shape[:2])
    thin = max(1, round(side / 300))
    if region is not None:
        cv2.rectangle(out, (int(region.left * scale), int(region.top * scale)),
                      (int(region.right * scale) - 1, int(region.bottom * scale) - 1), REGION_RGB, thin)
    for k, mask in enumerate(state.lesions):
        if mask.shape != out.shape[:2]:
            mask = cv2.resize(mask.astype(np.uint8), (out.shape[1], out.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        out = overlay_mask(out, mask, lesion_colour(k), alpha=opacity if fill else 0.0,
                           thickness=thin * (2 if k == state.active else 1), contour=contour or k == state.active)
    r = max(3, round(side / 90))
    if state.box is not None:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in state.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), BOX_RGB, thin, cv2.LINE_AA)
    if state.corner is not None:
        x, y = (int(round(v * scale)) for v in state.corner)
        cv2.drawMarker(out, (x, y), BOX_RGB, cv2.MARKER_CROSS, 3 * r, thin, cv2.LINE_AA)
    for c in state.clicks:
        centre = (int(round(c.x * scale)), int(round(c.y * scale)))
        cv2.circle(out, centre, r, ADD_RGB if c.positive else REMOVE_RGB, -1, cv2.LINE_AA)
        cv2.circle(out, centre, r, (0, 0, 0), max(1, thin // 2), cv2.LINE_AA)
    points = [(int(round(x * scale)), int(round(y * scale))) for x, y in ruler or []]
    for p in points:
        cv2.drawMarker(out, p, RULER_RGB, cv2.MARKER_TILTED_CROSS, 3 * r, thin, cv2.LINE_AA)
    if len(points) == 2:
        cv2.line(out, points[0], points[1], RULER_RGB, thin, cv2.LINE_AA)
    return out
