"""Real-data checks on ../shared/datasets (skipped with a reason when it is absent)."""
from collections import defaultdict

import pytest

from models.data.audit import build_report, run_audit
from models.data.grouping import duplicate_groups, duplicate_pairs
from models.data.images import load_gray
from models.data.splits import DEFAULT_SPLIT, load_split, verify
from models.field_of_view import find_region


@pytest.fixture(scope="module")
def real(shared_datasets):
    return run_audit([shared_datasets], progress=False)


def test_readers_see_the_whole_release(real):
    counts = {r.source: len(r.cases) for r in real.reads}
    assert counts == {"busi": 780, "busbra": 1875}
    assert not any(r.problems for r in real.reads)


def test_audit_finds_the_known_busi_duplicates(real):
    report = build_report(real, split_path=None)
    dup = report["duplicates"]
    busi_pairs = dup["pairs_by_sources"].get("busi", 0)
    assert 180 <= busi_pairs <= 240  # "about 200 near-identical pairs"
    assert 8 <= dup["cross_class_pairs"] <= 12  # "about ten across classes"
    conflicts = {tuple(g["members"]) for g in dup["label_conflicts"]}
    assert any({"busi/benign (42)", "busi/malignant (51)"} <= set(m) for m in conflicts)
    notes = " ".join(report["datasets"]["busbra"]["notes"])
    for quirk in ("bus_0856-l", "bus_0857-r", "bus_0912-l", "bus_0990-l", "bus_0845-s"):
        assert quirk in notes


def test_committed_split_matches_the_data(real):
    verify(load_split(DEFAULT_SPLIT), real.cases, real.facts)


def test_committed_split_keeps_duplicates_and_patients_on_one_side(real):
    """Recomputes the duplicate pairs from pixels, independently of the groups stored in the split."""
    split = load_split(DEFAULT_SPLIT)
    side = {cid: split.assignment.get(cid, "excluded") for cid in (c.case_id for c in real.cases)}
    pairs = duplicate_pairs(real.facts, split.duplicate_distance)
    crossing = [(p.a, p.b) for p in pairs if side[p.a] != side[p.b]]
    assert not crossing
    for group in duplicate_groups(real.cases, pairs):
        assert len({side[m] for m in group.members}) == 1
        if group.conflict:
            assert all(side[m] == "excluded" for m in group.members)
    by_patient = defaultdict(set)
    for c in real.cases:
        if c.source == "busbra":
            by_patient[c.group_id].add(side[c.case_id])
    assert len(by_patient) == 1064 and all(len(s) == 1 for s in by_patient.values())
    test_fold = {c.case_id for c in real.cases if c.meta.get("kfold5") == "5"}
    assert {side[c] for c in test_fold} == {"test"}


def test_no_released_scan_has_a_screen_frame(real):
    """BUSI and BUS-BRA were released cropped to the scan: ``find_region`` reads every one of them whole, so the
    region crop changes nothing the models were trained or validated on (``models/field_of_view.py``)."""
    framed = [c.case_id for r in real.reads for c in r.cases if find_region(load_gray(c.image_path)) is not None]
    assert framed == []
