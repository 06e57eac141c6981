"""BUS-BRA in its release layout: ``Images/``, ``Masks/``, ``bus_data.csv``, ``5-fold-cv.csv``.

Gómez-Flores et al., Medical Physics 2024. Several images per patient (``Case`` column): the
patient is the group. ``kFold`` of ``5-fold-cv.csv`` is kept in ``meta["kfold5"]``.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .images import ImageReadError, image_size
from .records import CLASSES, Case, DatasetRead, Problem

SOURCE = "busbra"


def is_busbra_layout(root: Path) -> bool:
    return (root / "bus_data.csv").is_file()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def read_busbra(root: Path) -> DatasetRead:
    root = Path(root)
    problems: list[Problem] = []
    notes: list[str] = []
    data_csv, folds_csv = root / "bus_data.csv", root / "5-fold-cv.csv"
    rows = _read_csv(data_csv)
    needed = {"ID", "Case", "Pathology"}
    if rows and not needed <= set(rows[0]):
        problems.append(Problem(data_csv, "bad_csv", f"missing column(s) {sorted(needed - set(rows[0]))}"))
        return DatasetRead(SOURCE, root, (), tuple(problems))
    folds: dict[str, str] = {}
    if folds_csv.is_file():
        folds = {r["ID"]: r["kFold"] for r in _read_csv(folds_csv)}
    else:
        problems.append(Problem(folds_csv, "missing_file", "the patient-disjoint fold file is missing; restore it from the release"))

    cases: list[Case] = []
    listed: set[str] = set()
    for row in rows:
        image_id = row["ID"].strip()
        listed.add(image_id)
        image_path = root / "Images" / f"{image_id}.png"
        mask_path = root / "Masks" / f"mask_{image_id.removeprefix('bus_')}.png"
        label = row["Pathology"].strip().lower()
        if label not in CLASSES:
            problems.append(Problem(data_csv, "unknown_label", f"{image_id}: pathology {row['Pathology']!r} is not one of {CLASSES}"))
            continue
        if not image_path.is_file():
            problems.append(Problem(image_path, "missing_image", f"listed in {data_csv.name} but missing; restore it or remove the row"))
            continue
        if not mask_path.is_file():
            problems.append(Problem(mask_path, "missing_mask", f"mask of {image_id} is missing; restore it from the release"))
            continue
        try:
            size, msize = image_size(image_path), image_size(mask_path)
        except ImageReadError as exc:
            path_text, why = str(exc).split(": ", 1)
            problems.append(Problem(Path(path_text), "unreadable", why))
            continue
        if msize != size:
            problems.append(Problem(mask_path, "mask_size", f"mask is {msize[0]}x{msize[1]} but {image_path.name} is "
                                                            f"{size[0]}x{size[1]}; the mask must have the image's size"))
            continue
        if (row.get("Width"), row.get("Height")) != (str(size[0]), str(size[1])):
            notes.append(f"{data_csv.name}: {image_id} Width/Height {row.get('Width')}x{row.get('Height')} "
                         f"differ from the PNG's {size[0]}x{size[1]} (the PNG is used)")
        if folds and image_id not in folds:
            problems.append(Problem(folds_csv, "missing_fold", f"{image_id} has no kFold; restore the release's fold file"))
            continue
        meta = {k: row[k] for k in ("Histology", "BIRADS", "Device", "Side", "BBOX") if k in row}
        if folds:
            meta["kfold5"] = folds[image_id]
        cases.append(Case(case_id=f"{SOURCE}/{image_id}", source=SOURCE, image_path=image_path,
                          mask_paths=(mask_path,), label=label, group_id=f"{SOURCE}/patient-{row['Case'].strip()}",
                          meta=meta))
    images_dir = root / "Images"
    if images_dir.is_dir():
        for f in sorted(images_dir.glob("*.png")):
            if f.stem not in listed:
                problems.append(Problem(f, "unlisted_image", f"not listed in {data_csv.name}, so it has no label or "
                                                             "patient; add its row or remove the file"))
    return DatasetRead(SOURCE, root, tuple(cases), tuple(problems), tuple(notes))
