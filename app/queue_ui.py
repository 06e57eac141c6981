"""Queue handlers: open a folder of scans, watch its pre-annotation, step through it (local mode)."""
from __future__ import annotations

import os
from pathlib import Path

from models.annotation.review_queue import ReviewQueue

from . import review


def queues_root() -> Path:
    return Path(os.environ.get("SONOMARK_QUEUE_DIR", Path.home() / "SonoMark" / "queues"))


def open_queue(folder: str) -> ReviewQueue:
    if not folder or not folder.strip():
        raise review.ReviewError("Type the path of a folder of scans on this machine.")
    try:
        queue = ReviewQueue(Path(folder.strip()).expanduser(), review.local_export_dir(), queues_root())
        engine = review.analyzer()
    except FileNotFoundError as exc:
        raise review.ReviewError(str(exc)) from exc
    if not queue.inputs:
        raise review.ReviewError(f"{folder}: no scan files (PNG, JPEG, BMP, TIFF, WebP, DICOM) in this folder")
    queue.start(engine)
    return queue


def status(queue: ReviewQueue | None) -> tuple[str, list[list]]:
    if queue is None:
        return "No folder open.", []
    annotated, total = queue.progress()
    done, _ = queue.done_count()
    current = queue.current()
    lines = [f"**{done} of {total} done** · pre-annotated {annotated} of {total}"
             + (" (running…)" if queue.running else "")]
    if queue.failure:
        lines.append(f"⚠ {queue.failure}")
    if current:
        lines.append(f"Current: `{Path(current.path).name}` ({current.label}, uncertainty {current.uncertainty:.2f})")
    rows = [["▶" if current and i.path == current.path else "", Path(i.path).name, i.label or "—",
             round(i.uncertainty, 3), "yes" if i.review else "", "✓" if i.done else ("skipped" if i.skipped else ""),
             i.error] for i in queue.items()]
    return "\n\n".join(lines), rows


def step(queue: ReviewQueue | None, action: str) -> None:
    if queue is None:
        raise review.ReviewError("Open a folder first.")
    {"next": queue.next, "previous": queue.previous, "skip": queue.skip}[action]()


def current_path(queue: ReviewQueue | None) -> str:
    item = queue.current() if queue else None
    if item is None:
        raise review.ReviewError("Nothing to review yet: wait for pre-annotation, or open a folder.")
    return item.path
