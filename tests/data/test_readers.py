import shutil

import numpy as np
import pytest
from PIL import Image

from models.data import CLASSES, DatasetError, load_cases, read_dataset, read_datasets
from models.data.images import load_gray, load_mask, load_pixels, pixel_digest
from tests.conftest import write_busbra, write_busi


def test_busi_reads_every_case_with_label_and_masks(busi):
    read = read_dataset(busi)
    assert read.source == "busi" and not read.problems
    assert len(read.cases) == 13
    case = next(c for c in read.cases if c.case_id == "busi/benign (2)")
    assert case.label == "benign" and case.group_id == case.case_id
    assert case.image_path.name == "benign (2).png"
    assert [p.name for p in case.mask_paths] == ["benign (2)_mask.png"]


def test_busi_union_of_several_masks(busi):
    extra = np.zeros((48, 64), np.uint8)
    extra[2:6, 50:60] = 255
    Image.fromarray(extra).save(busi / "malignant" / "malignant (1)_mask_1.png")
    case = next(c for c in read_dataset(busi).cases if c.case_id == "busi/malignant (1)")
    assert [p.name for p in case.mask_paths] == ["malignant (1)_mask.png", "malignant (1)_mask_1.png"]
    union = load_mask(case.mask_paths, (48, 64))
    first = load_mask(case.mask_paths[:1], (48, 64))
    assert union[2:6, 50:60].all() and not first[2:6, 50:60].any()
    assert union.sum() == first.sum() + 40


def test_rgb_and_grayscale_copies_decode_to_the_same_pixels(tmp_path):
    gray = write_busi(tmp_path / "gray")
    rgb = write_busi(tmp_path / "rgb", rgb=True)
    a = load_pixels(gray / "benign" / "benign (1).png")
    b = load_pixels(rgb / "benign" / "benign (1).png")
    assert (a[1], b[1]) == ("L", "RGB")
    assert pixel_digest(a[0]) == pixel_digest(b[0])
    assert load_gray(rgb / "benign" / "benign (1).png").shape == (48, 64)


def test_busbra_reads_patients_folds_and_labels(busbra):
    read = read_dataset(busbra)
    assert read.source == "busbra" and not read.problems and len(read.cases) == 20
    case = next(c for c in read.cases if c.case_id == "busbra/bus_0003-r")
    assert case.label == "malignant" and case.group_id == "busbra/patient-3"
    assert case.meta["kfold5"] == "3"
    assert case.mask_paths[0].name == "mask_0003-r.png"


def test_busbra_wrong_csv_size_is_a_note_not_a_defect(busbra):
    text = (busbra / "bus_data.csv").read_text().replace("bus_0001-l,1,x,benign,4,d,64,48", "bus_0001-l,1,x,benign,4,d,64,99")
    (busbra / "bus_data.csv").write_text(text)
    read = read_dataset(busbra)
    assert not read.problems
    assert any("bus_0001-l" in n and "64x99" in n for n in read.notes)


def test_parent_folder_finds_both_datasets(tmp_path):
    write_busi(tmp_path / "Dataset_BUSI_with_GT")
    write_busbra(tmp_path / "BUSBRA")
    assert sorted(r.source for r in read_datasets([tmp_path])) == ["busbra", "busi"]


@pytest.mark.parametrize("breakage, kind, culprit", [
    ("missing_mask", "missing_mask", "benign (1).png"),
    ("mask_size", "mask_size", "benign (1)_mask.png"),
    ("unknown_class", "unknown_class", "suspicious"),
    ("unreadable", "unreadable", "benign (1).png"),
    ("empty_file", "unreadable", "benign (1).png"),
    ("orphan_mask", "orphan_mask", "benign (99)_mask.png"),
])
def test_busi_defects_name_the_file(busi, breakage, kind, culprit):
    folder = busi / "benign"
    if breakage == "missing_mask":
        (folder / "benign (1)_mask.png").unlink()
    elif breakage == "mask_size":
        Image.new("L", (10, 10)).save(folder / "benign (1)_mask.png")
    elif breakage == "unknown_class":
        (busi / "suspicious").mkdir()
    elif breakage == "unreadable":
        (folder / "benign (1).png").write_bytes(b"this is not a png")
    elif breakage == "empty_file":
        (folder / "benign (1).png").write_bytes(b"")
    elif breakage == "orphan_mask":
        shutil.copy(folder / "benign (1)_mask.png", folder / "benign (99)_mask.png")
    read = read_dataset(busi)
    assert [p.kind for p in read.problems] == [kind]
    assert read.problems[0].path.name == culprit
    with pytest.raises(DatasetError, match=culprit.replace("(", r"\(").replace(")", r"\)")):
        load_cases([busi])


@pytest.mark.parametrize("breakage, kind", [("image", "missing_image"), ("mask", "missing_mask"),
                                            ("unlisted", "unlisted_image"), ("label", "unknown_label"),
                                            ("size", "mask_size")])
def test_busbra_defects_name_the_file(busbra, breakage, kind):
    if breakage == "image":
        (busbra / "Images" / "bus_0002-l.png").unlink()
    elif breakage == "mask":
        (busbra / "Masks" / "mask_0002-l.png").unlink()
    elif breakage == "unlisted":
        shutil.copy(busbra / "Images" / "bus_0002-l.png", busbra / "Images" / "bus_0999-l.png")
    elif breakage == "label":
        text = (busbra / "bus_data.csv").read_text().replace("bus_0002-l,2,x,benign", "bus_0002-l,2,x,probably")
        (busbra / "bus_data.csv").write_text(text)
    elif breakage == "size":
        Image.new("L", (5, 5)).save(busbra / "Masks" / "mask_0002-l.png")
    read = read_dataset(busbra)
    assert [p.kind for p in read.problems] == [kind]
    assert ("0999" if breakage == "unlisted" else "0002-l") in str(read.problems[0])
    with pytest.raises(DatasetError):
        load_cases([busbra])


def test_not_a_dataset_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="BUSI release"):
        read_datasets([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_datasets([tmp_path / "missing"])


def test_case_rejects_unknown_label(tmp_path):
    from models.data import Case
    with pytest.raises(ValueError, match="not one of"):
        Case("x/1", "x", tmp_path / "1.png", (), "suspicious", "x/1")
    assert CLASSES == ("benign", "malignant", "normal")
