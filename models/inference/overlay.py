"""Drawing a lesion mask over a scan: a contour plus a translucent fill."""
from __future__ import annotations

import cv2
import numpy as np


def overlay_mask(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 220, 90),
                 alpha: float = 0.3, thickness: int | None = None, contour: bool = True) -> np.ndarray:
    """The scan as RGB uint8 with ``mask`` filled at ``alpha`` opacity and, with ``contour``, outlined."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    mask = np.asarray(mask, bool)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the scan is {rgb.shape[1]}x{rgb.shape[0]}")
    out = rgb.copy()
    if alpha > 0:
        tint = np.empty_like(rgb)
        tint[:] = color
        out[mask] = cv2.addWeighted(rgb, 1 - alpha, tint, alpha, 0)[mask]
    if not contour:
        return out
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = thickness or max(1, round(max(rgb.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, color, thickness, lineType=cv2.LINE_AA)
    return out
