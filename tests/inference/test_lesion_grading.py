"""The lesion grader: the square it reads around a mask, and how its benign/malignant split enters the ensemble."""
import dataclasses
import shutil

import numpy as np
import pytest

from models import weights
from models.data.records import CLASSES
from models.data.splits import load_verified
from models.inference.ensemble import Fusion, predict_cases
from models.preprocess import lesion_box, lesion_crop
from models.training import calibrate, evaluate, train
from models.zoo import get_spec
from tests.training.test_pipeline import world  # noqa: F401 - the shared synthetic train/ship fixture

B, M, N = (CLASSES.index(c) for c in ("benign", "malignant", "normal"))


def test_the_box_is_a_square_around_the_lesion_widened_by_the_margin_and_kept_inside_the_scan():
    mask = np.zeros((100, 200), bool)
    mask[40:60, 90:100] = True  # 20 tall, 10 wide
    t, l, b, r = lesion_box(mask, 0.5)
    assert (b - t, r - l) == (40, 40)  # the longer side, widened by half of it on each side
    assert (t + b) / 2 == 50 and (l + r) / 2 == 95  # centred on the lesion
    mask[:] = False
    mask[0:10, 190:200] = True  # in the corner: moved inside, not cut
    t, l, b, r = lesion_box(mask, 1.0)
    assert (t, b, r) == (0, 30, 200) and r - l == 30
    mask[:] = False
    mask[10:90, 0:200] = True  # wider than the scan is tall: cut to the scan
    assert lesion_box(mask, 0.3) == (0, 0, 100, 200)
    assert lesion_box(np.zeros((5, 5), bool), 0.3) is None


def test_the_crop_is_the_graders_input_size_and_none_without_a_lesion():
    spec = get_spec("lesion_lite0")
    gray = np.random.default_rng(0).integers(0, 255, (120, 160), dtype=np.uint8)
    mask = np.zeros_like(gray, bool)
    assert lesion_crop(gray, mask, spec) is None
    mask[50:70, 60:90] = True
    assert lesion_crop(gray, mask, spec).shape == (spec.input_size, spec.input_size)


def _fusion(share: float) -> Fusion:
    return Fusion({"g": 1.0}, {}, {}, grade_share=share)


def test_grading_resplits_only_the_lesion_probability_where_a_lesion_was_read():
    probs = np.array([[0.3, 0.1, 0.6], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    logits = np.zeros((3, 3))
    logits[0, [B, M]] = [0.0, np.log(3)]  # the grader: 3:1 malignant
    logits[1, [B, M]] = [np.log(4), 0.0]  # 4:1 benign
    logits[2] = np.nan  # no lesion found
    for share in (0.0, 0.4, 1.0):
        out = _fusion(share).grade(probs, {"g": logits})
        assert out.sum(1) == pytest.approx(1.0)
        assert out[:, N] == pytest.approx(probs[:, N])  # the normal call stays the classifiers'
        assert out[2] == pytest.approx(probs[2])
    assert _fusion(0.0).grade(probs, {"g": logits}) == pytest.approx(probs)
    full = _fusion(1.0).grade(probs, {"g": logits})
    assert full[0, [B, M]] == pytest.approx([0.1, 0.3])  # the lesion's 0.4 split 1:3
    assert full[1, [B, M]] == pytest.approx([0.64, 0.16])
    half = _fusion(0.5).grade(probs, {"g": logits})
    assert half[0, M] == pytest.approx(0.4 * (0.5 * 0.25 + 0.5 * 0.75))
    # classify applies it; without grades it is the plain weighted mean
    per_model, fused = _fusion(1.0).classify({"c": np.log(probs)}, {"g": logits})
    assert set(per_model) == {"c"} and fused == pytest.approx(full)


@pytest.fixture(scope="module")
def graded(world, tmp_path_factory):  # noqa: F811
    """The pipeline's synthetic weights plus a lesion grader trained one epoch and shipped."""
    root, data, split_path, runs, wdir = world
    out = tmp_path_factory.mktemp("graded")
    shutil.copytree(wdir, out / "weights")
    assert train.main(["--models", "lesion_lite0", "--data", *map(str, data), "--split", str(split_path),
                       "--runs", str(out / "runs"), "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    assert weights.ship("lesion_lite0", out / "runs", out / "weights")
    return data, split_path, weights.Manifest.read(out / "weights")


def test_a_grader_trains_on_lesion_crops_and_is_calibrated_through_the_fitted_mask(graded):
    data, split_path, manifest = graded
    assert manifest.shipped("grade") == ["lesion_lite0"]
    assert manifest.models["lesion_lite0"]["input"]["crop_margin"] == get_spec("lesion_lite0").crop_margin
    split, cases = load_verified(data, split_path, progress=False)
    val = split.select(cases, "val")
    preds = predict_cases(manifest, val, split.groups, progress=False, grade=False)
    assert not preds.grade_logits
    # a perfect segmenter: the grader reads every validation lesion and nothing on the normal scans
    perfect = dataclasses.replace(preds, seg_probs={"unet_lite0": preds.masks.astype(np.float32)})
    fitted = calibrate.calibrate(manifest, perfect, split.fingerprints, cases=val)
    assert fitted["grade_found"] == 1.0
    assert fitted["grade_share"] in calibrate.GRADE_SHARES
    assert fitted["grade_val_nll"]["with"] <= fitted["grade_val_nll"]["without"]
    assert manifest.models["lesion_lite0"]["temperature"] > 0
    again = predict_cases(weights.Manifest.read(manifest.folder), val, split.groups, progress=False)
    read = ~np.isnan(again.grade_logits["lesion_lite0"]).any(1)
    assert read.shape == (len(val),)
    # an adaptation's refit without the scans keeps the graders' share
    kept = calibrate.calibrate(manifest, preds, split.fingerprints)
    assert kept["grade_share"] == fitted["grade_share"]


def test_evaluation_and_the_analysis_use_the_grader(graded, monkeypatch):
    from models.inference.analysis import Analyzer
    from tests.inference.test_analysis import png_scan

    data, split_path, manifest = graded
    fitted = manifest.ensemble["fitted"]
    manifest.ensemble["fitted"] = {**fitted, "grade_share": 1.0, "threshold": 0.5}
    manifest.write()
    assert evaluate.main(["--data", *map(str, data), "--split", str(split_path), "--weights", str(manifest.folder),
                          "--n-boot", "10", "--split-name", "val"]) == 0
    analyzer = Analyzer(manifest.folder)
    assert analyzer.graders == ["lesion_lite0"]
    scan = png_scan(96, 128, seed=1)
    disc = np.zeros((96, 128), np.float32)
    disc[30:60, 40:80] = 1.0
    monkeypatch.setattr(Fusion, "segment", lambda self, maps: disc)
    timings = {}
    a = analyzer.analyze(scan, timings)
    assert a.mask.any() and set(a.lesion_grade) == {"benign", "malignant"}
    assert sum(a.lesion_grade.values()) == pytest.approx(1.0)
    lesion = a.probabilities["benign"] + a.probabilities["malignant"]
    # with the whole share, the ensemble's lesion probability is split as the grader splits it
    assert a.probabilities["malignant"] == pytest.approx(lesion * a.lesion_grade["malignant"], abs=1e-5)
    assert "lesion grading" in timings and "lesion_lite0" not in a.per_model
    monkeypatch.setattr(Fusion, "segment", lambda self, maps: np.zeros((96, 128), np.float32))
    assert analyzer.analyze(scan).lesion_grade is None


def test_the_grader_is_scored_alone_on_the_lesions_it_read():
    from models.inference.ensemble import CasePredictions
    labels = np.array([B, M, B, M, N, M])
    logits = np.zeros((6, 3))
    logits[:, M] = [-2.0, 2.0, -1.0, 1.0, 3.0, -3.0]  # right on the first four
    logits[5] = np.nan  # the malignant scan it would get wrong: no lesion found there
    preds = CasePredictions(tuple("abcdef"), ("busi",) * 6, tuple("abcdef"), labels, {}, {}, np.zeros((6, 4, 4), bool),
                            grade_logits={"g": logits})
    m = evaluate.grader_metrics(preds, _fusion(1.0), n_boot=0)["g"]
    assert m.n == 4 and m.averaged_over == ("benign", "malignant")  # the normal scan and the unread one left out
    assert m.scores["malignant_auc"].value == 1.0 and m.scores["macro_f1"].value == 1.0
