"""What re-estimating batch-norm statistics on a site's unlabelled scans (``sonomark adapt-scans``) buys across
sites, and what it costs at home. Writes ``reports/adapt_scans.md`` and ``.json``.

    python reports/adapt_scans.py            # about 60 minutes on the 2-core CPU

- **Across sites.** A one-source design (members trained on one source alone, shipped and calibrated on its
  validation split) is adapted on ``N`` scans drawn from the *other* source's train split; their labels and
  masks are never read. It is scored on that source's validation split, which chooses the blend, and, for
  the base and the chosen blend only, on its test split, which only reports.
  BUSI -> BUS-BRA: Lite0, VGG19 and the Lite0 U-Net trained on BUSI; BUS-BRA -> BUSI: Lite0, ResNet-18 and the
  Lite0 U-Net trained on BUS-BRA (the one-source runs of ``reports/cross_site.md`` still on this machine).
- **At home.** The shipped weights adapted on ``N`` scans of each source's train split, scored on that
  source's validation split: a site whose scanner the models already know should lose nothing.

Differences are paired (the same cases, adapted minus base) with 95% group-bootstrap intervals
(``models.training.adapt.compare``). The script fails if ``models/training/adapt_scans.py`` ships another
default blend than the one chosen here.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models.inference.ensemble import Fusion, predict_cases  # noqa: E402
from models.training import calibrate as calibration  # noqa: E402
from models.training.adapt import compare  # noqa: E402
from models.training.adapt_scans import DEFAULT_BLEND, adapt_scans  # noqa: E402
from models.training.evaluate import evaluate_dataset  # noqa: E402
from models.weights import WEIGHTS_DIR, Manifest, ship  # noqa: E402
from models.zoo import get_spec  # noqa: E402

WORK = REPO / "runs" / "adapt-scans"
BLENDS = (0.5, 1.0)
N_SCANS = (200, 50)  # the first for every blend; the second for the chosen blend only
N_BOOT = 1000
SEED = 0
SOURCES = {"busi": "Dataset_BUSI_with_GT", "busbra": "BUSBRA"}
NAMES = {"busi": "BUSI", "busbra": "BUS-BRA"}
DIRECTIONS = {  # left-out source -> (trained on, {member: run folder})
    "busbra": ("busi", {"efficientnet_lite0": "runs/shape-without-busbra", "vgg19": "runs/shape-without-busbra",
                        "unet_lite0": "runs/shape-without-busbra"}),
    "busi": ("busbra", {"efficientnet_lite0": "runs/shape-without-busi", "resnet18": "runs/rn-without-busi",
                        "unet_lite0": "runs/shape-without-busi"}),
}


def one_source_design(trained_on: str, members: dict[str, str], split, cases) -> Path:
    """The members shipped into one folder and calibrated on their own source's validation split."""
    folder = WORK / f"trained-on-{trained_on}"
    manifest = Manifest.read(folder)
    if manifest.ensemble.get("fitted") and set(manifest.shipped()) == set(members):
        return folder
    for name, runs in members.items():
        ship(name, REPO / runs, folder, force=True)
    manifest = Manifest.read(folder)
    val = [c for c in split.select(cases, "val") if c.source == trained_on]
    calibration.fit_int8_ranges(manifest, val, split.groups, progress=False)
    calibration.calibrate(manifest, predict_cases(manifest, val, split.groups, progress=False), split.fingerprints)
    return folder


def sample_scans(cases, source: str, split, n: int) -> list[Path]:
    """``n`` scans of ``source``'s train split (labels unread), drawn with a fixed seed."""
    train = sorted(c.image_path for c in split.select(cases, "train") if c.source == source)
    pick = np.random.default_rng(SEED).choice(len(train), size=min(n, len(train)), replace=False)
    return [train[k] for k in sorted(pick)]


def adapted(scans: list[Path], folder: Path, base: Path, blend: float, models: list[str] | None = None) -> Path:
    """``adapt_scans`` into ``folder``, unless a finished run there used the same base, scans and blend."""
    done = folder / "adapt_scans.json"
    if done.is_file():
        r = json.loads(done.read_text())
        if (r["base"]["folder"] == str(base.resolve()) and r["blend"] == blend and r["scans"] == len(scans)
                and sorted(r["layers"]) == sorted(models or Manifest.read(base).shipped())):
            return folder
    adapt_scans(scans, folder, base, blend, models, progress=False)
    return folder


def scored(folder: Path, cases, split, split_name: str) -> dict:
    manifest = Manifest.read(folder)
    preds = predict_cases(manifest, cases, split.groups, progress=False)
    fusion = Fusion.from_manifest(manifest)
    ev = evaluate_dataset(cases, preds, fusion, split_name, split.fingerprints[cases[0].source], n_boot=N_BOOT)
    return {"preds": preds, "fusion": fusion, "ev": ev}


def figures(ev) -> dict[str, str]:
    c, s = ev.classification.get("ensemble"), ev.segmentation.get("ensemble")
    out = {}
    if c:
        sc = c.scores
        out |= {"macro-F1": str(sc["macro_f1"]), "malignant AUC": str(sc["malignant_auc"]),
                "lesion recall": f"{sc['lesion_recall'].value:.3f}", "ECE": f"{sc['ece'].value:.3f}"}
        if np.isfinite(sc["normal_recall"].value):
            out["normal recall"] = f"{sc['normal_recall'].value:.3f}"
    if s:
        sc = s.scores
        out |= {"Dice": str(sc["dice_mean"]), "empty masks": f"{sc['empty_rate'].value:.1%}"}
        if "fp_image_rate" in sc:
            out["false lesions"] = f"{sc['fp_image_rate'].value:.1%}"
    if ev.review:
        r = ev.review
        out["flagged; error flagged / unflagged"] = (f"{r['flagged_share'].value:.0%}; {r['error_flagged'].value:.3f} / "
                                                     f"{r['error_unflagged'].value:.3f}")
    return out


def table(rows: list[tuple[str, dict[str, str]]]) -> list[str]:
    keys = list(dict.fromkeys(k for _, r in rows for k in r))
    lines = ["| " + " | ".join(["weights", *keys]) + " |", "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + " | ".join([label, *(r.get(k, "—") for k in keys)]) + " |" for label, r in rows]
    return lines


def differences(before: dict, after: dict, label: str) -> dict:
    c = compare((before["preds"], before["fusion"]), (after["preds"], after["fusion"]), label, N_BOOT, SEED)
    return {k: v.__dict__ for k, v in c.difference.items() if np.isfinite(v.value)}


def diff_text(d: dict) -> str:
    return "; ".join(f"{k} {v['value']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]" for k, v in d.items())


def choose(results: dict) -> float:
    """The blend with the best mean over both directions of the validation macro-F1, malignant AUC and Dice."""
    def score(blend: float) -> float:
        vals = []
        for left_out in DIRECTIONS:
            ev = results[left_out][f"blend {blend}, {N_SCANS[0]} scans"]["val"]["ev"]
            vals += [ev.classification["ensemble"].scores["macro_f1"].value,
                     ev.classification["ensemble"].scores["malignant_auc"].value,
                     ev.segmentation["ensemble"].scores["dice_mean"].value]
        return float(np.mean(vals))
    return max(BLENDS, key=score)


def main() -> int:
    t0 = time.time()
    WORK.mkdir(parents=True, exist_ok=True)
    d = DEFAULT_DATA_DIR
    split, cases = load_verified([d / SOURCES["busi"], d / SOURCES["busbra"]], DEFAULT_SPLIT, progress=False)
    of = lambda source, name: [c for c in split.select(cases, name) if c.source == source]  # noqa: E731
    md = ["# Adapting to a scanner from its scans alone (batch-norm statistics)", "",
          f"`python reports/adapt_scans.py`; split fingerprints BUSI `{split.fingerprints['busi'][:12]}`, BUS-BRA "
          f"`{split.fingerprints['busbra'][:12]}`. Scans for adapting are drawn (seed {SEED}) from the site's "
          "*train* split, their labels and masks unread; the site's validation split chooses the blend, its test "
          "split only reports. 95% group-bootstrap intervals (1000 draws); differences are paired, adapted minus "
          "base, on the same cases.", ""]
    out: dict = {"directions": {}, "home": {}}
    results: dict = {}
    for left_out, (trained_on, members) in DIRECTIONS.items():
        base = one_source_design(trained_on, members, split, cases)
        print(f"{NAMES[trained_on]} -> {NAMES[left_out]}: base {base}", flush=True)
        res = {"base": {"val": scored(base, of(left_out, "val"), split, "val")}}
        print(f"  base: {figures(res['base']['val']['ev'])}", flush=True)
        for blend in BLENDS:
            folder = WORK / f"{trained_on}-to-{left_out}-b{blend}-n{N_SCANS[0]}"
            adapted(sample_scans(cases, left_out, split, N_SCANS[0]), folder, base, blend)
            res[f"blend {blend}, {N_SCANS[0]} scans"] = {"val": scored(folder, of(left_out, "val"), split, "val"),
                                                         "folder": folder}
            print(f"  blend {blend}: {figures(res[f'blend {blend}, {N_SCANS[0]} scans']['val']['ev'])}", flush=True)
        results[left_out] = res
    chosen = choose(results)
    print(f"chosen blend {chosen}", flush=True)
    for left_out, (trained_on, members) in DIRECTIONS.items():
        res, base = results[left_out], WORK / f"trained-on-{trained_on}"
        for n in N_SCANS[1:]:
            folder = WORK / f"{trained_on}-to-{left_out}-b{chosen}-n{n}"
            adapted(sample_scans(cases, left_out, split, n), folder, base, chosen)
            res[f"blend {chosen}, {n} scans"] = {"val": scored(folder, of(left_out, "val"), split, "val"),
                                                 "folder": folder}
        segmenters = [n for n in members if get_spec(n).task == "segment"]
        folder = WORK / f"{trained_on}-to-{left_out}-b{chosen}-n{N_SCANS[0]}-segmenters"
        adapted(sample_scans(cases, left_out, split, N_SCANS[0]), folder, base, chosen, segmenters)
        res[f"blend {chosen}, {N_SCANS[0]} scans, segmenters only"] = {
            "val": scored(folder, of(left_out, "val"), split, "val"), "folder": folder}
        key = f"blend {chosen}, {N_SCANS[0]} scans"
        res["base"]["test"] = scored(base, of(left_out, "test"), split, "test")
        res[key]["test"] = scored(res[key]["folder"], of(left_out, "test"), split, "test")
        direction = f"{NAMES[trained_on]} -> {NAMES[left_out]}"
        md += [f"## Across sites: {direction} ({', '.join(members)}, trained on {NAMES[trained_on]} alone)", "",
               f"{NAMES[left_out]} validation split ({len(of(left_out, 'val'))} scans):", "",
               *table([(k, figures(v["val"]["ev"])) for k, v in res.items()]), ""]
        diffs = {k: differences(res["base"]["val"], v["val"], k) for k, v in res.items() if k != "base"}
        md += [f"- {k}, paired against the base: {diff_text(v)}" for k, v in diffs.items()]
        test_diff = differences(res["base"]["test"], res[key]["test"], key)
        md += ["", f"{NAMES[left_out]} test split ({len(of(left_out, 'test'))} scans), read once, for the base and "
               f"the chosen blend ({chosen}):", "",
               *table([(k, figures(res[k]["test"]["ev"])) for k in ("base", key)]), "",
               f"- paired: {diff_text(test_diff)}", ""]
        out["directions"][direction] = {
            "val": {k: figures(v["val"]["ev"]) for k, v in res.items()}, "val_differences": diffs,
            "test": {k: figures(res[k]["test"]["ev"]) for k in ("base", key)}, "test_difference": test_diff}
    md += ["## At home: the shipped weights adapted to a scanner they know", "",
           f"The shipped ensemble adapted (blend {chosen}, {N_SCANS[0]} scans of the source's train split), scored on "
           "that source's validation split.", ""]
    for source in SOURCES:
        folder = WORK / f"shipped-to-{source}-b{chosen}-n{N_SCANS[0]}"
        adapted(sample_scans(cases, source, split, N_SCANS[0]), folder, WEIGHTS_DIR, chosen)
        before, after = (scored(f, of(source, "val"), split, "val") for f in (WEIGHTS_DIR, folder))
        d_home = differences(before, after, "home")
        md += [f"{NAMES[source]} validation split ({len(of(source, 'val'))} scans):", "",
               *table([("shipped", figures(before["ev"])), ("adapted", figures(after["ev"]))]), "",
               f"- paired: {diff_text(d_home)}", ""]
        out["home"][source] = {"shipped": figures(before["ev"]), "adapted": figures(after["ev"]), "difference": d_home}
        print(f"home {source}: {diff_text(d_home)}", flush=True)
        if source == "busi":  # a site whose scans are mostly normal (external set 2 is): do the statistics mislead?
            train = [c for c in split.select(cases, "train") if c.source == source]
            normal = sorted(c.image_path for c in train if c.label == "normal")
            lesion = sorted(c.image_path for c in train if c.label != "normal")
            pick = np.random.default_rng(SEED).choice(len(lesion), size=len(normal) // 4, replace=False)
            mix = normal + [lesion[k] for k in sorted(pick)]
            folder = WORK / f"shipped-to-{source}-b{chosen}-mostly-normal"
            skewed = scored(adapted(mix, folder, WEIGHTS_DIR, chosen), of(source, "val"), split, "val")
            d_mix = differences(before, skewed, "mostly normal")
            md += [f"Adapted instead on a mostly normal sample ({len(normal)} normal and {len(mix) - len(normal)} "
                   f"lesion scans of {NAMES[source]}'s train split, {len(normal) / len(mix):.0%} normal), as at a "
                   "screening site:", "", *table([("shipped", figures(before["ev"])),
                                                   ("adapted, mostly normal", figures(skewed["ev"]))]), "",
                   f"- paired: {diff_text(d_mix)}", ""]
            out["home"]["busi, mostly normal"] = {"adapted": figures(skewed["ev"]), "difference": d_mix}
            print(f"home {source}, mostly normal: {diff_text(d_mix)}", flush=True)
    out |= {"chosen_blend": chosen, "minutes": round((time.time() - t0) / 60, 1),
            "fingerprints": {k: v for k, v in split.fingerprints.items()}}
    md += [f"Chosen blend: **{chosen}** (best mean over both directions of validation macro-F1, malignant AUC and "
           f"Dice). {out['minutes']} minutes on this machine's CPU.", ""]
    (REPO / "reports" / "adapt_scans.md").write_text("\n".join(md))
    (REPO / "reports" / "adapt_scans.json").write_text(json.dumps(out, indent=1) + "\n")
    if chosen != DEFAULT_BLEND:
        print(f"models/training/adapt_scans.py ships DEFAULT_BLEND = {DEFAULT_BLEND}; this run chose {chosen}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
