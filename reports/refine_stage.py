"""A refinement stage for the ensemble's masks: each lesion's box, with a margin, given to LiteMedSAM.

    python reports/refine_stage.py [--data ../shared/datasets] [--margins 0 0.1 0.2]

Issue #18 asks whether the promptable segmenter improves the segmenters' masks when the ensemble's mask
gives the box; adopt only if validation and cross-site Dice improve. Measured on the validation splits
(the test splits are not read):

- in-domain: the shipped weights on BUSI val and BUS-BRA val;
- cross-site: weights trained on BUS-BRA alone (``--cross-site-weights``, made for ``reports/cross_site.md``)
  on BUSI val, BUSI never seen in their training.

Per lesion scan: Dice of the ensemble's mask, and of the refined mask for each margin (every connected region
of the ensemble's mask replaced by LiteMedSAM's mask for its box grown by the margin on each side; an empty mask
stays empty). Normal scans: the share with a false lesion is unchanged by construction (a region is refined, never
removed), so only lesion Dice is compared. Means with 95% group-bootstrap intervals, and the paired difference.
Writes ``reports/refine_stage.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.annotation import simulate  # noqa: E402
from models.annotation.prompts import Prompt, PromptSegmenter  # noqa: E402
from models.data import DEFAULT_DATA_DIR  # noqa: E402
from models.data.images import load_mask  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.scan import read_scan  # noqa: E402
from models.training.metrics import _intervals, group_bootstrap  # noqa: E402
from models.weights import WEIGHTS_DIR  # noqa: E402

SOURCES = {"busi": "Dataset_BUSI_with_GT", "busbra": "BUSBRA"}


def refine(segmenter: PromptSegmenter, embedding, mask: np.ndarray, margin: float) -> np.ndarray:
    """Every connected region of ``mask`` replaced by LiteMedSAM's mask for its box grown by ``margin``."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    for k in range(1, n):
        x, y, bw, bh = stats[k, :4]
        mx, my = margin * bw, margin * bh
        box = (max(0, x - mx), max(0, y - my), min(w - 1, x + bw - 1 + mx), min(h - 1, y + bh - 1 + my))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            out |= labels == k
            continue
        out |= segmenter.segment(embedding, Prompt(box=box)).mask
    return out


def measure(cases, weights: Path, segmenter: PromptSegmenter, margins: list[float]) -> list[dict]:
    analyzer = Analyzer(weights)
    rows = []
    for case in cases:
        scan = read_scan(case.image_path)
        truth = load_mask(case.mask_paths, scan.shape)
        mask = analyzer.analyze(scan).mask
        row = {"case": case.case_id, "ensemble": simulate.dice(mask, truth), "empty": not mask.any()}
        embedding = segmenter.embed(scan.gray) if mask.any() else None
        for m in margins:
            row[f"refined_{m:g}"] = simulate.dice(refine(segmenter, embedding, mask, m) if mask.any() else mask, truth)
        rows.append(row)
    return rows


def summarise(rows: list[dict], groups: dict[str, str], margins: list[float]) -> dict:
    values = {"ensemble": np.array([r["ensemble"] for r in rows])}
    for m in margins:
        values[f"refined_{m:g}"] = np.array([r[f"refined_{m:g}"] for r in rows])
        values[f"gain_{m:g}"] = values[f"refined_{m:g}"] - values["ensemble"]
    point = {k: float(v.mean()) for k, v in values.items()}
    draws = group_bootstrap(lambda idx: {k: float(v[idx].mean()) for k, v in values.items()},
                            [groups[r["case"]] for r in rows], 1000, seed=0)
    out = {k: iv.__dict__ for k, iv in _intervals(point, draws, 0.95).items()}
    out["n"], out["empty"] = len(rows), int(sum(r["empty"] for r in rows))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    ap.add_argument("--cross-site-weights", type=Path, default=REPO / "runs" / "without-busi" / "weights")
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "refine_stage")
    args = ap.parse_args(argv)
    t0 = time.time()
    split, cases = load_verified([args.data / d for d in SOURCES.values()], DEFAULT_SPLIT, progress=False)
    segmenter = PromptSegmenter()
    runs = {"in-domain, BUSI val": ("busi", WEIGHTS_DIR), "in-domain, BUS-BRA val": ("busbra", WEIGHTS_DIR)}
    if (args.cross_site_weights / "manifest.json").is_file():
        runs["cross-site: BUS-BRA-only weights, BUSI val"] = ("busi", args.cross_site_weights)
    result = {"date": str(date.today()), "margins": args.margins, "fingerprints": split.fingerprints, "runs": {}}
    for name, (source, weights) in runs.items():
        pool = [c for c in split.select(cases, "val") if c.source == source and c.label != "normal"]
        rows = measure(pool, weights, segmenter, args.margins)
        result["runs"][name] = {"weights": str(weights.relative_to(REPO) if weights.is_relative_to(REPO) else weights),
                                "summary": summarise(rows, split.groups, args.margins), "rows": rows}
        print(name, json.dumps({k: v for k, v in result["runs"][name]["summary"].items()}), flush=True)
    result["minutes"] = (time.time() - t0) / 60
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    iv = lambda d: f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"  # noqa: E731
    lines = ["# A LiteMedSAM refinement stage for the ensemble's masks (validation splits)", "",
             f"Made by `python reports/refine_stage.py` on {result['date']} ({result['minutes']:.0f} min, 2-core CPU); "
             "method: the script's docstring. Mean lesion Dice on lesion scans (95% group-bootstrap intervals); "
             "*gain* is the paired mean difference, refined minus ensemble. LiteMedSAM's pretraining may include "
             "BUSI.", "",
             "| run | lesion scans (empty masks) | ensemble | " + " | ".join(
                 f"refined, margin {m:g} | gain" for m in args.margins) + " |",
             "|---|---|---|" + "---|---|" * len(args.margins)]
    for name, r in result["runs"].items():
        s = r["summary"]
        lines.append(f"| {name} | {s['n']} ({s['empty']}) | {iv(s['ensemble'])} | " + " | ".join(
            f"{iv(s[f'refined_{m:g}'])} | {iv(s[f'gain_{m:g}'])}" for m in args.margins) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
