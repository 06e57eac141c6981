"""Lesion measurements from a binary mask, in mm when the pixel spacing is known.

- area;
- longest diameter (the greatest distance across the lesion) and the diameter across it (the
  lesion's extent perpendicular to the longest one);
- depth-to-width ratio: vertical extent (depth, along the beam) over horizontal extent; above 1 the
  lesion is "taller than wide", a suspicious sign in BI-RADS;
- circularity 4*pi*area / perimeter^2 (1 for a disc, lower for elongated or ragged shapes);
- margin irregularity 1 - convex-hull perimeter / perimeter (0 for a convex outline, higher for
  lobulated or spiculated margins).
The largest connected component is measured; ``components`` says how many there were.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Measurements:
    unit: str  # "mm" or "px"
    area: float  # unit^2
    longest_diameter: float
    perpendicular_diameter: float
    depth: float  # vertical extent
    width: float  # horizontal extent
    depth_to_width: float
    circularity: float
    margin_irregularity: float
    components: int

    @property
    def taller_than_wide(self) -> bool:
        return self.depth_to_width > 1.0


def _perimeter(points: np.ndarray) -> float:
    closed = np.vstack([points, points[:1]])
    return float(np.linalg.norm(np.diff(closed, axis=0), axis=1).sum())


def measure(mask: np.ndarray, spacing_mm: tuple[float, float] | None = None) -> Measurements | None:
    """Measurements of the largest lesion in ``mask``; ``None`` when the mask is empty.

    ``spacing_mm`` is (row, column) size of a pixel; pixels may be anisotropic.
    """
    mask = np.asarray(mask, bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == largest).astype(np.uint8)
    dy, dx = spacing_mm if spacing_mm else (1.0, 1.0)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=len)[:, 0, :].astype(np.float64)
    # Pixel centres trace the outline half a pixel inside the lesion; measure on pixel edges instead
    # by taking the hull of every lesion pixel's four corners. The outline pixels' corners span the
    # same hull and extents as all pixels' corners (every pixel lies inside the outline).
    xs, ys = outline[:, 0], outline[:, 1]
    corners = np.concatenate([np.stack([xs + ox, ys + oy], 1) for ox in (0, 1) for oy in (0, 1)])
    hull = cv2.convexHull(corners.astype(np.float32))[:, 0, :].astype(np.float64)
    scale = np.array([dx, dy])
    hull_mm = hull * scale
    diffs = hull_mm[:, None, :] - hull_mm[None, :, :]
    dist = np.linalg.norm(diffs, axis=2)
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    longest = float(dist[i, j])
    axis = (hull_mm[j] - hull_mm[i]) / max(longest, 1e-12)
    across = hull_mm @ np.array([-axis[1], axis[0]])
    area = float(blob.sum()) * dx * dy
    depth = float(np.ptp(corners[:, 1])) * dy
    width = float(np.ptp(corners[:, 0])) * dx
    # Perimeters on the outline simplified within one pixel: the raw 8-connected staircase would
    # overstate a smooth margin's length by up to 8% and read it as irregular.
    outline = cv2.approxPolyDP(outline.astype(np.float32), 1.0, True)[:, 0, :].astype(np.float64)
    perimeter = _perimeter(outline * scale) if len(outline) > 2 else 2 * (depth + width)
    hull_outline = cv2.convexHull(outline.astype(np.float32))[:, 0, :].astype(np.float64)
    hull_perimeter = _perimeter(hull_outline * scale) if len(hull_outline) > 2 else perimeter
    return Measurements(
        unit="mm" if spacing_mm else "px", area=area, longest_diameter=longest,
        perpendicular_diameter=float(np.ptp(across)), depth=depth, width=width,
        depth_to_width=depth / width if width else float("inf"),
        circularity=float(min(1.0, 4 * np.pi * area / perimeter ** 2)) if perimeter else 0.0,
        margin_irregularity=float(max(0.0, 1 - hull_perimeter / perimeter)) if perimeter else 0.0,
        components=n - 1,
    )
