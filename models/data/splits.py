"""The grouped, fixed train / validation / test split, committed as ``splits/split.json``.

- BUSI: stratified by class over near-duplicate groups (``StratifiedGroupKFold``, 20 folds:
  3 test, 3 validation, 14 train, i.e. about 70/15/15).
- BUS-BRA: the release's patient-disjoint ``kFold`` of ``5-fold-cv.csv``: fold 5 test,
  fold 4 validation, folds 1-3 train.
- Any group that would still span two splits (e.g. a duplicate across datasets) follows its
  first member, so no group ever crosses.
- Near-duplicate groups whose members carry different labels are excluded from every split:
  one of the labels is wrong and we cannot tell which, so they would teach noise in training
  and score noise in evaluation.

Each dataset's fingerprint (``models.data.survey.fingerprint``) is stored; loading the split
against data with another fingerprint raises ``SplitMismatchError``.

    sonomark splits make ../shared/datasets     # once; commit splits/split.json
    sonomark splits check ../shared/datasets    # verify data and split agree
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from sklearn.model_selection import StratifiedGroupKFold

from models.data.grouping import DUPLICATE_DISTANCE, assign_groups, duplicate_groups, duplicate_pairs
from models.data.paths import REPO
from models.data.records import CLASSES, Case
from models.data.sources import load_cases
from models.data.survey import CaseFacts, fingerprint, survey

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT = REPO / "splits" / "split.json"
FORMAT_VERSION = 1
BUSI_FOLDS, BUSI_TEST_FOLDS, BUSI_VAL_FOLDS = 20, (0, 1, 2), (3, 4, 5)
BUSBRA_FOLD_SPLIT = {"5": "test", "4": "val", "1": "train", "2": "train", "3": "train"}


class SplitMismatchError(ValueError):
    """The data on disk is not the data the split was made on."""


@dataclass(frozen=True)
class Split:
    """Which split each case belongs to, its group, and the cases left out with the reason."""

    seed: int
    fingerprints: dict[str, str]  # source -> dataset fingerprint
    assignment: dict[str, str]  # case id -> "train" / "val" / "test"
    groups: dict[str, str]  # case id -> group id (patients and near-duplicates merged)
    labels: dict[str, str]  # case id -> label
    excluded: dict[str, str] = field(default_factory=dict)  # case id -> reason
    duplicate_distance: int = DUPLICATE_DISTANCE

    def select(self, cases: Sequence[Case], split: str) -> list[Case]:
        """The cases of ``split``; a case that the split does not know is an error."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        unknown = [c.case_id for c in cases if c.case_id not in self.assignment and c.case_id not in self.excluded]
        if unknown:
            raise SplitMismatchError(f"{len(unknown)} case(s) are not in the split (e.g. {unknown[:3]}); "
                                     "re-make it with `sonomark splits make`")
        return [c for c in cases if self.assignment.get(c.case_id) == split]

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """source -> split -> class -> number of cases."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for cid, split in sorted(self.assignment.items()):
            per = out.setdefault(cid.split("/", 1)[0], {}).setdefault(split, {})
            per[self.labels[cid]] = per.get(self.labels[cid], 0) + 1
        return out

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "made_by": "sonomark splits make",
            "seed": self.seed,
            "duplicate_distance": self.duplicate_distance,
            "rules": {
                "busi": f"StratifiedGroupKFold({BUSI_FOLDS}, shuffle, seed): folds {list(BUSI_TEST_FOLDS)} test, "
                        f"{list(BUSI_VAL_FOLDS)} val, rest train; groups = near-duplicates",
                "busbra": "5-fold-cv.csv kFold: 5 test, 4 val, 1-3 train; groups = patients",
                "excluded": "near-duplicate groups whose labels disagree",
            },
            "fingerprints": self.fingerprints,
            "counts": self.counts(),
            "excluded": self.excluded,
            "cases": {cid: {"split": self.assignment[cid], "group": self.groups[cid], "label": self.labels[cid]}
                      for cid in sorted(self.assignment)},
        }

    @classmethod
    def from_json(cls, data: dict, path: Path | str = "split") -> Split:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: split format {data.get('format_version')!r}, expected {FORMAT_VERSION}; "
                             "re-make it with `sonomark splits make`")
        cases = data["cases"]
        return cls(seed=data["seed"], fingerprints=data["fingerprints"],
                   assignment={c: v["split"] for c, v in cases.items()},
                   groups={c: v["group"] for c, v in cases.items()},
                   labels={c: v["label"] for c, v in cases.items()},
                   excluded=data.get("excluded", {}), duplicate_distance=data["duplicate_distance"])


def _busi_assignment(cases: list[Case], groups: dict[str, str], seed: int) -> dict[str, str]:
    if not cases:
        return {}
    n_groups = len({groups[c.case_id] for c in cases})
    largest_class = max(Counter(c.label for c in cases).values())
    if n_groups < BUSI_FOLDS or largest_class < BUSI_FOLDS:
        raise ValueError(f"{cases[0].source}: {n_groups} groups of cases, largest class {largest_class}: too few for "
                         f"a {BUSI_FOLDS}-fold grouped split; a dataset needs {BUSI_FOLDS} groups and a class of "
                         f"{BUSI_FOLDS} cases at least (better hundreds) to be split")
    sgkf = StratifiedGroupKFold(n_splits=BUSI_FOLDS, shuffle=True, random_state=seed)
    y = [CLASSES.index(c.label) for c in cases]
    g = [groups[c.case_id] for c in cases]
    out: dict[str, str] = {}
    for fold, (_, held) in enumerate(sgkf.split(cases, y, g)):
        name = "test" if fold in BUSI_TEST_FOLDS else "val" if fold in BUSI_VAL_FOLDS else "train"
        out.update({cases[i].case_id: name for i in held})
    return out


def _fold_assignment(cases: list[Case]) -> dict[str, str]:
    out = {}
    for c in cases:
        fold = c.meta.get("kfold5", "")
        if fold not in BUSBRA_FOLD_SPLIT:
            raise ValueError(f"{c.image_path}: kFold {fold!r} is not one of 1-5; check 5-fold-cv.csv")
        out[c.case_id] = BUSBRA_FOLD_SPLIT[fold]
    return out


def make_split(cases: Sequence[Case], facts: dict[str, CaseFacts], seed: int = 0,
               max_distance: int = DUPLICATE_DISTANCE) -> Split:
    pairs = duplicate_pairs(facts, max_distance)
    groups = assign_groups(cases, pairs)
    excluded: dict[str, str] = {}
    for dup in duplicate_groups(cases, pairs):
        if dup.conflict:
            for cid, label in zip(dup.members, dup.labels):
                others = ", ".join(f"{o} ({ol})" for o, ol in zip(dup.members, dup.labels) if o != cid)
                excluded[cid] = f"label conflict: {label}, but near-duplicate of {others}"
    kept = [c for c in cases if c.case_id not in excluded]
    assignment: dict[str, str] = {}
    for source in sorted({c.source for c in kept}):
        members = [c for c in kept if c.source == source]
        if all("kfold5" in c.meta for c in members):
            assignment.update(_fold_assignment(members))
        else:
            assignment.update(_busi_assignment(members, groups, seed))
    first_split: dict[str, str] = {}
    for cid in sorted(assignment):  # a group spanning splits follows its first member
        assignment[cid] = first_split.setdefault(groups[cid], assignment[cid])
    sources = sorted({c.source for c in cases})
    return Split(seed=seed,
                 fingerprints={s: fingerprint([c for c in cases if c.source == s], facts) for s in sources},
                 assignment=assignment, groups={c: groups[c] for c in assignment},
                 labels={c.case_id: c.label for c in kept}, excluded=excluded, duplicate_distance=max_distance)


def save_split(split: Split, path: Path = DEFAULT_SPLIT) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(split.to_json(), indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def load_split(path: Path = DEFAULT_SPLIT) -> Split:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split file; make one with `sonomark splits make DATA_DIR...`")
    return Split.from_json(json.loads(path.read_text()), path)


EXPORT_SOURCES = ("sonomark",)  # annotation exports: placed by ``place_exports``, not by the split file


def place_exports(split: Split, cases: Sequence[Case], facts: dict[str, CaseFacts]) -> tuple[Split, list[Case]]:
    """Fit exported (corrected) cases into ``split`` so that no scan lands on two sides.

    An export that near-duplicates a base case joins that case's group and split. In train, it
    replaces the base cases with the very same pixels (the correction supersedes them). In val or
    test it is left out of training, so annotation never changes evaluation data. An export of a
    new scan goes to train. Returns the extended split and the cases to use.
    """
    exports = [c for c in cases if c.source in EXPORT_SOURCES]
    if not exports:
        return split, list(cases)
    export_ids = {c.case_id for c in exports}
    assignment, groups, labels = dict(split.assignment), dict(split.groups), dict(split.labels)
    excluded = dict(split.excluded)
    dups: dict[str, list[str]] = {}
    for pair in duplicate_pairs(facts, split.duplicate_distance):
        for e, b in ((pair.a, pair.b), (pair.b, pair.a)):
            if e in export_ids and b not in export_ids and b in split.assignment:
                dups.setdefault(e, []).append(b)
    replaced: set[str] = set()
    for case in exports:
        bases = sorted(dups.get(case.case_id, []))
        side = split.assignment[bases[0]] if bases else "train"
        if side != "train":
            excluded[case.case_id] = (f"correction of {bases[0]}, which is in the {side} split; kept out of "
                                      "training so evaluation data stays as released")
            continue
        assignment[case.case_id] = "train"
        groups[case.case_id] = split.groups[bases[0]] if bases else case.group_id
        labels[case.case_id] = case.label
        replaced |= {b for b in bases if facts[b].pixel_sha256 == facts[case.case_id].pixel_sha256}
    extended = Split(split.seed, split.fingerprints, assignment, groups, labels, excluded, split.duplicate_distance)
    return extended, [c for c in cases if c.case_id not in replaced]


def verify(split: Split, cases: Sequence[Case], facts: dict[str, CaseFacts]) -> None:
    """Raise ``SplitMismatchError`` unless every base source in ``cases`` has the split's fingerprint."""
    for source in sorted({c.source for c in cases} - set(EXPORT_SOURCES)):
        expected = split.fingerprints.get(source)
        actual = fingerprint([c for c in cases if c.source == source], facts)
        if expected is None:
            raise SplitMismatchError(f"dataset {source!r} is not in the split; re-make it with "
                                     "`sonomark splits make` including that dataset")
        if actual != expected:
            raise SplitMismatchError(
                f"dataset {source!r} has fingerprint {actual[:12]}, but the split was made on {expected[:12]}: "
                "its images, masks, labels or patients differ. Use the release the split was made on, or "
                "re-make the split (`sonomark splits make`) and re-train, never mix the two.")


def load_verified(data_dirs: Sequence[Path], path: Path = DEFAULT_SPLIT,
                  progress: bool = True) -> tuple[Split, list[Case]]:
    """The split and the cases of ``data_dirs``, after checking the fingerprints agree; annotation
    exports among them are placed by ``place_exports``."""
    split = load_split(path)
    cases = load_cases(data_dirs)
    facts = survey(cases, progress=progress)
    verify(split, cases, facts)
    return place_exports(split, cases, facts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark splits", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("make", "check"))
    ap.add_argument("data_dirs", nargs="+", type=Path, help="dataset folders (or a folder holding them)")
    ap.add_argument("--out", type=Path, default=DEFAULT_SPLIT, help="split file (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cases = load_cases(args.data_dirs)
    facts = survey(cases)
    if args.command == "make":
        split = make_split(cases, facts, seed=args.seed)
        print(f"wrote {save_split(split, args.out)}")
    else:
        split = load_split(args.out)
        try:
            verify(split, cases, facts)
        except SplitMismatchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{args.out}: fingerprints match")
    for source, per in split.counts().items():
        print(source, {s: dict(sorted(per.get(s, {}).items())) for s in SPLITS})
    print(f"excluded (label conflicts): {len(split.excluded)}")
    return 0

