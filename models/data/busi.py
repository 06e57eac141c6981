"""BUSI in its release layout: ``<class>/<class> (N).png`` with ``_mask.png``, ``_mask_1.png``...

Al-Dhabyani et al., Data in Brief 28 (2020) 104863. No patient ids: each case is its own group
until near-duplicate grouping merges them. SonoMark's exports use the same layout, so their
reader builds on this one.
"""
from __future__ import annotations

import re
from pathlib import Path

from .images import ImageReadError, image_size
from .records import CLASSES, Case, DatasetRead, Problem

SOURCE = "busi"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_NAME = re.compile(r"^(?P<stem>.+?)(?P<mask>_mask(?:_(?P<k>\d+))?)?$")


def is_busi_layout(root: Path) -> bool:
    return (any((root / c).is_dir() for c in CLASSES) and not (root / "bus_data.csv").exists()
            and not (root / "manifest.jsonl").exists())


def scan_class_folders(root: Path, source: str) -> DatasetRead:
    """Read ``<class>/<stem>.png`` + ``<stem>_mask*.png`` folders into cases of ``source``."""
    cases: list[Case] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in CLASSES:
            problems.append(Problem(folder, "unknown_class",
                                    f"folder is not a class ({', '.join(CLASSES)}); rename or move it"))
            continue
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or f.is_dir():
                continue
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                notes.append(f"{f}: not an image file, ignored")
                continue
            m = _NAME.match(f.stem)
            assert m is not None  # the pattern matches any non-empty stem
            if m["mask"]:
                masks.setdefault(m["stem"], []).append((int(m["k"] or 0), f))
            else:
                images[m["stem"]] = f
        for stem in sorted(set(masks) - set(images)):
            for _, path in masks[stem]:
                problems.append(Problem(path, "orphan_mask", f"mask without an image {stem}.png; add the image or remove the mask"))
        for stem, image_path in images.items():
            mask_paths = tuple(p for _, p in sorted(masks.get(stem, [])))
            if not mask_paths:
                problems.append(Problem(image_path, "missing_mask",
                                        f"no mask {stem}_mask.png beside the image; add it (all black for a normal scan)"))
                continue
            try:
                size = image_size(image_path)
            except ImageReadError as exc:
                problems.append(Problem(image_path, "unreadable", str(exc).split(": ", 1)[1]))
                continue
            bad = False
            for mp in mask_paths:
                try:
                    msize = image_size(mp)
                except ImageReadError as exc:
                    problems.append(Problem(mp, "unreadable", str(exc).split(": ", 1)[1]))
                    bad = True
                    continue
                if msize != size:
                    problems.append(Problem(mp, "mask_size", f"mask is {msize[0]}x{msize[1]} but {image_path.name} is "
                                                             f"{size[0]}x{size[1]}; the mask must have the image's size"))
                    bad = True
            if bad:
                continue
            case_id = f"{source}/{stem}"
            cases.append(Case(case_id=case_id, source=source, image_path=image_path, mask_paths=mask_paths,
                              label=folder.name, group_id=case_id))
    return DatasetRead(source=source, root=root, cases=tuple(cases), problems=tuple(problems), notes=tuple(notes))


def read_busi(root: Path) -> DatasetRead:
    return scan_class_folders(Path(root), SOURCE)
