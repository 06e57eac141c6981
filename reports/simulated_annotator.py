"""Simulated annotator: how much work a lesion mask takes with each tool, on BUSI and BUS-BRA lesion scans.

    python reports/simulated_annotator.py [--split test] [--data ../shared/datasets] [--limit N]

Per lesion scan of the split (normal scans have no mask to draw), Dice against the reference mask of:

(a) the shipped ensemble alone (no interaction);
(b) one box: the reference's bounding box, each side jittered by up to 10% of the box's size (seeded), given to
    LiteMedSAM (``models.annotation.prompts``);
(c) GrabCut from the same box (OpenCV);
(d) that box, then corrective clicks at the centre of the largest error region, up to 10
    (``models.annotation.simulate``).

NoC@85 / NoC@90: interactions (the box counts as one) until Dice reaches 0.85 / 0.90; a scan that never
reaches it counts as 11 and is reported as not reached. Means carry 95% group-bootstrap intervals (groups of
``splits/split.json``). LiteMedSAM's training collection may include public breast-ultrasound sets (BUSI among
them), so its numbers may be optimistic on both sources; the model card says so.

``--split val --compare-clicks`` chose how corrective clicks work: as SAM point prompts (LiteMedSAM's decoder,
trained on boxes, got worse with every click) or as edits of the box's logits (``prompts.apply_clicks``, shipped);
the test split only reports. Writes ``reports/simulated_annotator[_SPLIT].{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.annotation import simulate  # noqa: E402
from models.annotation.prompts import PromptSegmenter  # noqa: E402
from models.data import DEFAULT_DATA_DIR  # noqa: E402
from models.data.images import load_mask  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.scan import read_scan  # noqa: E402
from models.training.metrics import _intervals, group_bootstrap  # noqa: E402

SOURCES = {"busi": "Dataset_BUSI_with_GT", "busbra": "BUSBRA"}
NAMES = {"busi": "BUSI", "busbra": "BUS-BRA"}
THRESHOLDS = (0.85, 0.90)


def run_case(case, analyzer: Analyzer, segmenter: PromptSegmenter, seed: int, compare_clicks: bool) -> dict:
    scan = read_scan(case.image_path)
    truth = load_mask(case.mask_paths, scan.shape)
    box = simulate.jittered_box(truth, np.random.default_rng(seed))
    session = simulate.annotate(segmenter, scan.gray, truth, box)
    row = {"case": case.case_id, "source": case.source, "box": [round(v, 1) for v in box],
           "ensemble": simulate.dice(analyzer.analyze(scan).mask, truth),
           "grabcut": simulate.dice(simulate.grabcut_box(scan.gray, box), truth),
           "clicks": list(session.dice), "click_points": [[c.x, c.y, int(c.positive)] for c in session.clicks]}
    if compare_clicks:
        row["clicks_sam_points"] = list(simulate.annotate(segmenter, scan.gray, truth, box, clicks="sam-points").dice)
    return row


def summarise(rows: list[dict], groups: dict[str, str], n_boot: int = 1000) -> dict:
    curves = {k: np.array([r[k] for r in rows]) for k in ("clicks", "clicks_sam_points") if k in rows[0]}
    values = {"ensemble": np.array([r["ensemble"] for r in rows]), "box": curves["clicks"][:, 0],
              "grabcut": np.array([r["grabcut"] for r in rows])}
    for k, c in curves.items():
        values[f"{k}_3"], values[f"{k}_10"] = c[:, 2], c[:, -1]  # box + 2 clicks; box + 10 clicks
        for t in THRESHOLDS:
            sessions = [simulate.Session(tuple(d), ()) for d in c]
            values[f"{k}_noc{round(100 * t)}"] = np.array([s.noc(t) for s in sessions], float)
            values[f"{k}_reached{round(100 * t)}"] = np.array([s.reached(t) for s in sessions], float)
    for k in ("ensemble", "grabcut"):
        for t in THRESHOLDS:
            values[f"{k}_reached{round(100 * t)}"] = (values[k] >= t).astype(float)
    point = {k: float(v.mean()) for k, v in values.items()}
    draws = group_bootstrap(lambda idx: {k: float(v[idx].mean()) for k, v in values.items()},
                            [groups[r["case"]] for r in rows], n_boot, seed=0)
    out = {k: iv.__dict__ for k, iv in _intervals(point, draws, 0.95).items()}
    out["n"] = len(rows)
    out["curve"] = {k: c.mean(0).round(4).tolist() for k, c in curves.items()}
    out["median_box"] = float(np.median(values["box"]))
    return out


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(summary), figsize=(5.2 * len(summary), 4), sharey=True)
    for ax, (source, s) in zip(np.atleast_1d(axes), summary.items()):
        x = np.arange(1, len(s["curve"]["clicks"]) + 1)
        ax.plot(x, s["curve"]["clicks"], "o-", label="LiteMedSAM box, then clicks editing its logits")
        if "clicks_sam_points" in s["curve"]:
            ax.plot(x, s["curve"]["clicks_sam_points"], "s--", label="clicks as SAM point prompts (rejected)")
        ax.axhline(s["grabcut"]["value"], color="tab:red", ls=":", label="GrabCut from the same box (local)")
        ax.axhline(s["ensemble"]["value"], color="tab:gray", ls="-.", label="ensemble alone (no interaction)")
        for t in THRESHOLDS:
            ax.axhline(t, color="k", lw=0.5, alpha=0.4)
        ax.set_title(f"{NAMES[source]} ({s['n']} lesion scans)")
        ax.set_xlabel("interactions (1 = the box)")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean Dice")
    np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict, path: Path) -> None:
    def iv(s, k, pct=False):
        v = s[k]
        f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.3f}")
        return f"{f(v['value'])} [{f(v['low'])}, {f(v['high'])}]"
    lines = [f"# Simulated annotator ({result['split']} split)", "",
             f"Made by `{result['command']}` on {result['date']} ({result['minutes']:.0f} min, 2-core CPU). "
             "Protocol: the script's docstring. Split fingerprints: "
             + ", ".join(f"{NAMES[s]} `{fp[:12]}`" for s, fp in result["fingerprints"].items()) + ".", "",
             "LiteMedSAM's pretraining collection may include public breast-ultrasound sets (BUSI among them): "
             "its numbers may be optimistic on both sources.", "",
             "Mean Dice against the reference mask (95% group-bootstrap interval):", "",
             "| method | " + " | ".join(NAMES[s] for s in result["summary"]) + " |",
             "|---|" + "---|" * len(result["summary"])]
    rows = [("(a) ensemble alone", "ensemble"), ("(c) GrabCut from a box", "grabcut"),
            ("(b) LiteMedSAM, one box", "box"), ("(d) box + 2 corrective clicks", "clicks_3"),
            ("(d) box + 10 corrective clicks", "clicks_10")]
    if "clicks_sam_points_3" in next(iter(result["summary"].values())):
        rows += [("box + 2 clicks as SAM point prompts", "clicks_sam_points_3"),
                 ("box + 10 clicks as SAM point prompts", "clicks_sam_points_10")]
    for name, k in rows:
        lines.append(f"| {name} | " + " | ".join(iv(s, k) for s in result["summary"].values()) + " |")
    lines += ["", "Interactions to reach Dice 0.85 and 0.90 (box = 1; not reached within 11 counts as 11), and the "
              "share of scans that reach it:", "",
              "| method | " + " | ".join(f"{NAMES[s]} NoC@85 | NoC@90 | reached 0.90" for s in result["summary"]) + " |",
              "|---|" + "---|---|---|" * len(result["summary"])]
    for name, k in [("(d) box + corrective clicks", "clicks")] + (
            [("clicks as SAM point prompts (rejected)", "clicks_sam_points")]
            if "clicks_sam_points_noc90" in next(iter(result["summary"].values())) else []):
        lines.append(f"| {name} | " + " | ".join(f"{iv(s, k + '_noc85')} | {iv(s, k + '_noc90')} | "
                                                 f"{iv(s, k + '_reached90', True)}"
                                                 for s in result["summary"].values()) + " |")
    for name, k in (("(a) ensemble alone", "ensemble"), ("(c) GrabCut", "grabcut")):
        lines.append(f"| {name} (reaches 0.90, no clicks) | " + " | ".join(
            f"— | — | {iv(s, k + '_reached90', True)}" for s in result["summary"].values()) + " |")
    lines += ["", f"![Dice vs interactions]({path.stem}.png)", "",
              f"Per-scan boxes, clicks and Dice: `{path.stem}.json`."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--limit", type=int, default=None, help="at most this many scans per source (seeded sample)")
    ap.add_argument("--compare-clicks", action="store_true", help="also run clicks as SAM point prompts")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--render", action="store_true", help="only re-write the .md and .png from the .json")
    args = ap.parse_args(argv)
    out = args.out or REPO / "reports" / ("simulated_annotator" + ("" if args.split == "test" else f"_{args.split}"))
    if args.render:
        result = json.loads(out.with_suffix(".json").read_text())
    else:
        t0 = time.time()
        split, cases = load_verified([args.data / d for d in SOURCES.values()], DEFAULT_SPLIT,
                                     progress=False)
        analyzer, segmenter = Analyzer(), PromptSegmenter()
        rows, summary = [], {}
        for source in SOURCES:
            pool = [c for c in split.select(cases, args.split) if c.source == source and c.label != "normal"]
            if args.limit and len(pool) > args.limit:
                pool = sorted(np.random.default_rng(0).choice(pool, args.limit, replace=False).tolist(),
                              key=lambda c: c.case_id)
            src_rows = []
            for i, case in enumerate(pool):
                src_rows.append(run_case(case, analyzer, segmenter, seed=i, compare_clicks=args.compare_clicks))
                if (i + 1) % 20 == 0:
                    print(f"{source}: {i + 1}/{len(pool)} ({time.time() - t0:.0f} s)", flush=True)
            summary[source] = summarise(src_rows, split.groups)
            rows += src_rows
        command = "python reports/simulated_annotator.py" + (f" --split {args.split}" if args.split != "test" else "") \
            + (f" --limit {args.limit}" if args.limit else "") + (" --compare-clicks" if args.compare_clicks else "")
        result = {"split": args.split, "command": command, "date": str(date.today()),
                  "minutes": (time.time() - t0) / 60, "fingerprints": split.fingerprints,
                  "summary": summary, "rows": rows}
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    report(result, out)
    plot(result["summary"], out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
