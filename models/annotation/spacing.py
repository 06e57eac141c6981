"""Pixel spacing for scans that carry none (PNG, JPEG): typed, or measured once per scanner preset on the
depth ruler, and remembered by preset name so that every later scan of that preset is measured in mm."""
from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

from models.inference.scan import SPACING_MM, Scan

TYPED = "typed by the annotator"
RULER = "measured on the scan's ruler"


class SpacingError(ValueError):
    """A spacing the annotator must correct; the message says how."""


def checked(mm_per_pixel: float) -> float:
    lo, hi = SPACING_MM
    if mm_per_pixel is None or not math.isfinite(mm_per_pixel) or not lo <= mm_per_pixel <= hi:
        raise SpacingError(f"{mm_per_pixel} mm per pixel is not a plausible pixel size; type a value between {lo} "
                           f"and {hi} (ultrasound: usually 0.05-0.3), or measure it on the depth ruler")
    return float(mm_per_pixel)


def from_ruler(p0: tuple[float, float], p1: tuple[float, float], millimetres: float) -> float:
    """mm per pixel from two points ``millimetres`` apart on the scan's depth ruler."""
    pixels = math.dist(p0, p1)
    if pixels < 5:
        raise SpacingError(f"the two ruler points are {pixels:.1f} px apart; click two ticks further apart")
    if not millimetres or not math.isfinite(millimetres) or millimetres <= 0:
        raise SpacingError("type the distance between the two ruler points in mm (e.g. 10 for two 1 cm ticks)")
    return checked(millimetres / pixels)


def with_spacing(scan: Scan, mm_per_pixel: float, source: str, preset: str = "") -> Scan:
    """``scan`` measured with square pixels of ``mm_per_pixel``; its own calibration (DICOM) is never replaced."""
    if scan.spacing_mm:
        return scan
    where = f"{source}{f', preset {preset!r}' if preset else ''}"
    return replace(scan, spacing_mm=(checked(mm_per_pixel),) * 2, spacing_source=where, spacing_refused=None)


class Presets:
    """Spacing per scanner preset, in a JSON file (``None``: in memory only, as on the public demo)."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.values: dict[str, dict] = {}
        if path is not None and Path(path).is_file():
            try:
                self.values = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                self.values = {}

    @staticmethod
    def name(text: str) -> str:
        name = " ".join(re.sub(r"[\x00-\x1f\x7f]+", " ", text or "").split())[:60]
        if not name:
            raise SpacingError("name the scanner preset (e.g. 'Logiq E9, 4 cm depth') to remember its spacing")
        return name

    def set(self, preset: str, mm_per_pixel: float, source: str) -> str:
        name = self.name(preset)
        self.values[name] = {"mm_per_pixel": checked(mm_per_pixel), "source": source}
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.values, indent=1, sort_keys=True))
            tmp.replace(self.path)
        return name

    def get(self, preset: str) -> dict | None:
        try:
            return self.values.get(self.name(preset))
        except SpacingError:  # no name: no preset
            return None

    def names(self) -> list[str]:
        return sorted(self.values)
