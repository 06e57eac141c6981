"""The record types that cross module boundaries for dataset cases."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CLASSES: tuple[str, ...] = ("benign", "malignant", "normal")


@dataclass(frozen=True)
class Case:
    """One scan with its lesion mask(s) and label, from any source.

    ``case_id`` is ``"<source>/<name>"`` and unique across sources. ``group_id`` is the
    source's own grouping (a patient for BUS-BRA, the case itself when the source has no
    patient ids); near-duplicate grouping refines it later (``models.data.grouping``).
    The lesion mask is the union of ``mask_paths``.
    """

    case_id: str
    source: str
    image_path: Path
    mask_paths: tuple[Path, ...]
    label: str
    group_id: str
    meta: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label not in CLASSES:
            raise ValueError(f"{self.image_path}: label {self.label!r} is not one of {CLASSES}")


@dataclass(frozen=True)
class Problem:
    """A defect found while reading a dataset, naming the file and what to do."""

    path: Path
    kind: str  # "missing_mask", "mask_size", "unknown_class", "unreadable", ...
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class DatasetRead:
    """What a reader found: the cases, plus every problem (empty when the dataset is sound)."""

    source: str
    root: Path
    cases: tuple[Case, ...]
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()  # harmless quirks worth reporting (e.g. wrong CSV metadata)


class DatasetError(ValueError):
    """A malformed dataset. The message lists every problem with its file."""

    def __init__(self, root: Path, problems: tuple[Problem, ...] | list[Problem]):
        self.root = Path(root)
        self.problems = tuple(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:25])
        more = f"\n  ... and {len(self.problems) - 25} more" if len(self.problems) > 25 else ""
        super().__init__(
            f"{root}: {len(self.problems)} problem(s) in the dataset; fix or remove these files "
            f"(run `sonomark audit {root}` for the full report):\n{shown}{more}"
        )
