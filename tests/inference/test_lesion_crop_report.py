"""``reports/lesion_crop.py``: the readings it scores, and crops taken from a given mask."""
import importlib.util
import sys

import numpy as np
import pytest

from models.data.paths import REPO
from models.data.records import CLASSES

sys.path.insert(0, str(REPO / "reports"))
spec = importlib.util.spec_from_file_location("lesion_crop", REPO / "reports" / "lesion_crop.py")
lesion_crop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lesion_crop)

B, M = CLASSES.index("benign"), CLASSES.index("malignant")


def test_graded_readings_fall_back_to_the_whole_scan_where_the_mask_is_empty():
    malignant = np.array([False, True, False, True])
    whole = np.array([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.3, 0.7, 0.0], [0.7, 0.3, 0.0]])  # wrong on the last two
    crop = np.zeros((4, 3))
    crop[:, M] = [-3.0, 3.0, -3.0, 3.0]  # right everywhere
    crop[3] = np.nan  # no lesion found: the whole scan's wrong answer stays
    truth = np.zeros((4, 3))
    truth[:, M] = [-1.0, 1.0, -1.0, 1.0]
    s = lesion_crop.scores({"whole": whole, "truth": truth, "unet": crop}, malignant)
    assert s["whole scan (twin)"] == pytest.approx(0.25)
    assert s["crop alone, reference mask"] == 1.0
    assert s["graded, U-Net mask, share 1.0"] == 1.0  # the unread scan keeps its whole-scan 0.3, above both benign crops
    assert set(s) == {"whole scan (twin)", "crop alone, reference mask",
                      *(f"graded, U-Net mask, share {a}" for a in lesion_crop.SHARES)}


def test_crops_follow_the_given_masks_and_an_empty_one_is_refused_by_name(tmp_path):
    from models.data import load_cases
    from models.preprocess import decode_lesions
    from tests.conftest import write_busi

    cases = load_cases([write_busi(tmp_path / "busi", {"benign": 2, "malignant": 1, "normal": 0})])
    spec = lesion_crop.grader_spec(0.3)
    own = decode_lesions(cases, spec, progress=False)
    assert own.images.shape == (3, 224, 224) and own.masks.any(axis=(1, 2)).all()
    gray = lesion_crop.read_case(cases[0])[0]
    assert gray.shape == (48, 64)
    corner = np.zeros(gray.shape, bool)
    corner[:4, :4] = True  # a segmenter's box elsewhere: the crop follows it, not the reference mask
    given = decode_lesions(cases[:1], spec, progress=False, boxes_from=[corner])
    assert np.array_equal(given.images[0], lesion_crop.resize_scan(gray[:6, :6], 224))
    with pytest.raises(ValueError, match=str(cases[0].image_path).replace("(", r"\(").replace(")", r"\)")):
        decode_lesions(cases[:1], spec, progress=False, boxes_from=[np.zeros(gray.shape, bool)])


def test_run_names_carry_the_margin_and_the_augmentation_and_read_back():
    standard = lesion_crop.run_dir("busi", 0.3, 0)
    scanner = lesion_crop.run_dir("busbra", 0.25, 2, "scanner")
    assert (standard.name, scanner.name) == ("busi-m30-s0", "busbra-m25scanner-s2")
    for run, made in ((standard, (0.3, "standard")), (scanner, (0.25, "scanner"))):
        source, tag, seed = run.name.split("-")  # how evaluate reads a run's name
        assert lesion_crop.run_tag(tag) == made
