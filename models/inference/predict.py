"""Batch pre-annotation: ``sonomark predict INPUT... --out DIR [--sort uncertainty]``.

INPUT: scan files or folders (searched recursively). Writes ``DIR/predictions.csv`` and each mask as
a 0/255 PNG of the input's exact size under ``DIR/masks/`` (``mask_path`` is relative to DIR);
``--overlays`` adds the mask drawn on the scan. A run that is stopped resumes where it left off;
a file that cannot be read gets a row with its ``error`` and the run goes on. Exit status is
non-zero only when nothing could be processed or the arguments are wrong.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image
from tqdm import tqdm

from models.inference.analysis import Analysis, Analyzer
from models.inference.overlay import overlay_mask
from models.inference.scan import ScanError, read_scan, safe_stem
from models.weights import WEIGHTS_DIR

COLUMNS = ["path", "label", "p_benign", "p_malignant", "p_normal", "uncertainty", "review", "review_reasons",
           "mask_path", "overlay_path", "lesion_area", "longest_diameter", "perpendicular_diameter",
           "depth_to_width", "unit", "sha256", "error"]
SCAN_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom", ""}


def find_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files given, plus scan-like files inside folders given (hidden files skipped)."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in SCAN_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(item).parts))
        elif item.exists():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return list(dict.fromkeys(found))


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
            "sha256": a.scan_sha256, "error": ""}


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.is_file():
        return []
    with open(csv_path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(csv_path: Path, rows: list[dict[str, str]]) -> None:
    tmp = csv_path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(csv_path)


def _predict_one(path: Path, out: Path, analyzer: Analyzer, overlays: bool, frame: int | None) -> dict[str, str]:
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


def predict(inputs: list[Path], out: Path, analyzer: Analyzer, overlays: bool = False, sort: str | None = None,
            frame: int | None = None, progress: bool = True) -> list[dict[str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    csv_path = out / "predictions.csv"
    done = {r["path"]: r for r in read_rows(csv_path) if not r["error"] and (out / r["mask_path"]).is_file()}
    rows = list(done.values())
    todo = [p for p in inputs if str(p) not in done]
    for path in tqdm(todo, desc="pre-annotating", unit="scan", disable=not progress):
        try:
            rows.append(_predict_one(path, out, analyzer, overlays, frame))
        except ScanError as exc:
            rows.append({**{c: "" for c in COLUMNS}, "path": str(path), "error": f"{exc.kind}: {exc}"})
        except Exception as exc:  # noqa: BLE001 - one file's failure is that file's row, never the run's end
            rows.append({**{c: "" for c in COLUMNS}, "path": str(path),
                         "error": f"failed: {type(exc).__name__}: {exc}"})
            print(f"warning: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        write_rows(csv_path, rows)  # after every scan: a stopped run loses nothing
    if sort == "uncertainty":  # the review queue: most uncertain first, unreadable files last
        rows.sort(key=lambda r: (r["error"] != "", -float(r["uncertainty"] or 0)))
    write_rows(csv_path, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", type=Path, help="scan files or folders")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--sort", choices=("uncertainty",), help="order the CSV as a review queue")
    ap.add_argument("--overlays", action="store_true", help="also write the mask drawn on each scan")
    ap.add_argument("--frame", type=int, help="frame to read from multi-frame DICOM files")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    args = ap.parse_args(argv)
    try:
        inputs = find_inputs(args.inputs)
        analyzer = Analyzer(args.weights)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not inputs:
        print(f"error: no scan files in {', '.join(map(str, args.inputs))}", file=sys.stderr)
        return 2
    rows = predict(inputs, args.out, analyzer, args.overlays, args.sort, args.frame)
    ok = sum(not r["error"] for r in rows)
    print(f"{ok} of {len(rows)} scans pre-annotated, {len(rows) - ok} unreadable; wrote {args.out / 'predictions.csv'}")
    return 0 if ok else 1

