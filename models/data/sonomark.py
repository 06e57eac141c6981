"""SonoMark's own annotation exports as a dataset source, and the export folder's layout.

``models.annotation.export`` writes exports; this module owns where things live in one (the
manifest, each revision's files, the BUSI-layout view), so that the writer and this reader share
one definition of the format.

The manifest's latest revision of each case is the truth; the BUSI-layout view is re-synced from
it before reading, so a save interrupted by a crash never feeds training a stale file. Each case
is its own group; ``meta["source_sha256"]`` lets training tie a correction to the base-dataset
scan it duplicates.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .images import ImageReadError, image_size
from .records import CLASSES, Case, DatasetRead, Problem

SOURCE = "sonomark"
MANIFEST = "manifest.jsonl"


def is_export_layout(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def read_manifest(folder: Path) -> list[dict]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def current_entries(folder: Path) -> dict[str, dict]:
    """The latest revision of every case."""
    latest: dict[str, dict] = {}
    for e in read_manifest(folder):
        if e["case_id"] not in latest or e["revision"] > latest[e["case_id"]]["revision"]:
            latest[e["case_id"]] = e
    return latest


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, fsynced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def revision_paths(entry: dict) -> dict[str, str]:
    r = f"revisions/{entry['case_id']}/r{entry['revision']}"
    return {"image": f"{r}/image.png", "mask": f"{r}/mask.png", "model_mask": f"{r}/model_mask.png"}


def view_paths(entry: dict) -> dict[str, str]:
    c = entry["case_id"]
    return {"image": f"{entry['label']}/{c}.png", "mask": f"{entry['label']}/{c}_mask.png",
            "model_mask": f"model_masks/{c}.png"}


def sync_view(folder: Path) -> None:
    """Make the BUSI-layout view match the manifest (repairs what a crash left behind)."""
    folder = Path(folder)
    for entry in current_entries(folder).values():
        src, dst = revision_paths(entry), view_paths(entry)
        for key in ("image", "mask", "model_mask"):
            s, d = folder / src[key], folder / dst[key]
            if not s.is_file():
                continue
            if not d.is_file() or d.stat().st_size != s.stat().st_size or d.read_bytes() != s.read_bytes():
                d.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(d, s.read_bytes())
        for label in CLASSES:  # a relabelled case leaves its old class folder
            if label != entry["label"]:
                for stale in (folder / label / f"{entry['case_id']}.png", folder / label / f"{entry['case_id']}_mask.png"):
                    stale.unlink(missing_ok=True)


def read_export(root: Path) -> DatasetRead:
    root = Path(root)
    sync_view(root)
    cases, problems = [], []
    for case_id, entry in sorted(current_entries(root).items()):
        view = view_paths(entry)
        image, mask = root / view["image"], root / view["mask"]
        try:
            if image_size(image) != image_size(mask):
                problems.append(Problem(mask, "mask_size", "mask and scan differ in size; save the case again"))
                continue
        except (ImageReadError, FileNotFoundError) as exc:
            problems.append(Problem(image, "unreadable", f"{exc}; save the case again from the app"))
            continue
        cases.append(Case(case_id=f"{SOURCE}/{case_id}", source=SOURCE, image_path=image, mask_paths=(mask,),
                          label=entry["label"], group_id=f"{SOURCE}/{case_id}",
                          meta={"source_sha256": entry["source_sha256"], "revision": str(entry["revision"]),
                                "annotator": entry["annotator"] or ""}))
    return DatasetRead(SOURCE, root, tuple(cases), tuple(problems))
