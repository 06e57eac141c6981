"""Batch pre-annotation: ``sonomark predict INPUT... --out DIR [--sort uncertainty]``.

INPUT: scan files or folders (searched recursively). Writes ``DIR/predictions.csv`` and each mask as
a 0/255 PNG of the input's exact size under ``DIR/masks/`` (``mask_path`` is relative to DIR);
``--overlays`` adds the mask drawn on the scan. A run that is stopped resumes where it left off;
a file that cannot be read gets a row with its ``error`` and the run goes on. Exit status is
non-zero only when nothing could be processed or the arguments are wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from models.inference.analysis import Analyzer
from models.inference.predict_ray import predict_ray
from models.inference.predictions import COLUMNS, predict_one, read_rows, write_rows
from models.inference.scan import ScanError
from models.weights import WEIGHTS_DIR

__all__ = ["COLUMNS", "find_inputs", "predict", "predict_ray", "read_rows", "write_rows"]

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
            rows.append(predict_one(path, out, analyzer, overlays, frame))
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
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: this process; ray: a pool of Ray actors (models.inference.predict_ray)")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors, one CPU each (default: %(default)s)")
    ap.add_argument("--ray-address", help="join this Ray cluster (e.g. auto) instead of starting a local one")
    args = ap.parse_args(argv)
    try:
        inputs = find_inputs(args.inputs)
        analyzer = Analyzer(args.weights) if args.engine == "local" else None
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not inputs:
        print(f"error: no scan files in {', '.join(map(str, args.inputs))}", file=sys.stderr)
        return 2
    if args.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            print("error: the Ray engine needs Ray: .venv/bin/pip install -r requirements-cluster.txt", file=sys.stderr)
            return 2
        rows = predict_ray(inputs, args.out, args.weights, args.overlays, args.sort, args.frame, args.workers,
                           args.ray_address)
    else:
        rows = predict(inputs, args.out, analyzer, args.overlays, args.sort, args.frame)
    ok = sum(not r["error"] for r in rows)
    print(f"{ok} of {len(rows)} scans pre-annotated, {len(rows) - ok} unreadable; wrote {args.out / 'predictions.csv'}")
    return 0 if ok else 1

