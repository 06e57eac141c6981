"""Corrected exports read back for training: tied to the base case's split, replacing it in train,
never altering validation or test."""
import numpy as np
import pytest

from models.annotation import export
from models.data import load_cases, splits
from models.data.survey import survey
from models.inference.scan import read_scan
from tests.conftest import write_busi


@pytest.fixture
def world(tmp_path):
    busi = write_busi(tmp_path / "busi", {"benign": 30, "malignant": 25, "normal": 25})
    cases = load_cases([busi])
    split_path = splits.save_split(splits.make_split(cases, survey(cases, progress=False)), tmp_path / "split.json")
    return busi, splits.load_split(split_path), split_path, tmp_path / "exports"


def correct(busi, case_id, exports, label="malignant"):
    stem = case_id.split("/", 1)[1]
    folder = stem.split(" ")[0]
    scan = read_scan(busi / folder / f"{stem}.png")
    mask = np.zeros(scan.shape, bool)
    mask[5:20, 5:30] = True
    export.save_case(exports, export.Annotation(scan, label, "annotator", mask, "dr. c"))


def test_a_train_correction_replaces_its_base_case(world):
    busi, split, split_path, exports = world
    target = next(c for c, s in sorted(split.assignment.items()) if s == "train" and "benign" in c)
    correct(busi, target, exports)
    extended, cases = splits.load_verified([busi, exports], split_path, progress=False)
    train = extended.select(cases, "train")
    ids = {c.case_id for c in train}
    assert target not in ids
    (corrected,) = [c for c in train if c.source == "sonomark"]
    assert corrected.label == "malignant" and extended.groups[corrected.case_id] == split.groups[target]


@pytest.mark.parametrize("side", ["val", "test"])
def test_corrections_never_change_evaluation_data(world, side):
    busi, split, split_path, exports = world
    target = next(c for c, s in sorted(split.assignment.items()) if s == side)
    correct(busi, target, exports)
    extended, cases = splits.load_verified([busi, exports], split_path, progress=False)
    assert target in {c.case_id for c in extended.select(cases, side)}
    assert not [c for c in extended.select(cases, "train") if c.source == "sonomark"]
    (reason,) = [r for c, r in extended.excluded.items() if c.startswith("sonomark/")]
    assert target in reason and side in reason


def test_a_new_scan_goes_to_train_and_no_group_crosses(world, tmp_path):
    busi, split, split_path, exports = world
    new = write_busi(tmp_path / "other", {"benign": 1}, start_seed=500)
    scan = read_scan(new / "benign" / "benign (1).png", name="new scan.png")
    export.save_case(exports, export.Annotation(scan, "benign", "annotator", np.ones(scan.shape, bool), "dr. c"))
    extended, cases = splits.load_verified([busi, exports], split_path, progress=False)
    assert [c.source for c in extended.select(cases, "train")].count("sonomark") == 1
    sides: dict[str, set] = {}
    for c in cases:
        if c.case_id in extended.assignment:
            sides.setdefault(extended.groups[c.case_id], set()).add(extended.assignment[c.case_id])
    assert all(len(s) == 1 for s in sides.values())
