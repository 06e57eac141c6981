"""Two weights folders' ensembles on the same validation cases: the difference, with a paired group bootstrap.

    python reports/paired_val.py weights runs/cand-X [--boot 2000]

Reads each folder's ``metrics_val.json`` (written by ``sonomark evaluate --weights DIR --split-name val``: the
ensemble's calibrated probabilities per case) and the committed split's labels and groups. Per source: how
many calls changed, and the candidate minus the baseline for macro-F1 (over the classes the source has),
normal recall (normal scans called normal) and lesion recall (lesion scans not called normal), each with a
95% interval from resampling whole groups, the same draws for both folders
(``models.training.metrics.paired_class_differences``). Validation only: it refuses a
file of another split or fingerprint than the committed split's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.records import CLASSES  # noqa: E402
from models.data.splits import DEFAULT_SPLIT  # noqa: E402
from models.training.metrics import paired_class_differences  # noqa: E402


def read(folder: Path, split: dict) -> dict:
    path = folder / "metrics_val.json"
    if not path.exists():
        raise SystemExit(f"{path}: not found; run `sonomark evaluate --weights {folder} --split-name val` first")
    metrics = json.loads(path.read_text())
    for source, m in metrics.items():
        if m.get("split") != "val" or m.get("fingerprint") != split["fingerprints"].get(source):
            raise SystemExit(f"{path}: {source} is not the committed split's validation data "
                             f"(split {m.get('split')!r}, fingerprint {str(m.get('fingerprint'))[:12]}); "
                             f"re-run `sonomark evaluate --weights {folder} --split-name val`")
    return metrics


def compare(base: dict, cand: dict, split: dict, n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Per source shared by both: cases, changed calls, and per score (point, low, high) of candidate - baseline."""
    cases = split["cases"]
    out = {}
    for source in sorted(set(base) & set(cand)):
        ids = sorted(base[source]["cases"])
        if ids != sorted(cand[source]["cases"]):
            raise SystemExit(f"{source}: the two metrics_val.json files hold different cases; re-run `sonomark "
                             "evaluate --weights DIR --split-name val` for both on the committed split")
        pa = np.array([base[source]["cases"][i]["probs"] for i in ids])
        pb = np.array([cand[source]["cases"][i]["probs"] for i in ids])
        diffs = paired_class_differences([cases[i]["label"] for i in ids], pa, pb, CLASSES,
                                         [cases[i]["group"] for i in ids], n_boot=n_boot, seed=seed)
        out[source] = {"cases": len(ids), "changed_calls": int((pa.argmax(1) != pb.argmax(1)).sum()),
                       "difference": {k: (iv.value, iv.low, iv.high) for k, iv in diffs.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("baseline", type=Path)
    ap.add_argument("candidate", type=Path)
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args(argv)
    split = json.loads(args.split.read_text())
    result = compare(read(args.baseline, split), read(args.candidate, split), split, args.boot)
    print(f"| source | cases | calls changed | {args.candidate} - {args.baseline}: macro-F1 | normal recall | lesion recall |")
    print("|---|---|---|---|---|---|")
    for source, r in result.items():
        cells = [f"{r['difference'][k][0]:+.3f} [{r['difference'][k][1]:+.3f}, {r['difference'][k][2]:+.3f}]"
                 if k in r["difference"] else "—" for k in ("macro_f1", "normal_recall", "lesion_recall")]
        print(f"| {source} val | {r['cases']} | {r['changed_calls']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
