"""One scan file to its ``predictions.csv`` row and mask files, and the CSV itself: shared by the local batch run
(``models.inference.predict``) and the Ray engine (``models.inference.predict_ray``)."""
from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from models.inference.analysis import Analysis, Analyzer
from models.inference.overlay import overlay_mask
from models.inference.scan import read_scan, safe_stem

COLUMNS = ["path", "label", "p_benign", "p_malignant", "p_normal", "uncertainty", "review", "review_reasons",
           "mask_path", "overlay_path", "lesion_area", "longest_diameter", "perpendicular_diameter",
           "depth_to_width", "unit", "region", "sha256", "error"]


def output_name(path: Path) -> str:
    """A file-system-safe, collision-free name for ``path``'s outputs."""
    return f"{safe_stem(path.name)}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"


def row_for(path: Path, a: Analysis, mask_rel: str, overlay_rel: str) -> dict[str, str]:
    m = a.measurements
    return {"path": str(path), "label": a.label, **{f"p_{c}": f"{p:.4f}" for c, p in a.probabilities.items()},
            "uncertainty": f"{a.uncertainty:.4f}", "review": str(a.review).lower(),
            "review_reasons": "; ".join(a.review_reasons), "mask_path": mask_rel, "overlay_path": overlay_rel,
            "lesion_area": f"{m.area:.2f}" if m else "0", "longest_diameter": f"{m.longest_diameter:.2f}" if m else "",
            "perpendicular_diameter": f"{m.perpendicular_diameter:.2f}" if m else "",
            "depth_to_width": f"{m.depth_to_width:.3f}" if m else "", "unit": m.unit if m else "",
            "region": region_text(a.region), "sha256": a.scan_sha256, "error": ""}


def region_text(region) -> str:
    """The imaging region the models read, ``top:bottom,left:right (source)``; empty for the whole scan."""
    return "" if region is None else f"{region.top}:{region.bottom},{region.left}:{region.right} ({region.source})"


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The rows of an earlier run, to resume it; none from a CSV written by an older version without all of
    ``COLUMNS`` (its scans were read another way, e.g. whole where a screen capture's region is now read), so that
    every scan is analysed again and one CSV never mixes the two."""
    if not csv_path.is_file():
        return []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            print(f"{csv_path}: written by an older version (no {', '.join(missing)} column); every scan is "
                  "analysed again", file=sys.stderr)
            return []
        return list(reader)


def write_rows(csv_path: Path, rows: list[dict[str, str]]) -> None:
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(csv_path)


def predict_one(path: Path, out: Path, analyzer: Analyzer, overlays: bool, frame: int | None) -> dict[str, str]:
    scan = read_scan(path, frame=frame)
    a = analyzer.analyze(scan)
    name = output_name(path)
    mask_rel = f"masks/{name}.png"
    Image.fromarray(a.mask.astype(np.uint8) * 255).save(out / mask_rel)
    overlay_rel = ""
    if overlays:
        (out / "overlays").mkdir(exist_ok=True)
        overlay_rel = f"overlays/{name}.png"
        Image.fromarray(overlay_mask(scan.display, a.mask)).save(out / overlay_rel)
    return row_for(path, a, mask_rel, overlay_rel)
