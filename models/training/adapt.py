"""Site adaptation: ``sonomark adapt EXPORTS... --out SITE_WEIGHTS/``.

A clinic's corrected cases (annotation exports) fine-tune the ensemble for its own scanner:

1. The exported cases are grouped (near-duplicate scans merged) and a stratified share of the
   groups (``--held-out``, 30%) is kept out of training.
2. The ensemble's members with a say are fine-tuned from the base weights on the other cases plus
   as many base training cases (``--replay``), so that the base sites are not forgotten. The
   schedule is fixed (``--steps``) and the last epoch is kept: the held-out cases do not pick an epoch.
3. A complete weights folder is written to ``--out`` (never the base folder): the base files
   with the adapted members replaced, temperatures, per-class logit offsets (the site's class mix:
   normal scans a base never saw), ensemble weights and mask threshold refitted on the held-out
   cases, and a model card naming the base weights and the exports by hash.
4. Base and adapted ensembles are compared on the held-out cases (paired group bootstrap of the
   per-case Dice differences, and of the AUC and normal-recall differences), and on a sample of
   the base sites' validation cases (has anything been forgotten?).

Load the result with ``--weights SITE_WEIGHTS`` (``sonomark app``, ``predict``, ``evaluate``) or
``SONOMARK_WEIGHTS=SITE_WEIGHTS``. Re-running the same command resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.data.masks import dice_iou
from models.data.records import CLASSES, Case
from models.data.sources import DEFAULT_DATA_DIR, load_cases
from models.data.grouping import assign_groups, duplicate_pairs
from models.data.splits import DEFAULT_SPLIT, EXPORT_SOURCES, load_verified
from models.data.survey import survey
from models.inference.ensemble import CasePredictions, Fusion, predict_cases
from models.preprocess import decode_for
from models.training import calibrate as calibration
from models.training.metrics import Interval, _intervals, group_bootstrap
from models.training.train import DEFAULT_RUNS, RunConfig, pick_device, train_model
from models.weights import WEIGHTS_DIR, Manifest, sha256_file, ship
from models.zoo import get_spec

MALIGNANT, NORMAL = CLASSES.index("malignant"), CLASSES.index("normal")


@dataclass(frozen=True)
class SiteSplit:
    """The site's exported cases: those trained on, and the held-out share (whole groups)."""

    train: tuple[Case, ...]
    held_out: tuple[Case, ...]
    groups: dict[str, str]  # case id -> group id (near-duplicate scans share one)


def split_site(cases: Sequence[Case], groups: dict[str, str], held_out: float, seed: int) -> SiteSplit:
    """Keep about ``held_out`` of the cases out of training, whole groups at a time, stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < held_out < 1:
        raise ValueError(f"--held-out {held_out}: give a share between 0 and 1 (e.g. 0.3)")
    n_groups = len({groups[c.case_id] for c in cases})
    folds = max(2, round(1 / held_out))
    if n_groups < 2 * folds:
        raise ValueError(f"{len(cases)} exported cases in {n_groups} groups: too few to keep {held_out:.0%} of "
                         f"them out for calibration; export at least {2 * folds} distinct scans")
    y = [c.label for c in cases]
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    train_idx, held_idx = next(cv.split(np.zeros(len(cases)), y, [groups[c.case_id] for c in cases]))
    return SiteSplit(tuple(cases[k] for k in sorted(train_idx)), tuple(cases[k] for k in sorted(held_idx)), groups)


def read_site(exports: Sequence[Path], held_out: float, seed: int, progress: bool) -> SiteSplit:
    cases = load_cases(exports)
    if not cases:
        raise FileNotFoundError(f"no exported cases in {', '.join(map(str, exports))}; save cases from the app first")
    foreign = sorted({c.source for c in cases} - set(EXPORT_SOURCES))
    if foreign:
        raise ValueError(f"{', '.join(map(str, exports))}: {', '.join(foreign)} data is not an annotation export; "
                         "give the base datasets with --data and the site's exports as EXPORTS")
    facts = survey(cases, progress=progress)
    return split_site(cases, assign_groups(cases, duplicate_pairs(facts)), held_out, seed)


def exports_identity(exports: Sequence[Path]) -> list[dict]:
    """Each export folder by the checksum of its manifest (every saved revision is listed there)."""
    from models.data.sonomark import MANIFEST
    from models.data.sources import find_dataset_roots

    roots = [r for e in exports for r in find_dataset_roots(Path(e))]
    return [{"folder": str(r.resolve()), "manifest_sha256": sha256_file(r / MANIFEST)} for r in roots]


def replay_cases(data: Sequence[Path], split_path: Path, n: int, seed: int, progress: bool) -> tuple[list[Case], list[Case], dict]:
    """``n`` base training cases (a seeded sample) and the base validation cases, with the split's groups."""
    split, cases = load_verified(data, split_path, progress=progress)
    base = [c for c in cases if c.source not in EXPORT_SOURCES]
    train = split.select(base, "train")
    rng = random.Random(seed)
    return rng.sample(train, min(n, len(train))), split.select(base, "val"), split


# --- before / after ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Base and adapted ensembles on the same cases: point values and paired differences (after - before)."""

    cases: str
    n_cases: int
    n_lesion: int
    before: dict[str, float]
    after: dict[str, float]
    difference: dict[str, Interval]

    def to_json(self) -> dict:
        return {**asdict(self), "difference": {k: v.__dict__ for k, v in self.difference.items()}}


def _case_scores(preds: CasePredictions, fusion: Fusion) -> tuple[np.ndarray, np.ndarray]:
    """(ensemble class probabilities (N, 3), per-case Dice of the fused mask, NaN on normal scans)."""
    probs = (fusion.classify(preds.logits, preds.grade_logits)[1] if preds.logits
             else np.full((len(preds.labels), len(CLASSES)), np.nan))
    dice = np.full(len(preds.labels), np.nan)
    if preds.seg_probs:
        fused = fusion.segment(preds.seg_probs)
        for k, truth in enumerate(preds.masks):
            if truth.any():
                dice[k] = dice_iou(fused[k] > fusion.threshold, truth)[0]
    return probs, dice


def _scores(y: np.ndarray, probs: np.ndarray, dice: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    out = {"dice_mean": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")}
    if np.isfinite(probs).all():
        said = probs.argmax(1)
        is_mal = y == MALIGNANT
        out["malignant_auc"] = (float(roc_auc_score(is_mal, probs[:, MALIGNANT])) if 0 < is_mal.sum() < len(y)
                                else float("nan"))
        normal, lesion = y == NORMAL, y != NORMAL
        out["normal_recall"] = float((said[normal] == NORMAL).mean()) if normal.any() else float("nan")
        out["lesion_recall"] = float((said[lesion] != NORMAL).mean()) if lesion.any() else float("nan")
        out["accuracy"] = float((said == y).mean())
    return out


def compare(before: tuple[CasePredictions, Fusion], after: tuple[CasePredictions, Fusion], cases: str,
            n_boot: int = 1000, seed: int = 0) -> Comparison:
    """Paired group bootstrap: every resample scores both ensembles on the same cases."""
    y = before[0].labels
    (pb, db), (pa, da) = _case_scores(*before), _case_scores(*after)
    point_b, point_a = _scores(y, pb, db), _scores(y, pa, da)

    def diff(idx: np.ndarray) -> dict[str, float]:
        b, a = _scores(y[idx], pb[idx], db[idx]), _scores(y[idx], pa[idx], da[idx])
        return {k: a[k] - b[k] for k in a}

    draws = group_bootstrap(diff, before[0].groups, n_boot, seed) if n_boot else {}
    point = {k: point_a[k] - point_b[k] for k in point_a}
    return Comparison(cases, len(y), int(np.isfinite(db).sum()), point_b, point_a, _intervals(point, draws, 0.95))


# --- the command ----------------------------------------------------------------------------------------------


def members_to_adapt(manifest: Manifest, names: Sequence[str] | None) -> list[str]:
    """``names``, or the ensemble's members with a say (the others would not change its output)."""
    shipped = manifest.shipped()
    if names:
        missing = sorted(set(names) - set(shipped))
        if missing:
            raise ValueError(f"{', '.join(missing)}: not in {manifest.folder / 'manifest.json'}; choose from "
                             f"{', '.join(shipped)}")
        return list(names)
    fusion = Fusion.from_manifest(manifest)
    classifiers = [n for n in shipped if get_spec(n).task == "classify"]
    segmenters = [n for n in shipped if get_spec(n).task == "segment"]
    return fusion.voters(classifiers) + fusion.seg_voters(segmenters)


def copy_weights(base: Manifest, out: Path) -> Manifest:
    """The base folder's manifest and weights files in ``out`` (checked against their checksums)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in base.shipped():
        src = base.verify(name)
        dest = out / src.name
        if not dest.is_file() or sha256_file(dest) != base.models[name]["sha256"]:
            shutil.copy2(src, dest)
    shutil.copy2(base.folder / "manifest.json", out / "manifest.json")
    return Manifest.read(out)


def adapt(exports: Sequence[Path], out: Path, base_dir: Path = WEIGHTS_DIR, data: Sequence[Path] = (DEFAULT_DATA_DIR,),
          split_path: Path = DEFAULT_SPLIT, models: Sequence[str] | None = None, steps: int = 100, lr: float = 3e-4,
          batch_size: int = 16, held_out: float = 0.3, replay: float = 1.0, check_base: int = 100, seed: int = 0,
          device: str = "auto", runs: Path | None = None, n_boot: int = 1000, progress: bool = True,
          epochs: int | None = None) -> dict:
    """Adapt ``base_dir``'s ensemble to the site of ``exports``; writes ``out`` and returns the report.

    The schedule is ``steps`` optimizer steps (whole epochs, at least 2), whatever the number of
    cases, so that 25 corrections get as much fine-tuning as 200; ``epochs`` overrides it.
    """
    t0 = time.time()
    out, base_dir = Path(out).resolve(), Path(base_dir).resolve()
    if out == base_dir or out == WEIGHTS_DIR.resolve():
        raise ValueError(f"--out {out} is the base or the shipped weights folder; adaptation writes a new folder")
    device = pick_device(device)
    base = Manifest.read(base_dir)
    if not base.shipped():
        raise FileNotFoundError(f"{base_dir / 'manifest.json'}: no shipped models to adapt; give --weights the "
                                "folder of the weights to start from")
    names = members_to_adapt(base, models)
    site = read_site(exports, held_out, seed, progress)
    say = print if progress else (lambda *a, **k: None)
    say(f"{len(site.train)} site cases to train on, {len(site.held_out)} held out (groups kept whole); "
        f"adapting {', '.join(names)}")
    replayed, base_val, split = (replay_cases(data, split_path, round(replay * len(site.train)), seed, progress)
                                 if replay > 0 or check_base > 0 else ([], [], None))
    replayed = replayed if replay > 0 else []
    per_epoch = math.ceil((len(site.train) + len(replayed)) / batch_size)
    epochs = epochs or max(2, math.ceil(steps / per_epoch))
    groups = {**(split.groups if split else {}), **site.groups}
    runs = Path(runs) if runs else DEFAULT_RUNS / "adapt" / f"{out.name}-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"
    copy_weights(base, out)
    for k, name in enumerate(names, 1):
        spec = get_spec(name)
        say(f"[{k}/{len(names)}] {name}: fine-tuning from {base.verify(name).name} on {len(site.train)} site + "
            f"{len(replayed)} replayed base cases, {epochs} epochs")
        train = decode_for([*site.train, *replayed], spec, groups, progress=progress)
        val = decode_for(list(site.held_out), spec, groups, progress=progress)
        config = RunConfig.for_model(spec, device, epochs=epochs, batch_size=batch_size, lr=lr, patience=epochs + 1,
                                     seed=seed, init=str(base.verify(name)),
                                     data=tuple(sorted({c.source for c in [*site.train, *replayed]})),
                                     split_fingerprints=split.fingerprints if split else {})
        train_model(spec, train, val, config, runs / name, progress=progress)
        ship(name, runs, out, force=True, final=True, command=f"sonomark adapt (fine-tuned from {base_dir})")
    adapted = Manifest.read(out)
    held = list(site.held_out)
    say(f"refitting temperatures, class offsets, ensemble weights and the mask threshold on {len(held)} held-out "
        "site cases")
    calibration.fit_int8_ranges(adapted, held, groups, every=1, progress=progress)  # fine-tuned: new activations
    preds_after = predict_cases(adapted, held, groups, device=device, progress=progress)
    calibration.calibrate(adapted, preds_after, {"site": _site_fingerprint(site)}, class_bias=True)
    adapted = Manifest.read(out)
    preds_before = predict_cases(base, held, groups, device=device, progress=progress)
    comparisons = [compare((preds_before, Fusion.from_manifest(base)), (preds_after, Fusion.from_manifest(adapted)),
                           "site, held out (also used to refit the ensemble)", n_boot, seed)]
    if check_base > 0 and base_val:
        sample = random.Random(seed).sample(base_val, min(check_base, len(base_val)))
        comparisons.append(compare(
            (predict_cases(base, sample, groups, device=device, progress=progress), Fusion.from_manifest(base)),
            (predict_cases(adapted, sample, groups, device=device, progress=progress), Fusion.from_manifest(adapted)),
            f"base sites' validation ({', '.join(sorted({c.source for c in sample}))}, {len(sample)} sampled)",
            n_boot, seed))
    report = {"base": {"folder": str(base_dir), "manifest_sha256": sha256_file(base_dir / "manifest.json"),
                       **base.identity()}, "exports": exports_identity(exports),
              "adapted": names, "site_train": len(site.train), "site_held_out": len(site.held_out),
              "replayed": len(replayed), "epochs": epochs, "steps": epochs * per_epoch, "lr": lr, "seed": seed, "device": device,
              "minutes": round((time.time() - t0) / 60, 1),
              "held_out_cases": [c.case_id for c in held], "comparisons": [c.to_json() for c in comparisons]}
    (out / "adaptation.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "README.md").write_text(card(report))
    say(card(report))
    return report


def _site_fingerprint(site: SiteSplit) -> str:
    ids = sorted(c.case_id for c in [*site.train, *site.held_out])
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def card(report: dict) -> str:
    """The adapted folder's model card."""
    lines = ["# Site-adapted SonoMark weights", "",
             f"Fine-tuned from `{report['base']['folder']}` (manifest sha256 "
             f"`{report['base']['manifest_sha256'][:12]}`) by `sonomark adapt`, in {report['minutes']} min "
             f"on {report['device']}.", "",
             "Exports (by the checksum of their manifest):", ""]
    lines += [f"- `{e['folder']}`: `{e['manifest_sha256'][:12]}`" for e in report["exports"]]
    lines += ["", f"- Adapted: {', '.join(report['adapted'])} ({report['epochs']} epochs, {report['steps']} steps at "
              f"lr {report['lr']}, last epoch kept); the other members are the base's.",
              f"- Trained on {report['site_train']} site cases and {report['replayed']} replayed base training cases.",
              f"- {report['site_held_out']} site cases (whole near-duplicate groups) held out: temperatures, "
              "per-class logit offsets, ensemble weights and the mask threshold were refitted on them, and they score the comparison "
              "below, so its 'after' is optimistic by that fit; a second batch of exports measures it cleanly.", "",
              "Base vs adapted ensemble, paired (after - before) with 95% group-bootstrap intervals:", "",
              "| cases | measure | base | adapted | difference |", "|---|---|---|---|---|"]
    for c in report["comparisons"]:
        for k, d in c["difference"].items():
            if np.isnan(c["before"][k]):
                continue
            lines.append(f"| {c['cases']} ({c['n_cases']}) | {k} | {c['before'][k]:.3f} | {c['after'][k]:.3f} | "
                         f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark adapt", description=__doc__.split("\n\n")[0])
    ap.add_argument("exports", nargs="+", type=Path, help="annotation export folders of the site")
    ap.add_argument("--out", type=Path, required=True, help="the site's weights folder to write")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="base weights (default: %(default)s)")
    ap.add_argument("--data", nargs="+", type=Path, default=[DEFAULT_DATA_DIR],
                    help="base datasets to replay (default: %(default)s)")
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--models", nargs="+", help="members to fine-tune (default: those with a say in the ensemble)")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps per model (rounded to whole epochs)")
    ap.add_argument("--epochs", type=int, help="whole epochs instead of --steps")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--held-out", type=float, default=0.3, help="share of the site's cases kept for calibration")
    ap.add_argument("--replay", type=float, default=1.0,
                    help="base training cases replayed per site case (0: none, when the base data is not at hand)")
    ap.add_argument("--check-base", type=int, default=100,
                    help="base validation cases to compare before/after on (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--runs", type=Path, help="checkpoint folder (default: runs/adapt/<out name>-<hash>)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        adapt(args.exports, args.out, args.weights, args.data, args.split, args.models, args.steps, args.lr,
              args.batch_size, args.held_out, args.replay, args.check_base, args.seed, args.device, args.runs,
              args.n_boot, progress=not args.quiet, epochs=args.epochs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
