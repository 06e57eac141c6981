"""Ground-truth explorer: browse the committed split's cases with their masks.

Annotators use it to see what the reference data looks like, which near-duplicates were grouped
and why some cases are excluded. Handlers are plain functions, tested without a browser.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.data import CLASSES, DEFAULT_DATA_DIR, Case, read_datasets
from models.data.images import load_gray, load_mask
from models.data.splits import DEFAULT_SPLIT, SPLITS, Split, load_split
from models.inference.overlay import overlay_mask

ALL = "all"
EXCLUDED = "excluded"


@dataclass(frozen=True)
class CaseIndex:
    cases: dict[str, Case]
    split: Split
    data_dir: Path

    def side(self, case_id: str) -> str:
        return self.split.assignment.get(case_id) or (EXCLUDED if case_id in self.split.excluded else "not in split")


@lru_cache(maxsize=4)
def case_index(data_dir: Path = DEFAULT_DATA_DIR, split_path: Path = DEFAULT_SPLIT) -> CaseIndex:
    """Every readable case under ``data_dir`` with the committed split (read once per process)."""
    cases = {c.case_id: c for r in read_datasets([data_dir]) for c in r.cases}
    return CaseIndex(cases, load_split(split_path), Path(data_dir))


def list_cases(index: CaseIndex, source: str = ALL, split: str = ALL, label: str = ALL) -> list[str]:
    return sorted(cid for cid, c in index.cases.items()
                  if source in (ALL, c.source) and label in (ALL, c.label) and split in (ALL, index.side(cid)))


def show_case(index: CaseIndex, case_id: str, alpha: float = 0.3) -> tuple[np.ndarray, str]:
    """The scan with its ground-truth mask drawn on, and a Markdown description."""
    if case_id not in index.cases:
        raise KeyError(f"case {case_id!r} is not in {index.data_dir}; pick one from the list")
    case = index.cases[case_id]
    gray = load_gray(case.image_path)
    mask = load_mask(case.mask_paths, gray.shape)
    group = index.split.groups.get(case_id, case.group_id)
    mates = sorted(c for c, g in index.split.groups.items() if g == group and c != case_id)
    lines = [f"**{case_id}** — label **{case.label}**, split **{index.side(case_id)}**",
             f"- file: `{case.image_path.name}`, {gray.shape[1]}x{gray.shape[0]} px; "
             f"lesion area {int(mask.sum())} px ({100 * mask.mean():.1f}%)",
             f"- group `{group}`" + (f" with {', '.join(mates)}" if mates else " (alone)")]
    if case_id in index.split.excluded:
        lines.append(f"- excluded: {index.split.excluded[case_id]}")
    lines += [f"- {k}: {v}" for k, v in case.meta.items() if k != "BBOX"]
    return overlay_mask(gray, mask, alpha=alpha), "\n".join(lines)


SPLIT_CHOICES = [ALL, *SPLITS, EXCLUDED]
LABEL_CHOICES = [ALL, *CLASSES]
