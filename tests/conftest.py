"""Shared fixtures: small synthetic datasets in the BUSI and BUS-BRA release layouts."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.data import DEFAULT_DATA_DIR as SHARED_DATASETS
from models.inference import onnx_cache

REPO = Path(__file__).resolve().parent.parent


def scan(seed: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A distinct synthetic 'scan' (smooth random texture, so perceptual hashes differ by seed)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[1] // 8, size[0] // 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(size, Image.BICUBIC))


def lesion(size: tuple[int, int], cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: size[1], : size[0]]
    return (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r).astype(np.uint8) * 255


def write_busi(root: Path, per_class: dict[str, int] | None = None, rgb: bool = False, start_seed: int = 0) -> Path:
    """A BUSI-layout folder; lesion classes get a disc mask, normal an all-black one."""
    per_class = per_class or {"benign": 6, "malignant": 4, "normal": 3}
    seed = start_seed
    for label, n in per_class.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for k in range(1, n + 1):
            img = scan(seed)
            seed += 1
            (Image.fromarray(img).convert("RGB") if rgb else Image.fromarray(img)).save(root / label / f"{label} ({k}).png")
            mask = np.zeros_like(img) if label == "normal" else lesion((64, 48), 20 + k % 20, 24, 8)
            Image.fromarray(mask).convert("1").save(root / label / f"{label} ({k})_mask.png")
    return root


def write_busbra(root: Path, patients: int = 10, per_patient: int = 2) -> Path:
    """A BUS-BRA-layout folder: patient p has images bus_000p-l/-r, folds 1-5 by patient."""
    (root / "Images").mkdir(parents=True, exist_ok=True)
    (root / "Masks").mkdir(parents=True, exist_ok=True)
    rows, folds = [], []
    for p in range(1, patients + 1):
        label = "malignant" if p % 3 == 0 else "benign"
        for side in "lrs"[:per_patient]:
            iid = f"bus_{p:04d}-{side}"
            img = scan(1000 + p * 10 + "lrs".index(side))
            Image.fromarray(img).save(root / "Images" / f"{iid}.png")
            Image.fromarray(lesion((64, 48), 30, 20, 6)).save(root / "Masks" / f"mask_{p:04d}-{side}.png")
            rows.append({"ID": iid, "Case": p, "Histology": "x", "Pathology": label, "BIRADS": "4", "Device": "d",
                         "Width": 64, "Height": 48, "Side": side, "BBOX": "[24,14,13,13]"})
            folds.append({"ID": iid, "Pathology": label, "kFold": (p - 1) % 5 + 1})
    with open(root / "bus_data.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(root / "5-fold-cv.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(folds[0]))
        w.writeheader()
        w.writerows(folds)
    return root


@pytest.fixture(autouse=True, scope="session")
def session_onnx_cache(tmp_path_factory):
    """The suite never writes to the user's ONNX cache; its engines and servers share one of their own, as a
    user's restarts do (``models.inference.onnx_cache``)."""
    before = os.environ.get(onnx_cache.ENV)
    os.environ[onnx_cache.ENV] = str(tmp_path_factory.mktemp("onnx-cache"))
    yield
    if before is None:
        os.environ.pop(onnx_cache.ENV, None)
    else:
        os.environ[onnx_cache.ENV] = before


@pytest.fixture
def busi(tmp_path: Path) -> Path:
    return write_busi(tmp_path / "busi")


@pytest.fixture
def busbra(tmp_path: Path) -> Path:
    return write_busbra(tmp_path / "busbra")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "Dataset_BUSI_with_GT").is_dir() or not (SHARED_DATASETS / "BUSBRA").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (set SONOMARK_DATA to the folder holding "
                    "Dataset_BUSI_with_GT and BUSBRA)")
    return SHARED_DATASETS
