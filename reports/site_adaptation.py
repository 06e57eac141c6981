"""Does a site's own corrections make the models better there? A learning curve of ``sonomark adapt``.

    python reports/site_adaptation.py [--site busi|busbra] [--n 25 50 100 200] [--seeds 0 1 2]
                                      [--arms random uncertain control]

Scenario (``--site busi``): base weights trained and calibrated on BUS-BRA only (``--base``,
EfficientNet-Lite0 and the U-Net; README "Cross-site evaluation" has the commands); BUSI plays the
new site. ``--site busbra`` is the reverse: a BUSI-only base, BUS-BRA the new site. For each N and
seed, N train scans of the new site are "corrected": their reference mask and label are saved
through ``models.annotation.export`` as the app saves a case, and ``sonomark adapt`` (replaying as
many train cases of the base site) fine-tunes and recalibrates. Arms:

- **random**: N new-site train scans drawn at random;
- **uncertain**: the N new-site train scans the base ensemble is least sure of (the review queue's
  most-uncertain-first order), the same for every seed (the seed then changes only the training);
- **control**: N base-site train scans instead (fine-tuning on as many base-site cases: the gain
  from more training alone).

Every adapted ensemble and the base are scored on the new site's *test* split (nothing is tuned on
it), paired against the base with a 95% group bootstrap. Each run is cached in ``--work`` and
skipped when re-run, so the script resumes. Writes ``reports/site_adaptation.{json,md,png}``
(``_busbra`` appended for the reverse).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.annotation import export  # noqa: E402
from models.data import DEFAULT_DATA_DIR  # noqa: E402
from models.data.images import load_mask  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.ensemble import Fusion, predict_cases  # noqa: E402
from models.inference.scan import read_scan  # noqa: E402
from models.training import adapt  # noqa: E402
from models.weights import Manifest  # noqa: E402

BUSI, BUSBRA = "Dataset_BUSI_with_GT", "BUSBRA"
SITES = {"busi": ("BUSI", BUSI), "busbra": ("BUS-BRA", BUSBRA)}  # source -> (name, dataset folder)
MEASURES = ("dice_mean", "malignant_auc", "normal_recall")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (reports name no machine's folders)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def save_corrections(cases, folder: Path) -> Path:
    """The reference masks and labels saved through the app's export code: the annotator's corrections."""
    if (folder / "manifest.jsonl").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    for case in cases:
        scan = read_scan(case.image_path)
        export.save_case(tmp, export.Annotation(scan, case.label, "annotator", load_mask(case.mask_paths, scan.shape),
                                                "simulated annotator (reference mask and label)",
                                                note="reports/site_adaptation.py"))
    tmp.rename(folder)
    return folder


def uncertainty_order(base: Path, pool, cache: Path) -> list[str]:
    """Pool case ids, most uncertain first, as the review queue orders them (the base ensemble's entropy)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    analyzer = Analyzer(base)
    scored = [(analyzer.analyze(read_scan(c.image_path)).uncertainty, c.case_id) for c in pool]
    order = [cid for _, cid in sorted(scored, key=lambda t: (-t[0], t[1]))]
    cache.write_text(json.dumps(order))
    return order


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--site", default="busi", choices=sorted(SITES), help="the new site (the base is trained without it)")
    ap.add_argument("--base", type=Path, help="base weights (default: runs/without-SITE/weights)")
    ap.add_argument("--n", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["random", "uncertain", "control"],
                    choices=["random", "uncertain", "control"])
    ap.add_argument("--steps", type=int, default=100, help="sonomark adapt --steps")
    ap.add_argument("--lr", type=float, default=3e-4, help="sonomark adapt --lr")
    ap.add_argument("--split-name", default="test", choices=("val", "test"),
                    help="the new site's split to score on: val to choose the recipe, test to report")
    ap.add_argument("--work", type=Path, help="run cache (default: out/site_adaptation[_SITE])")
    ap.add_argument("--out", type=Path, help="report path without suffix (default: reports/site_adaptation[_SITE])")
    ap.add_argument("--render", action="store_true", help="only re-write the report from the cached runs (or, without them, from the committed .json)")
    args = ap.parse_args(argv)
    stem = "site_adaptation" + ("" if args.site == "busi" else f"_{args.site}")
    args.base = args.base or REPO / "runs" / f"without-{args.site}" / "weights"
    args.work = args.work or REPO / "out" / stem
    args.out = args.out or REPO / "reports" / stem
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.render:
        run_all(args)
    if (args.work / "base.json").is_file():
        results = [json.loads(p.read_text()) for p in sorted(args.work.glob("*/result.json"))]
        base = json.loads((args.work / "base.json").read_text())
    else:  # a fresh clone has no run cache: re-render from the committed report
        saved = json.loads(args.out.with_suffix(".json").read_text())
        results, base = saved["runs"], saved["base"]
    render(results, base, args.out)
    return 0


def run_all(args) -> None:
    split, cases = load_verified([args.data / BUSI, args.data / BUSBRA], args.split, progress=False)
    other = next(s for s in SITES if s != args.site)
    site_name, base_folder = SITES[args.site][0], SITES[other][1]
    site_train = [c for c in split.select(cases, "train") if c.source == args.site]
    base_train = [c for c in split.select(cases, "train") if c.source == other]
    site_test = [c for c in split.select(cases, args.split_name) if c.source == args.site]
    base_manifest = Manifest.read(args.base)
    base_preds = predict_cases(base_manifest, site_test, split.groups, progress=False)
    base_fusion = Fusion.from_manifest(base_manifest)
    own = adapt.compare((base_preds, base_fusion), (base_preds, base_fusion), f"{site_name} {args.split_name}", n_boot=0)
    (args.work / "base.json").write_text(json.dumps({"n_cases": own.n_cases, "scores": own.before, "site": args.site,
                                                     "fingerprint": split.fingerprints[args.site][:12],
                                                     "base": _shown(args.base), "split": args.split_name,
                                                     "steps": args.steps, "lr": args.lr}, indent=1))
    order = uncertainty_order(args.base, site_train, args.work / "uncertainty_order.json") \
        if "uncertain" in args.arms else []
    by_id = {c.case_id: c for c in site_train}
    for n in args.n:
        for seed in args.seeds:
            for arm in args.arms:
                run = args.work / f"{arm}-n{n}-seed{seed}"
                if (run / "result.json").is_file():
                    continue
                chosen = {"random": lambda: random.Random(seed).sample(site_train, n),
                          "uncertain": lambda: [by_id[c] for c in order[:n]],
                          "control": lambda: random.Random(seed).sample(base_train, n)}[arm]()
                t0 = time.time()
                exports = save_corrections(chosen, run / "exports")
                report = adapt.adapt([exports], run / "weights", args.base, [args.data / base_folder], args.split,
                                     steps=args.steps, lr=args.lr, seed=seed, check_base=0, n_boot=0, runs=run / "runs",
                                     progress=False)
                manifest = Manifest.read(run / "weights")
                preds = predict_cases(manifest, site_test, split.groups, progress=False)
                c = adapt.compare((base_preds, base_fusion), (preds, Fusion.from_manifest(manifest)),
                                  f"{site_name} {args.split_name}",
                                  n_boot=1000, seed=seed)
                result = {"arm": arm, "n": n, "seed": seed, "adapt_minutes": report["minutes"], "epochs": report["epochs"],
                          "steps": report["steps"], "lr": report["lr"],
                          "minutes": round((time.time() - t0) / 60, 1), "site_train": report["site_train"],
                          "site_held_out": report["site_held_out"], "replayed": report["replayed"],
                          "test": c.to_json(), "fingerprint": split.fingerprints[args.site][:12]}
                (run / "result.json").write_text(json.dumps(result, indent=1))
                print(f"{arm} N={n} seed={seed}: " + ", ".join(
                    f"{k} {c.after[k]:.3f} ({c.difference[k].value:+.3f})" for k in MEASURES), flush=True)


def render(results: list[dict], base: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    site = base.get("site", "busi")
    site_name, base_name = SITES[site][0], next(v[0] for k, v in SITES.items() if k != site)
    measures = [k for k in MEASURES if np.isfinite(base["scores"].get(k, np.nan))]  # BUS-BRA has no normal scans
    arms = [a for a in ("random", "uncertain", "control") if any(r["arm"] == a for r in results)]
    ns = sorted({r["n"] for r in results})
    table = {}
    for arm in arms:
        for n in ns:
            rows = [r for r in results if r["arm"] == arm and r["n"] == n]
            if rows:
                table[(arm, n)] = rows
    names = {"dice_mean": "Dice", "malignant_auc": "malignant AUC", "normal_recall": "normal recall"}
    lines = [f"# Site adaptation: a learning curve ({base_name} -> {site_name})", "",
             f"Made by `python reports/site_adaptation.py --site {site}` (method in its docstring). Base: "
             f"EfficientNet-Lite0 and U-Net trained and calibrated on {base_name} only; new site: {site_name}. "
             f"Scored on the {site_name} "
             f"**{base['split']}** split ({base['n_cases']} scans, fingerprint `{base['fingerprint']}`)"
             + (", never used for any choice." if base["split"] == "test" else ", used to choose the recipe."), "",
             f"Base on {site_name} {base['split']}: "
             + ", ".join(f"{names[k]} {base['scores'][k]:.3f}" for k in measures) + ".", "",
             "Each cell: mean over seeds of the adapted ensemble's value, then the mean paired change against "
             "the base, and the seeds whose 95% group-bootstrap interval of that change lies above zero. "
             f"Recipe: `sonomark adapt --steps {base['steps']} --lr {base['lr']}` (chosen on BUSI validation in the "
             "BUS-BRA -> BUSI direction, `reports/site_adaptation_recipes.md`). Minutes: one `sonomark adapt` run (fine-tuning 2 models, "
             "refitting, comparing) on the 2-core CPU.", "",
             "| arm | N | seeds | " + " | ".join(names[k] for k in measures) + " | minutes |",
             "|---|---|---|" + "---|" * len(measures) + "---|"]
    for (arm, n), rows in table.items():
        cells = []
        for k in measures:
            after = np.mean([r["test"]["after"][k] for r in rows])
            diff = np.mean([r["test"]["difference"][k]["value"] for r in rows])
            above = sum(r["test"]["difference"][k]["low"] > 0 for r in rows)
            cells.append(f"{after:.3f} ({diff:+.3f}; {above}/{len(rows)} above 0)")
        minutes = np.mean([r["adapt_minutes"] for r in rows])
        lines.append(f"| {arm} | {n} | {len(rows)} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    lines += ["", f"Per-run numbers with intervals: `{out.name}.json`. Plot: `{out.name}.png`."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"base": base, "runs": results}, indent=1) + "\n")
    fig, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures), 3.4), squeeze=False)
    axes = axes[0]
    for ax, k in zip(axes, measures):
        ax.axhline(base["scores"][k], color="k", ls="--", lw=1, label=f"base ({base_name} only)")
        for arm in arms:
            xs = [n for n in ns if (arm, n) in table]
            for r in results:
                if r["arm"] == arm:
                    ax.plot(r["n"], r["test"]["after"][k], ".", alpha=0.35, color=f"C{arms.index(arm)}")
            ax.plot(xs, [np.mean([r["test"]["after"][k] for r in table[(arm, n)]]) for n in xs], "-o",
                    color=f"C{arms.index(arm)}", label=arm)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("corrected cases N")
        ax.set_title(f"{site_name} {base['split']}: {names[k]}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
