import json
import shutil

import numpy as np
from PIL import Image

from models.data import audit
from tests.conftest import write_busbra, write_busi


def add_duplicates(busi):
    """benign (2) re-saved with noise as benign (7) (same class); benign (1) copied as malignant (5)."""
    img = np.asarray(Image.open(busi / "benign" / "benign (2).png")).astype(int)
    noisy = np.clip(img + np.random.default_rng(0).integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(busi / "benign" / "benign (7).png")
    shutil.copy(busi / "benign" / "benign (2)_mask.png", busi / "benign" / "benign (7)_mask.png")
    shutil.copy(busi / "benign" / "benign (1).png", busi / "malignant" / "malignant (5).png")
    shutil.copy(busi / "benign" / "benign (1)_mask.png", busi / "malignant" / "malignant (5)_mask.png")


def test_audit_finds_duplicates_and_label_conflicts(tmp_path, busi, capsys):
    add_duplicates(busi)
    out = tmp_path / "report"
    assert audit.main([str(busi), "--out", str(out), "--split", str(tmp_path / "none.json")]) == 0
    report = json.loads((out / "audit.json").read_text())
    dup = report["duplicates"]
    assert dup["pairs"] == 2 and dup["cross_class_pairs"] == 1
    assert {tuple(g["members"]) for g in dup["all_groups"]} == {("busi/benign (2)", "busi/benign (7)"),
                                                                ("busi/benign (1)", "busi/malignant (5)")}
    assert dup["label_conflicts"] == [{"members": ["busi/benign (1)", "busi/malignant (5)"],
                                       "labels": ["benign", "malignant"]}]
    d = report["datasets"]["busi"]
    assert d["per_class"] == {"benign": 7, "malignant": 5, "normal": 3}
    assert d["file_modes"] == {"L": 15}
    md = (out / "audit.md").read_text()
    assert "excluded from every split" in md and "busi/malignant (5)" in md
    assert (out / "audit_conflicts.png").is_file()
    printed = capsys.readouterr().out
    assert "2 pairs" in printed and "1 conflicting groups" in printed


def test_audit_reports_mask_sanity(tmp_path, busi):
    Image.new("L", (64, 48), 0).save(busi / "benign" / "benign (3)_mask.png")  # empty lesion mask
    Image.new("L", (64, 48), 255).save(busi / "normal" / "normal (1)_mask.png")  # lesion in a normal scan
    assert audit.main([str(busi), "--out", str(tmp_path / "r"), "--split", str(tmp_path / "none.json")]) == 0
    d = json.loads((tmp_path / "r" / "audit.json").read_text())["datasets"]["busi"]
    assert d["empty_lesion_masks"] == ["busi/benign (3)"]
    assert d["non_empty_normal_masks"] == ["busi/normal (1)"]


def test_audit_lists_defects_and_exits_nonzero(tmp_path, busi, busbra):
    Image.new("L", (10, 10)).save(busi / "benign" / "benign (1)_mask.png")
    rc = audit.main([str(busi), str(busbra), "--out", str(tmp_path / "r"), "--split", str(tmp_path / "none.json")])
    assert rc == 1
    report = json.loads((tmp_path / "r" / "audit.json").read_text())
    assert [p["kind"] for p in report["datasets"]["busi"]["problems"]] == ["mask_size"]
    assert report["datasets"]["busbra"]["cases"] == 20
    assert "benign (1)_mask.png" in (tmp_path / "r" / "audit.md").read_text()


def test_audit_flags_busbra_bbox_that_disagrees_with_mask(tmp_path):
    root = write_busbra(tmp_path / "bb", patients=2)
    text = (root / "bus_data.csv").read_text().replace('"[24,14,13,13]"', '"[1,1,5,5]"', 1)
    (root / "bus_data.csv").write_text(text)
    report = audit.build_report(audit.run_audit([root], progress=False), split_path=None)
    assert any("bus_0001-l" in n and "BBOX" in n for n in report["datasets"]["busbra"]["notes"])


def test_audit_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert audit.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_rgb_and_grayscale_copies_share_the_fingerprint(tmp_path):
    a = audit.build_report(audit.run_audit([write_busi(tmp_path / "g")], progress=False), split_path=None)
    b = audit.build_report(audit.run_audit([write_busi(tmp_path / "c", rgb=True)], progress=False), split_path=None)
    assert a["datasets"]["busi"]["fingerprint"] == b["datasets"]["busi"]["fingerprint"]
