"""Data audit: ``sonomark audit DATA_DIR... [--out reports]``.

Writes ``audit.json`` and ``audit.md``: counts per class and source, image sizes and modes,
mask sanity, dataset defects (files named), and near-duplicate groups by perceptual hash with
label conflicts listed. Exits 1 when a dataset has defects that stop it being loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.data.grouping import DUPLICATE_DISTANCE, duplicate_groups, duplicate_pairs
from models.data.paths import REPO
from models.data.records import CLASSES, Case, DatasetRead
from models.data.sources import read_datasets
from models.data.splits import DEFAULT_SPLIT, SPLITS, SplitMismatchError, load_split, verify
from models.data.survey import CaseFacts, fingerprint, survey

DEFAULT_OUT = REPO / "reports"
BBOX_TOLERANCE_PX = 5

CONFLICT_DECISION = (
    "Near-duplicate groups whose members carry different labels are **excluded from every split** "
    "(train, validation and test). The same scan cannot be both benign and malignant, so one label is "
    "wrong and the data does not say which: in training such a pair teaches noise, and in evaluation it "
    "scores noise. They stay in the dataset folders and in this report; the split file lists each one "
    "with its reason. Same-label near-duplicates are kept, grouped, so each group lies in one split."
)


@dataclass(frozen=True)
class Audit:
    reads: tuple[DatasetRead, ...]
    facts: dict[str, CaseFacts]
    distance: int

    @property
    def cases(self) -> list[Case]:
        return [c for r in self.reads for c in r.cases]


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {k: round(float(f(v)), 4) for k, f in (("min", np.min), ("median", np.median), ("max", np.max))} if len(v) else {}


def _bbox_mismatches(cases: list[Case], facts: dict[str, CaseFacts]) -> list[str]:
    out = []
    for c in cases:
        if "BBOX" not in c.meta:
            continue
        stated = json.loads(c.meta["BBOX"])
        found = facts[c.case_id].mask_bbox
        if found is None or max(abs(a - b) for a, b in zip(stated, found)) > BBOX_TOLERANCE_PX:
            out.append(f"{c.case_id}: CSV BBOX {stated} vs mask bounding box {list(found) if found else None}")
    return out


def build_report(audit: Audit, split_path: Path | None = DEFAULT_SPLIT) -> dict:
    cases, facts = audit.cases, audit.facts
    pairs = duplicate_pairs(facts, audit.distance)
    groups = duplicate_groups(cases, pairs)
    by_id = {c.case_id: c for c in cases}
    datasets = {}
    for r in audit.reads:
        fs = [facts[c.case_id] for c in r.cases]
        datasets[r.source] = {
            "root": str(r.root),
            "cases": len(r.cases),
            "per_class": {k: sum(c.label == k for c in r.cases) for k in CLASSES if any(c.label == k for c in r.cases)},
            "groups_from_source": len({c.group_id for c in r.cases}),
            "fingerprint": fingerprint(r.cases, facts),
            "width": _stats([f.width for f in fs]),
            "height": _stats([f.height for f in fs]),
            "file_modes": dict(Counter(f.mode for f in fs)),
            "colour_images": sum(f.color for f in fs),
            "multi_mask_cases": sum(len(c.mask_paths) > 1 for c in r.cases),
            "lesion_area_fraction": _stats([f.mask_area / (f.width * f.height) for c, f in zip(r.cases, fs)
                                            if c.label != "normal"]),
            "empty_lesion_masks": sorted(c.case_id for c in r.cases if c.label != "normal" and facts[c.case_id].mask_area == 0),
            "non_empty_normal_masks": sorted(c.case_id for c in r.cases if c.label == "normal" and facts[c.case_id].mask_area > 0),
            "problems": [{"path": str(p.path), "kind": p.kind, "message": p.message} for p in r.problems],
            "notes": list(r.notes) + _bbox_mismatches(list(r.cases), facts),
        }
    report = {
        "datasets": datasets,
        "duplicates": {
            "method": f"64-bit perceptual hash (DCT, imagehash.phash), Hamming distance <= {audit.distance}",
            "pairs": len(pairs),
            "pairs_by_sources": dict(Counter("+".join(sorted({p.a.split('/')[0], p.b.split('/')[0]})) for p in pairs)),
            "cross_class_pairs": sum(by_id[p.a].label != by_id[p.b].label for p in pairs),
            "groups": len(groups),
            "group_sizes": {str(k): v for k, v in sorted(Counter(len(g.members) for g in groups).items())},
            "label_conflicts": [{"members": list(g.members), "labels": list(g.labels)} for g in groups if g.conflict],
            "all_groups": [{"members": list(g.members), "labels": list(g.labels)} for g in groups],
            "pair_list": [[p.a, p.b, p.distance] for p in pairs],
        },
        "conflict_decision": CONFLICT_DECISION,
    }
    if split_path is not None and Path(split_path).is_file():
        split = load_split(split_path)
        try:
            verify(split, cases, facts)
            report["split"] = {"file": str(split_path), "fingerprints_match": True, "counts": split.counts(), "excluded": len(split.excluded)}
        except SplitMismatchError as exc:
            report["split"] = {"file": str(split_path), "fingerprints_match": False, "error": str(exc)}
    return report


def render_markdown(report: dict) -> str:
    lines = ["# SonoMark data audit", "",
             "Made by `sonomark audit`; the JSON beside this file holds every list in full.", ""]
    for source, d in report["datasets"].items():
        lines += [f"## {source}", "",
                  f"- root: `{d['root']}`; fingerprint `{d['fingerprint'][:16]}`",
                  f"- cases: {d['cases']} ({', '.join(f'{k} {v}' for k, v in d['per_class'].items())}); "
                  f"source groups (patients or single cases): {d['groups_from_source']}",
                  f"- width {d['width']}, height {d['height']}",
                  f"- file modes: {d['file_modes']}; colour images: {d['colour_images']}",
                  f"- cases with several mask files (union taken): {d['multi_mask_cases']}",
                  f"- lesion area / image area: {d['lesion_area_fraction']}",
                  f"- empty lesion masks: {len(d['empty_lesion_masks'])} {d['empty_lesion_masks'][:10]}",
                  f"- non-empty normal masks: {len(d['non_empty_normal_masks'])} {d['non_empty_normal_masks'][:10]}",
                  f"- defects: {len(d['problems'])}"]
        lines += [f"  - `{p['path']}`: {p['message']}" for p in d["problems"][:50]]
        lines += [f"- notes: {len(d['notes'])}"] + [f"  - {n}" for n in d["notes"][:50]] + [""]
    dup = report["duplicates"]
    lines += ["## Near-duplicates", "", f"- method: {dup['method']}",
              f"- pairs: {dup['pairs']} {dup['pairs_by_sources']}; across classes: {dup['cross_class_pairs']}",
              f"- groups: {dup['groups']}, sizes {dup['group_sizes']}",
              f"- label conflicts: {len(dup['label_conflicts'])} groups", ""]
    lines += ["| members | labels |", "|---|---|"]
    lines += [f"| {', '.join(g['members'])} | {', '.join(g['labels'])} |" for g in dup["label_conflicts"]]
    lines += ["", "### Decision on label conflicts", "", report["conflict_decision"], ""]
    if "split" in report:
        s = report["split"]
        lines += ["## Split", "", f"- file: `{s['file']}`; fingerprints match: {s['fingerprints_match']}"]
        if s["fingerprints_match"]:
            lines += [f"- excluded (label conflicts): {s['excluded']}", "",
                      "| source | split | " + " | ".join(CLASSES) + " | total |", "|---|---|" + "---|" * (len(CLASSES) + 1)]
            for source, per in s["counts"].items():
                for name in SPLITS:
                    row = per.get(name, {})
                    lines.append(f"| {source} | {name} | " + " | ".join(str(row.get(k, 0)) for k in CLASSES)
                                 + f" | {sum(row.values())} |")
        else:
            lines.append(f"- {s['error']}")
        lines.append("")
    return "\n".join(lines)


def conflict_sheet(audit: Audit, path: Path, tile: int = 160) -> Path | None:
    """A contact sheet of the label-conflict groups: one row a group, each tile captioned."""
    from PIL import Image, ImageDraw

    by_id = {c.case_id: c for c in audit.cases}
    groups = [g for g in duplicate_groups(audit.cases, duplicate_pairs(audit.facts, audit.distance)) if g.conflict]
    if not groups:
        return None
    cols = max(len(g.members) for g in groups)
    sheet = Image.new("L", (cols * tile, len(groups) * (tile + 14)), 255)
    draw = ImageDraw.Draw(sheet)
    for r, g in enumerate(groups):
        for k, (cid, label) in enumerate(zip(g.members, g.labels)):
            with Image.open(by_id[cid].image_path) as im:
                im = im.convert("L")
                im.thumbnail((tile - 4, tile - 4))
                sheet.paste(im, (k * tile + 2, r * (tile + 14) + 14))
            draw.text((k * tile + 2, r * (tile + 14)), f"{cid.split('/', 1)[1]}: {label}", fill=0)
    sheet.save(path)
    return path


def run_audit(data_dirs: Sequence[Path], distance: int = DUPLICATE_DISTANCE, progress: bool = True) -> Audit:
    reads = tuple(read_datasets(data_dirs))
    cases = [c for r in reads for c in r.cases]
    return Audit(reads, survey(cases, progress=progress), distance)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark audit", description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dirs", nargs="+", type=Path, help="dataset folders (or a folder holding them)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default: %(default)s)")
    ap.add_argument("--distance", type=int, default=DUPLICATE_DISTANCE, help="near-duplicate Hamming distance")
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split file to check against the data")
    args = ap.parse_args(argv)
    try:
        audit = run_audit(args.data_dirs, args.distance)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = build_report(audit, args.split)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "audit.json").write_text(json.dumps(report, indent=1) + "\n")
    sheet = conflict_sheet(audit, args.out / "audit_conflicts.png")
    (args.out / "audit.md").write_text(render_markdown(report) + (
        "\n![label-conflict groups](audit_conflicts.png)\n" if sheet else ""))
    for source, d in report["datasets"].items():
        print(f"{source}: {d['cases']} cases {d['per_class']}, {len(d['problems'])} defects, {len(d['notes'])} notes, "
              f"{len(d['empty_lesion_masks'])} empty lesion masks, {len(d['non_empty_normal_masks'])} non-empty normal masks")
    dup = report["duplicates"]
    print(f"near-duplicates: {dup['pairs']} pairs in {dup['groups']} groups, {dup['cross_class_pairs']} pairs across "
          f"classes, {len(dup['label_conflicts'])} conflicting groups")
    print(f"wrote {args.out / 'audit.json'} and {args.out / 'audit.md'}")
    return 1 if any(d["problems"] for d in report["datasets"].values()) else 0

