"""One decoding pass over dataset cases: the facts that the audit, grouping and splits need.

Decoding every scan is the slow part (about 8 s for BUSI + BUS-BRA on 2 cores), so it happens
once here, in parallel, with a progress bar.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from models.data.images import load_mask, load_pixels, mask_digest, pixel_digest
from models.data.records import Case

PHASH_SIZE = 8  # 64-bit DCT hash; BUSI near-duplicates sit at Hamming distance <= 6


@dataclass(frozen=True)
class CaseFacts:
    case_id: str
    width: int
    height: int
    mode: str  # the file's PIL mode, e.g. "L", "RGB"
    color: bool  # True when the colour channels differ somewhere
    pixel_sha256: str
    mask_sha256: str
    mask_area: int  # lesion pixels in the union mask
    mask_bbox: tuple[int, int, int, int] | None  # x, y, width, height of the lesion mask
    phash: str  # hex

    def to_json(self) -> dict:
        return asdict(self)


def case_facts(case: Case) -> CaseFacts:
    pixels, mode = load_pixels(case.image_path)
    h, w = pixels.shape[:2]
    mask = load_mask(case.mask_paths, (h, w))
    gray = pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels).convert("L"))
    if gray.dtype != np.uint8:
        gray = (gray.astype(np.float64) / max(float(gray.max()), 1.0) * 255).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)) if len(xs) else None
    return CaseFacts(
        case_id=case.case_id, width=w, height=h, mode=mode, color=pixels.ndim == 3,
        pixel_sha256=pixel_digest(pixels), mask_sha256=mask_digest(mask), mask_area=int(mask.sum()),
        mask_bbox=bbox, phash=str(imagehash.phash(Image.fromarray(gray), hash_size=PHASH_SIZE)),
    )


def survey(cases: Sequence[Case], workers: int | None = None, progress: bool = True) -> dict[str, CaseFacts]:
    """``CaseFacts`` for every case, keyed by case id, decoded on ``workers`` processes."""
    workers = workers or min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(cases), desc="decoding scans", unit="scan", disable=not progress)
    facts: dict[str, CaseFacts] = {}
    with bar:
        if workers == 1 or len(cases) < 64:
            for case in cases:
                facts[case.case_id] = case_facts(case)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for f in pool.map(case_facts, cases, chunksize=16):
                    facts[f.case_id] = f
                    bar.update()
    return facts


def fingerprint(cases: Iterable[Case], facts: dict[str, CaseFacts]) -> str:
    """sha256 of each case's id, label, group and decoded pixels/mask.

    Pixel-based, so a user's RGB copy of BUSI and this grayscale re-encoding agree, while any
    change of a case, its label, its patient or its mask changes the fingerprint.
    """
    lines = sorted(f"{c.case_id}\t{c.label}\t{c.group_id}\t{facts[c.case_id].pixel_sha256}\t"
                   f"{facts[c.case_id].mask_sha256}\n" for c in cases)
    return hashlib.sha256("".join(lines).encode()).hexdigest()
