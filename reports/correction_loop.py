"""The annotation loop on real data: do corrected exports make the next model better, and by how much?

    python reports/correction_loop.py [--data ../shared/datasets] [--n 100] [--work out/correction_loop]

The scenario is a new site. A base U-Net is trained on BUS-BRA alone; BUSI plays the new
hospital. The base model pre-annotates ``--n`` BUSI train scans with a lesion (a seeded random
sample); a simulated annotator corrects each mask to BUSI's reference mask and saves the case
through ``models.annotation.export``, exactly as the app's *Save case* does (the model's mask is kept beside
it, with Dice(model, final)). Then, from the base weights and with the same settings:

- **control**: fine-tuned on BUS-BRA train alone (the gain from more training, no corrections);
- **corrected**: fine-tuned on BUS-BRA train plus the export folder (``models.training.train --data``).

All three are measured on the validation splits of BUSI (the new site; none of its scans was
trained on or used for selection, since early stopping watches BUS-BRA validation) and BUS-BRA
(whether the old site is forgotten), with 95% group-bootstrap intervals. Writes
``reports/correction_loop.{json,md}``. The test splits are not read.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models import weights  # noqa: E402
from models.annotation import export
from models.data import DEFAULT_DATA_DIR  # noqa: E402
from models.data.images import load_mask  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.scan import read_scan  # noqa: E402
from models.training import evaluate, train

MODEL = "unet_lite0"
BUSI, BUSBRA = "Dataset_BUSI_with_GT", "BUSBRA"


def run_train(data: list[Path], split: Path, runs: Path, epochs: int, lr: float | None = None,
              init: Path | None = None) -> Path:
    argv = ["--models", MODEL, "--data", *map(str, data), "--split", str(split), "--runs", str(runs),
            "--epochs", str(epochs), "--quiet"]
    argv += ["--lr", str(lr)] if lr else []
    argv += ["--init", str(init)] if init else []
    print("sonomark train " + " ".join(argv), flush=True)
    train.main(argv)
    return runs / MODEL / "best.pt"


def ship_to(runs: Path, folder: Path) -> Path:
    weights.ship(MODEL, runs, folder, force=True)
    return folder


def correct_cases(base_weights: Path, data: Path, split_path: Path, n: int, seed: int, out: Path) -> list[dict]:
    """Pre-annotate ``n`` BUSI train lesion scans with the base model and save the reference masks as
    the annotator's corrections; returns one row per case with Dice(model, final)."""
    split, cases = load_verified([data / BUSI], split_path, progress=False)
    pool = [c for c in split.select(cases, "train") if c.label != "normal"]
    chosen = sorted(random.Random(seed).sample(pool, n), key=lambda c: c.case_id)
    analyzer = Analyzer(base_weights)
    rows = []
    for case in chosen:
        scan = read_scan(case.image_path)
        a = analyzer.analyze(scan)
        truth = load_mask(case.mask_paths, scan.shape)
        saved = export.save_case(out, export.Annotation(
            scan, case.label, "annotator", truth, "simulated annotator (BUSI reference mask)",
            model_mask=a.mask, model_versions=a.model_versions, note="reports/correction_loop.py"))
        rows.append({"case": case.case_id, "export": saved.case_id, "dice_model_vs_final": saved.entry["dice_model_vs_final"]})
    return rows


def val_dice(weights_dir: Path, data: Path, split: Path) -> dict:
    results = evaluate.evaluate([data / BUSI, data / BUSBRA], split, weights_dir, split_name="val", progress=False)
    return {s: {"fingerprint": ev.fingerprint[:12], "n_lesion": ev.segmentation[MODEL].n_lesion,
                **{k: ev.segmentation[MODEL].scores[k].__dict__ for k in ("dice_mean", "dice_median")}}
            for s, ev in results.items()}


def report(result: dict, path: Path) -> None:
    lines = ["# The annotation loop on real data", "",
             f"Made by `python reports/correction_loop.py --n {result['n']}` on {result['date']} "
             f"({result['minutes']:.0f} min on {result['device']}). Scenario and method: the script's docstring.", "",
             f"- Base: U-Net (EfficientNet-Lite0 encoder, ImageNet) trained on BUS-BRA train only, "
             f"{result['base_epochs']} epochs.",
             f"- Corrections: {result['n']} BUSI train lesion scans pre-annotated by the base model and saved through "
             f"`models.annotation.export` with BUSI's reference mask; Dice(model mask, corrected mask): mean "
             f"{result['correction_dice_mean']:.3f}, i.e. the annotator had real work to do.",
             f"- Control and corrected: {result['tune_epochs']} fine-tuning epochs from the base at lr {result['tune_lr']}, "
             "on BUS-BRA train, and on BUS-BRA train plus the export folder.", "",
             "Mean lesion Dice (95% group-bootstrap interval), validation splits, at the scans' own resolution:", "",
             "| model | BUSI val (new site) | BUS-BRA val (old site) |", "|---|---|---|"]
    for name in ("base", "control", "corrected"):
        cells = []
        for s in ("busi", "busbra"):
            d = result["val"][name][s]["dice_mean"]
            cells.append(f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    fp = {s: result["val"]["base"][s]["fingerprint"] for s in ("busi", "busbra")}
    corrected, control = result["val"]["corrected"]["busi"]["dice_mean"], result["val"]["control"]["busi"]["dice_mean"]
    gain = corrected["value"] - control["value"]
    verdict = ("the intervals do not overlap" if corrected["low"] > control["high"] else
               "the intervals overlap, so this one run does not establish the gain; more corrections, several seeds "
               "and a paired comparison would")
    lines += ["", f"Split fingerprints: BUSI `{fp['busi']}`, BUS-BRA `{fp['busbra']}` (`splits/split.json`).", "",
              f"**Corrections minus control on BUSI validation: {gain:+.3f} Dice**; {verdict}. Per-case rows and "
              "every number are in `correction_loop.json`."]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--render", action="store_true", help="only re-write the .md from an existing .json")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "correction_loop")
    ap.add_argument("--n", type=int, default=100, help="BUSI train scans to correct")
    ap.add_argument("--base-epochs", type=int, default=3)
    ap.add_argument("--tune-epochs", type=int, default=2)
    ap.add_argument("--tune-lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "correction_loop")
    args = ap.parse_args(argv)
    if args.render:
        report(json.loads(args.out.with_suffix(".json").read_text()), args.out.with_suffix(".md"))
        return 0
    t0, w = time.time(), args.work
    base = run_train([args.data / BUSBRA], args.split, w / "base_runs", args.base_epochs)
    ship_to(w / "base_runs", w / "base_weights")
    exports = w / "exports"
    rows = correct_cases(w / "base_weights", args.data, args.split, args.n, args.seed, exports)
    run_train([args.data / BUSBRA], args.split, w / "control_runs", args.tune_epochs, args.tune_lr, base)
    run_train([args.data / BUSBRA, exports], args.split, w / "corrected_runs", args.tune_epochs, args.tune_lr, base)
    val = {"base": val_dice(w / "base_weights", args.data, args.split),
           "control": val_dice(ship_to(w / "control_runs", w / "control_weights"), args.data, args.split),
           "corrected": val_dice(ship_to(w / "corrected_runs", w / "corrected_weights"), args.data, args.split)}
    result = {"n": args.n, "seed": args.seed, "base_epochs": args.base_epochs, "tune_epochs": args.tune_epochs,
              "tune_lr": args.tune_lr, "date": time.strftime("%Y-%m-%d"), "minutes": (time.time() - t0) / 60,
              "device": train.pick_device(),
              "correction_dice_mean": sum(r["dice_model_vs_final"] for r in rows) / len(rows),
              "val": val, "corrections": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    report(result, args.out.with_suffix(".md"))
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
