"""SonoMark's own annotation exports (``models.export``) as a dataset source.

The manifest's latest revision of each case is the truth; the BUSI-layout view is re-synced from
it before reading, so a save interrupted by a crash never feeds training a stale file. Each case
is its own group; ``meta["source_sha256"]`` lets training tie a correction to the base-dataset
scan it duplicates.
"""
from __future__ import annotations

from pathlib import Path

from .images import ImageReadError, image_size
from .records import Case, DatasetRead, Problem

SOURCE = "sonomark"


def is_export_layout(root: Path) -> bool:
    return (root / "manifest.jsonl").is_file()


def read_export(root: Path) -> DatasetRead:
    from ..export import current_entries, sync_view, view_paths

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
