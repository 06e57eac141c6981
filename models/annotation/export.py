"""Exporting annotated cases as training data: a BUSI-layout folder plus ``manifest.jsonl``.

    EXPORT/
      manifest.jsonl                  one line per saved revision (the history; the commit point)
      <class>/<case>.png              the scan, and
      <class>/<case>_mask.png         the final mask (0/255, the scan's exact size): what training reads
      model_masks/<case>.png          the model's mask, kept beside the annotator's
      revisions/<case>/r<N>/          every revision's files, never overwritten (instances.png: several
                                      lesions, pixel value k = lesion k)
      coco.json                       COCO instances with RLE masks, one per lesion (``write_coco``)

Saving the same scan again adds a revision; nothing is overwritten or lost. Each revision is written
to a temporary folder and renamed into place, then the manifest is rewritten atomically, then the
BUSI-layout view is brought in line with the manifest; a crash at any point leaves the old or the
new state, never a half-written file. A file lock serialises concurrent saves.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.masks import dice_iou
from models.data.records import CLASSES
from models.data.sonomark import (
    MANIFEST,
    current_entries,
    read_manifest,
    revision_paths,
    sync_view,
    view_paths,
    write_atomic,
)
from models.inference.scan import Scan, safe_stem

APP_VERSION = "0.1.0"
INSTANCES = "instances.png"  # per revision with several lesions: pixel value k = lesion k
LABEL_SETTERS = ("model", "annotator")


@dataclass(frozen=True)
class Annotation:
    """A case as the annotator leaves it: the scan, the final label and mask, and what the model said."""

    scan: Scan
    label: str
    label_set_by: str  # "model" or "annotator"
    mask: np.ndarray  # final (H, W) bool, the scan's size
    annotator: str
    model_mask: np.ndarray | None = None
    model_label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)  # ensemble
    per_model: dict[str, dict[str, float]] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    started_at: str | None = None
    note: str = ""
    lesions: tuple[np.ndarray, ...] = ()  # one mask per lesion when there are several; their union is ``mask``

    def __post_init__(self) -> None:
        if self.label not in CLASSES:
            raise ValueError(f"label {self.label!r} is not one of {CLASSES}")
        if self.label_set_by not in LABEL_SETTERS:
            raise ValueError(f"label_set_by {self.label_set_by!r} is not one of {LABEL_SETTERS}")
        for what, m in (("mask", self.mask), ("model mask", self.model_mask)):
            if m is not None and m.shape != self.scan.shape:
                raise ValueError(f"{self.scan.name}: {what} is {m.shape[1]}x{m.shape[0]} but the scan is "
                                 f"{self.scan.shape[1]}x{self.scan.shape[0]}")
        if self.lesions:
            union = np.zeros(self.scan.shape, bool)
            for m in self.lesions:
                if m.shape != self.scan.shape:
                    raise ValueError(f"{self.scan.name}: a lesion mask is {m.shape[1]}x{m.shape[0]} but the scan is "
                                     f"{self.scan.shape[1]}x{self.scan.shape[0]}")
                union |= m
            if not np.array_equal(union, np.asarray(self.mask, bool)):
                raise ValueError(f"{self.scan.name}: the lesion masks do not add up to the final mask")
            if len(self.lesions) > 255:
                raise ValueError(f"{self.scan.name}: {len(self.lesions)} lesions; at most 255 are stored")


@dataclass(frozen=True)
class SavedCase:
    case_id: str
    revision: int
    image_path: Path
    mask_path: Path
    entry: dict


def case_id_for(scan: Scan) -> str:
    """Stable per scan content: the same scan saved twice is the same case."""
    return f"{safe_stem(scan.name)}-{scan.sha256[:10]}"


@contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_leftovers(folder: Path) -> None:
    """Under the lock, no save is under way: remove what a killed save left half-written (its hidden
    ``.rN.*`` revision folder, ``.*.tmp`` files). A kill after the commit point is repaired by the
    ``sync_view`` that every save and zip runs, so a case is never missing from its class folder for long."""
    for leftover in [*folder.glob("revisions/*/.r*.*"), *folder.rglob(".*.tmp")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _png(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _mask_png(mask: np.ndarray) -> bytes:
    return _png(np.asarray(mask, bool).astype(np.uint8) * 255)


def save_case(folder: Path, a: Annotation) -> SavedCase:
    """Save ``a`` as a new revision of its case; returns where the view files are."""
    folder = Path(folder)
    case_id = case_id_for(a.scan)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with _locked(folder):
        _remove_leftovers(folder)  # the sync_view after this save's commit also repairs an earlier crash
        history = read_manifest(folder)
        revision = 1 + max((e["revision"] for e in history if e["case_id"] == case_id), default=0)
        entry = {
            "case_id": case_id, "revision": revision, "source_file": a.scan.name, "source_sha256": a.scan.sha256,
            "width": a.scan.shape[1], "height": a.scan.shape[0], "label": a.label, "label_set_by": a.label_set_by,
            "model_label": a.model_label, "dice_model_vs_final": (round(dice_iou(a.model_mask, a.mask)[0], 4)
                                                                  if a.model_mask is not None else None),
            "lesion_pixels": int(np.asarray(a.mask, bool).sum()), "probabilities": a.probabilities,
            "per_model": a.per_model, "model_versions": a.model_versions, "annotator": a.annotator,
            "started_at": a.started_at, "saved_at": now, "app_version": APP_VERSION,
            "pixel_spacing_mm": list(a.scan.spacing_mm) if a.scan.spacing_mm else None,
            "pixel_spacing_source": a.scan.spacing_source if a.scan.spacing_mm else None, "note": a.note,
            "lesions": len(a.lesions) if a.lesions else int(np.asarray(a.mask, bool).any()),
        }
        if len(a.lesions) > 1:
            entry["instances"] = f"{revision_paths(entry)['image'].rsplit('/', 1)[0]}/{INSTANCES}"
        rev_dir = folder / revision_paths(entry)["image"].rsplit("/", 1)[0]
        rev_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=rev_dir.parent, prefix=f".r{revision}."))
        try:
            (tmp_dir / "image.png").write_bytes(_png(a.scan.gray))
            (tmp_dir / "mask.png").write_bytes(_mask_png(a.mask))
            if a.model_mask is not None:
                (tmp_dir / "model_mask.png").write_bytes(_mask_png(a.model_mask))
            if len(a.lesions) > 1:  # 0 background, k lesion k; a later lesion wins where two overlap
                labels = np.zeros(a.scan.shape, np.uint8)
                for k, m in enumerate(a.lesions, start=1):
                    labels[np.asarray(m, bool)] = k
                (tmp_dir / INSTANCES).write_bytes(_png(labels))
            if rev_dir.exists():  # written by a save that crashed before its commit point: not in the manifest
                shutil.rmtree(rev_dir)
            os.rename(tmp_dir, rev_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in [*history, entry])
        write_atomic(folder / MANIFEST, lines.encode())  # the commit point
        sync_view(folder)
    view = view_paths(entry)
    return SavedCase(case_id, revision, folder / view["image"], folder / view["mask"], entry)


def write_coco(folder: Path) -> Path:
    """``coco.json``: the current cases as COCO instances with RLE masks (pycocotools)."""
    from pycocotools import mask as rle

    folder = Path(folder)
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES) if c != "normal"]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for k, entry in enumerate(sorted(current_entries(folder).values(), key=lambda e: e["case_id"]), start=1):
        view = view_paths(entry)
        images.append({"id": k, "file_name": view["image"], "width": entry["width"], "height": entry["height"],
                       "sonomark_case_id": entry["case_id"], "sonomark_label": entry["label"]})
        if entry.get("instances"):  # several lesions: one COCO instance each
            labels = np.asarray(Image.open(folder / entry["instances"]))
            masks = [labels == v for v in range(1, int(labels.max()) + 1)]
        else:
            masks = [np.asarray(Image.open(folder / view["mask"])) > 127]
        for mask in masks:
            if not mask.any() or entry["label"] not in cat_id:
                continue
            code = rle.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": cat_id[entry["label"]],
                                "segmentation": {"size": code["size"], "counts": code["counts"].decode("ascii")},
                                "area": float(rle.area(code)), "bbox": [float(v) for v in rle.toBbox(code)],
                                "iscrowd": 0})
    path = folder / "coco.json"
    write_atomic(path, json.dumps({"info": {"description": "SonoMark export", "version": APP_VERSION},
                                    "images": images, "annotations": annotations, "categories": categories}).encode())
    return path


def zip_export(folder: Path, dest: Path) -> Path:
    """A zip of the export (view, model masks, revisions, manifest, COCO) for download."""
    folder = Path(folder)
    with _locked(folder):
        _remove_leftovers(folder)
        sync_view(folder)
        write_coco(folder)
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(folder.rglob("*")):
                rel = p.relative_to(folder)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    zf.write(p, str(rel))
    return dest
