"""The scan inside a screen capture: the imaging region the models read when a file holds more than the scan.

A scanner's screen shows the image inside a frame of text, scales, logos and colour bars; exports and screenshots
from scanners the models never saw often keep that frame, while BUSI and BUS-BRA were released cropped to the scan
(``find_region`` finds no frame in any of their 2,655 scans, ``tests/data/test_real_data.py``). Left in, the frame
shrinks the scan to part of the models' input and adds text they never saw; ``reports/scan_region.md`` measures what
that costs on validation scans put inside synthetic screens, and what cropping recovers.

``find_region`` is deliberately conservative. A frame is a flat background (one grey level, JPEG noise allowed) on at
least three of the image's four edges; a scan cropped to the tissue has speckle on its top and side edges, so it is
left whole. Inside a frame, the region is the bounding box of the largest non-background component once text and
thin lines are opened away, joined by the components above and below it under the same columns (a dark band across
the scan, a large cyst or shadowing, must not end the region) and by the faint rows that follow on below it.
Deep rows as dark and flat as the frame itself cannot be told from it and are left out with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

EDGE_BAND = 0.01  # the band of each edge that must be flat, as a share of the shorter side (at least 2 px)
FLAT_TOLERANCE = 6  # grey levels a frame pixel may differ from the frame's own level (JPEG noise)
FLAT_EDGE_SHARE = 0.9  # an edge is frame when this share of its band is at the frame's level
FLAT_EDGES = 3  # edges that must be frame: a cropped scan's dark bottom edge alone is not a frame
OPENING = 0.02  # the opening that removes text, ticks and lines, as a share of the shorter side
MIN_REGION = 0.10  # a region smaller than this share of the image is not trusted (a dark or empty scan)
SAME_SCAN_OVERLAP = 0.5  # a component under this share of the largest one's columns is part of the same scan
ROW_CONTENT = 0.01  # a row just under the scan with this share of its pixels off the frame's level is still scan
FAR_FIELD_GAP = 0.03  # ... when no more than this share of the image's height lies between it and the scan
MIN_MARGIN = 0.03  # a frame thinner than this share of the image on every side is left alone


@dataclass(frozen=True)
class Region:
    """Rows ``top:bottom`` and columns ``left:right`` of a scan image: the part the models read."""

    top: int
    bottom: int
    left: int
    right: int
    source: str  # "DICOM ultrasound region" or "frame detected"

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.top:self.bottom, self.left:self.right]

    def paste(self, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``values`` at the region's size placed in a zero array of the whole image's ``shape``."""
        if values.shape[:2] != self.shape:
            raise ValueError(f"values of shape {values.shape[:2]} do not fit a region of shape {self.shape}")
        out = np.zeros(tuple(shape) + values.shape[2:], values.dtype)
        out[self.top:self.bottom, self.left:self.right] = values
        return out

    def inside(self, shape: tuple[int, int]) -> np.ndarray:
        """A bool array of the whole image's ``shape``, True on the region."""
        return self.paste(np.ones(self.shape, bool), shape)

    def describe(self, shape: tuple[int, int]) -> str:
        h, w = shape
        share = self.shape[0] * self.shape[1] / max(h * w, 1)
        return (f"the models read the scan region, rows {self.top}-{self.bottom - 1} and columns {self.left}-{self.right - 1} "
                f"({share:.0%} of the image, {self.source}); the frame around it was left out")


def checked(top: int, bottom: int, left: int, right: int, shape: tuple[int, int], source: str) -> Region | None:
    """A region within ``shape`` that leaves out a real margin; None when it is the whole image or not a region."""
    h, w = shape
    top, left, bottom, right = max(0, int(top)), max(0, int(left)), min(h, int(bottom)), min(w, int(right))
    if bottom - top < 8 or right - left < 8 or (bottom - top) * (right - left) < MIN_REGION * h * w:
        return None
    if max(top / h, (h - bottom) / h, left / w, (w - right) / w) < MIN_MARGIN:
        return None
    return Region(top, bottom, left, right, source)


def frame_level(filtered: np.ndarray) -> int | None:
    """The frame's grey level when at least ``FLAT_EDGES`` of the four edges of a median-filtered image are flat at
    it, else None (filtered: JPEG noise around a frame's text is not content)."""
    h, w = filtered.shape
    b = max(2, int(round(EDGE_BAND * min(h, w))))
    edges = (filtered[:b], filtered[-b:], filtered[:, :b], filtered[:, -b:])
    level = int(np.bincount(np.concatenate([e.ravel() for e in edges]), minlength=256).argmax())
    flat = sum(float((np.abs(e.astype(np.int16) - level) <= FLAT_TOLERANCE).mean()) >= FLAT_EDGE_SHARE for e in edges)
    return level if flat >= FLAT_EDGES else None


def find_region(gray: np.ndarray) -> Region | None:
    """The imaging region of a grayscale uint8 image inside a flat frame, or None (no frame: read it whole)."""
    filtered = cv2.medianBlur(gray, 5)
    level = frame_level(filtered)
    if level is None:
        return None
    h, w = gray.shape
    differs = (np.abs(filtered.astype(np.int16) - level) > FLAT_TOLERANCE).astype(np.uint8)
    k = max(3, int(round(OPENING * min(h, w))) | 1)
    content = cv2.morphologyEx(differs, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(content, connectivity=8)
    if n <= 1:
        return None
    x, y, bw, bh = (int(v) for v in stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4])
    # A dark band across the scan (a large cyst, shadowing) splits it into components one above the other: those
    # under most of the largest one's columns are the same scan. Text, even under the scan, was opened away.
    top, bottom = y, y + bh
    for cx, cy, cw, ch in stats[1:, :4]:
        if min(x + bw, cx + cw) - max(x, cx) >= SAME_SCAN_OVERLAP * bw:
            top, bottom = min(top, int(cy)), max(bottom, int(cy + ch))
    # A faint far field is opened away too: rows under the scan that go on having content, with gaps no taller
    # than FAR_FIELD_GAP, are still the scan; text further down is not.
    rows = differs[:, x:x + bw].mean(1) >= ROW_CONTENT
    gap, r = max(2, int(round(FAR_FIELD_GAP * h))), bottom
    while r < h and r - bottom < gap:
        if rows[r]:
            bottom = r + 1
        r += 1
    return checked(top, bottom, x, x + bw, (h, w), "frame detected")
