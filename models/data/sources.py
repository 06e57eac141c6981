"""The registry of dataset sources: how each is recognised and read.

A new source (e.g. SonoMark's own annotation exports) is one more entry in ``SOURCES``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import busbra, busi, sonomark
from .paths import REPO
from .records import Case, DatasetError, DatasetRead

# Where the BUSI and BUS-BRA releases live unless a command is given another folder.
DEFAULT_DATA_DIR = Path(os.environ.get("SONOMARK_DATA", REPO.parent / "shared" / "datasets"))


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path], DatasetRead]


SOURCES: dict[str, Source] = {
    sonomark.SOURCE: Source(sonomark.SOURCE, "SonoMark export (manifest.jsonl with <class>/<case>.png and _mask.png)",
                            sonomark.is_export_layout, sonomark.read_export),
    busbra.SOURCE: Source(busbra.SOURCE, "BUS-BRA release (Images/, Masks/, bus_data.csv, 5-fold-cv.csv)",
                          busbra.is_busbra_layout, busbra.read_busbra),
    busi.SOURCE: Source(busi.SOURCE, "BUSI release (benign/, malignant/, normal/ with _mask.png files)",
                        busi.is_busi_layout, busi.read_busi),
}


def detect_source(root: Path) -> str | None:
    for source in SOURCES.values():
        if source.detect(root):
            return source.name
    return None


def _expected() -> str:
    return "Expected one of: " + "; ".join(s.description for s in SOURCES.values())


def find_dataset_roots(path: Path) -> list[Path]:
    """``path`` itself when it is a dataset, else the datasets directly inside it (e.g. ``shared/datasets``)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; give the folder of a BUSI or BUS-BRA release")
    if detect_source(path):
        return [path]
    roots = [p for p in sorted(path.iterdir()) if p.is_dir() and detect_source(p)]
    if not roots:
        raise FileNotFoundError(f"{path}: not a dataset folder and holds none. {_expected()}")
    return roots


def read_dataset(root: Path) -> DatasetRead:
    root = Path(root)
    name = detect_source(root)
    if name is None:
        raise FileNotFoundError(f"{root}: not a dataset folder. {_expected()}")
    return SOURCES[name].read(root)


def read_datasets(paths: Iterable[Path]) -> list[DatasetRead]:
    return [read_dataset(root) for path in paths for root in find_dataset_roots(Path(path))]


def load_cases(paths: Iterable[Path]) -> list[Case]:
    """All cases of the datasets at ``paths``; a dataset with any problem raises ``DatasetError``."""
    cases: list[Case] = []
    for read in read_datasets(paths):
        if read.problems:
            raise DatasetError(read.root, read.problems)
        cases.extend(read.cases)
    return cases
