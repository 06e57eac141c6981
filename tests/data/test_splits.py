import json

import numpy as np
import pytest
from PIL import Image

from models.data import load_cases, splits
from models.data.grouping import assign_groups, duplicate_pairs
from models.data.survey import survey
from tests.conftest import write_busbra, write_busi
from tests.data.test_audit import add_duplicates


@pytest.fixture
def both(tmp_path):
    busi = write_busi(tmp_path / "busi", {"benign": 40, "malignant": 24, "normal": 24})
    add_duplicates(busi)
    busbra = write_busbra(tmp_path / "busbra", patients=20)
    cases = load_cases([busi, busbra])
    return busi, busbra, cases, survey(cases, progress=False)


def test_no_group_crosses_splits_and_conflicts_are_excluded(both):
    _, _, cases, facts = both
    split = splits.make_split(cases, facts, seed=0)
    assert set(split.excluded) == {"busi/benign (1)", "busi/malignant (5)"}
    assert "label conflict" in split.excluded["busi/malignant (5)"]
    assert split.assignment["busi/benign (2)"] == split.assignment["busi/benign (7)"]
    where: dict[str, set[str]] = {}
    for cid, name in split.assignment.items():
        where.setdefault(split.groups[cid], set()).add(name)
    assert all(len(v) == 1 for v in where.values())
    patients = {c.group_id for c in cases if c.source == "busbra"}
    assert all(len(where[p]) == 1 for p in patients)
    assert len(split.assignment) + len(split.excluded) == len(cases)


def test_busbra_follows_its_release_folds(both):
    _, _, cases, facts = both
    split = splits.make_split(cases, facts)
    expected = {"5": "test", "4": "val", "1": "train", "2": "train", "3": "train"}
    for c in cases:
        if c.source == "busbra":
            assert split.assignment[c.case_id] == expected[c.meta["kfold5"]]


def test_busi_split_is_stratified_about_70_15_15(tmp_path):
    per_class = {"benign": 120, "malignant": 60, "normal": 40}
    cases = load_cases([write_busi(tmp_path / "busi", per_class)])
    split = splits.make_split(cases, survey(cases, progress=False))
    counts = split.counts()["busi"]
    for label, total in per_class.items():
        n = {s: counts[s].get(label, 0) for s in splits.SPLITS}
        assert sum(n.values()) == total
        assert abs(n["test"] - 0.15 * total) <= 1 + 0.02 * total, n
        assert abs(n["val"] - 0.15 * total) <= 1 + 0.02 * total, n


def test_split_is_deterministic_and_seeded(both):
    _, _, cases, facts = both
    a, b = splits.make_split(cases, facts, seed=0), splits.make_split(cases, facts, seed=0)
    assert a.to_json() == b.to_json()
    c = splits.make_split(cases, facts, seed=1)
    assert c.assignment != a.assignment


def test_save_load_verify_round_trip(tmp_path, both):
    busi, busbra, cases, facts = both
    path = splits.save_split(splits.make_split(cases, facts), tmp_path / "split.json")
    split, loaded_cases = splits.load_verified([busi, busbra], path, progress=False)
    assert len(split.select(loaded_cases, "test")) == sum(v == "test" for v in split.assignment.values())
    assert json.loads(path.read_text())["fingerprints"].keys() == {"busi", "busbra"}


@pytest.mark.parametrize("change", ["pixels", "mask", "label", "new_case", "patient"])
def test_fingerprint_mismatch_raises(tmp_path, both, change):
    busi, busbra, cases, facts = both
    path = splits.save_split(splits.make_split(cases, facts), tmp_path / "split.json")
    if change == "pixels":
        img = np.asarray(Image.open(busi / "normal" / "normal (3).png")).copy()
        img[0, 0] ^= 1
        Image.fromarray(img).save(busi / "normal" / "normal (3).png")
    elif change == "mask":  # one more lesion pixel: a corrected mask is other data
        mask = np.asarray(Image.open(busi / "benign" / "benign (3)_mask.png").convert("L")).copy()
        mask[0, 0] = 255 - mask[0, 0]
        Image.fromarray(mask).convert("1").save(busi / "benign" / "benign (3)_mask.png")
    elif change == "label":
        for suffix in (".png", "_mask.png"):
            (busi / "benign" / f"benign (9){suffix}").rename(busi / "malignant" / f"benign (9){suffix}")
    elif change == "new_case":
        write_busi(busi, {"normal": 21}, start_seed=0)
    elif change == "patient":
        text = (busbra / "bus_data.csv").read_text().replace("bus_0002-l,2,", "bus_0002-l,7,")
        (busbra / "bus_data.csv").write_text(text)
    with pytest.raises(splits.SplitMismatchError, match="fingerprint"):
        splits.load_verified([busi, busbra], path, progress=False)


def test_unknown_case_and_missing_file_are_errors(tmp_path, both):
    busi, _, cases, facts = both
    split = splits.make_split([c for c in cases if c.source == "busi"], facts)
    with pytest.raises(splits.SplitMismatchError, match="not in the split"):
        split.select(cases, "train")
    with pytest.raises(splits.SplitMismatchError, match="'busbra' is not in the split"):
        splits.verify(split, cases, facts)
    with pytest.raises(FileNotFoundError, match="sonomark splits make"):
        splits.load_split(tmp_path / "absent.json")
    with pytest.raises(ValueError, match="not one of"):
        split.select(cases, "holdout")


def test_cross_source_duplicate_group_stays_on_one_side(tmp_path):
    busi = write_busi(tmp_path / "busi", {"benign": 30, "malignant": 25, "normal": 25})
    busbra = write_busbra(tmp_path / "busbra", patients=10)
    # a BUS-BRA test-fold scan (patient 5) that also appears in BUSI
    Image.open(busbra / "Images" / "bus_0005-l.png").save(busi / "benign" / "benign (31).png")
    Image.open(busbra / "Masks" / "mask_0005-l.png").save(busi / "benign" / "benign (31)_mask.png")
    cases = load_cases([busi, busbra])
    facts = survey(cases, progress=False)
    split = splits.make_split(cases, facts)
    groups = assign_groups(cases, duplicate_pairs(facts))
    assert groups["busi/benign (31)"] == groups["busbra/bus_0005-r"] == "busbra/patient-5"
    members = [c for c in split.assignment if split.groups[c] == "busbra/patient-5"]
    assert len(members) == 3 and len({split.assignment[c] for c in members}) == 1


def test_too_small_a_dataset_is_a_clear_error(busi):
    cases = load_cases([busi])
    with pytest.raises(ValueError, match="busi: 13 groups of cases, largest class 6: too few"):
        splits.make_split(cases, survey(cases, progress=False))


def test_cli_make_and_check(tmp_path, capsys):
    busi = write_busi(tmp_path / "busi", {"benign": 30, "malignant": 25, "normal": 25})
    out = tmp_path / "s.json"
    assert splits.main(["make", str(busi), "--out", str(out)]) == 0
    assert splits.main(["check", str(busi), "--out", str(out)]) == 0
    (busi / "normal" / "normal (1).png").unlink()
    (busi / "normal" / "normal (1)_mask.png").unlink()
    assert splits.main(["check", str(busi), "--out", str(out)]) == 1
    assert "fingerprint" in capsys.readouterr().err
