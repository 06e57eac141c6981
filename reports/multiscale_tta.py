"""Does reading a scan at several sizes, and averaging the U-Net's lesion maps, carry it across sites? (results in
``reports/cross_site.md``, "The U-Net read at several sizes")

A scanner the models never met may show lesions at another scale in pixels (depth setting, pixel spacing). The
U-Net, trained at 160 px, reads each validation scan at 128, 160, 192 and 224 px; each map is resized to 160 px
and the maps of a combination are averaged, thresholded at 0.5 and scored at 160 px (``intensity_match.seg_point``:
lesion Dice, empty masks on lesion scans, any lesion on a normal scan). The squashed single-source runs of
``reports/aspect_fit.py``, on the other source's validation split and their own; no test split is read.

    python reports/multiscale_tta.py        # about 8 minutes on the 2 cores
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import run_model  # noqa: E402
from models.preprocess import decode_cases, resize_map  # noqa: E402
from models.zoo import REGISTRY, build_model, load_state_file  # noqa: E402

sys.path.insert(0, str(REPO / "reports"))
from aspect_fit import FOLDERS, OTHER, SEGMENTER, finished, runs_of  # noqa: E402
from intensity_match import seg_point  # noqa: E402

SIZES = (128, 160, 192, 224)
COMBINATIONS = ((128,), (160,), (192,), (224,), (160, 192), (128, 160, 192), (160, 224))
BASE = (160,)


def averaged(maps: dict[int, np.ndarray], sizes: tuple[int, ...], size: int) -> np.ndarray:
    """The mean of the maps read at ``sizes``, each resized to ``size`` px."""
    return np.mean([m if s == size else np.stack([resize_map(x, (size, size)) for x in m])
                    for s, m in maps.items() if s in sizes], axis=0)


def main() -> int:
    split, cases = load_verified([DEFAULT_DATA_DIR / f for f in FOLDERS.values()], DEFAULT_SPLIT, progress=False)
    spec = REGISTRY[SEGMENTER]
    val = {s: split.select([c for c in cases if c.source == s], "val") for s in FOLDERS}
    arrays = {(s, z): decode_cases(val[s], z, progress=False) for s in FOLDERS for z in SIZES}
    scores: dict[tuple, list[dict[str, float]]] = {}
    for run in sorted(p for p in runs_of(SEGMENTER).glob("*-squash-s*") if finished(p, SEGMENTER)):
        source = run.name.split("-")[0]
        net = build_model(SEGMENTER, init=None)
        load_state_file(net, run / SEGMENTER / "best.pt")
        for read in (OTHER[source], source):
            maps = {z: run_model(net, spec, arrays[read, z].images) for z in SIZES}
            for sizes in COMBINATIONS:
                point = seg_point(averaged(maps, sizes, spec.input_size), arrays[read, spec.input_size].masks)
                scores.setdefault((source, read, sizes), []).append(point)
        print(f"{run.name}: scored", flush=True)
    print("\n| trained on | read on (val) | sizes (px) | seeds | lesion Dice | minus 160 px, per seed | lesions left "
          "empty | false lesion on normal scans |\n|---|---|---|---|---|---|---|---|")
    for (source, read, sizes), points in scores.items():
        base = scores[source, read, BASE]
        diff = [p["dice_mean"] - b["dice_mean"] for p, b in zip(points, base)]
        fp = np.mean([p.get("fp_image_rate", np.nan) for p in points])
        print(f"| {source} | {read} | {' + '.join(map(str, sizes))} | {len(points)} | "
              f"{np.mean([p['dice_mean'] for p in points]):.3f} | {', '.join(f'{d:+.3f}' for d in diff)} | "
              f"{np.mean([p['empty_rate'] for p in points]):.3f} | {'—' if np.isnan(fp) else f'{fp:.3f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
