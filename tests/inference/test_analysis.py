"""The analysis engine on shipped (random-initialised) weights: contract, sizes, determinism, review."""
import io
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models import weights
from models.inference.analysis import Analyzer
from models.data.masks import dice_iou
from models.inference.review import MIN_SEGMENTER_AGREEMENT, dissent, review_reasons
from models.inference.scan import read_scan
from models.zoo import build_model

MODELS = ("resnet18", "efficientnet_lite0", "unet_lite0", "segformer_b0")


def ship_random(folder, names=MODELS):
    """Ship untrained models through the real export path (what the tests need is the plumbing)."""
    for k, name in enumerate(names):
        torch.manual_seed(k)
        run = folder / "runs" / name
        run.mkdir(parents=True)
        torch.save({"model": build_model(name, init=None).state_dict(), "epoch": 1, "score": 0.5,
                    "config": {"model": name}}, run / "best.pt")
        weights.ship(name, folder / "runs", folder / "weights")
    return folder / "weights"


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    return Analyzer(ship_random(tmp_path_factory.mktemp("a")))


def png_scan(h=150, w=210, seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return read_scan(buf.getvalue(), name="case.png")


def test_analysis_contract(analyzer):
    scan = png_scan()
    a = analyzer.analyze(scan)
    assert a.label in a.probabilities and sum(a.probabilities.values()) == pytest.approx(1)
    assert set(a.per_model) == {"resnet18", "efficientnet_lite0"}
    assert set(a.segmenter_maps) == {"unet_lite0", "segformer_b0"}
    assert a.mask.shape == scan.shape == a.lesion_probability.shape and a.mask.dtype == bool
    assert all(m.shape == scan.shape for m in a.segmenter_maps.values())
    assert 0 <= a.uncertainty <= 1
    assert a.review == bool(a.review_reasons)
    assert set(a.model_versions) == set(MODELS) and all(len(v) == 12 for v in a.model_versions.values())


def test_same_scan_same_result(analyzer):
    scan = png_scan(seed=3)
    a, b = analyzer.analyze(scan), analyzer.analyze(scan)
    assert a.probabilities == b.probabilities and np.array_equal(a.mask, b.mask)


def test_review_flags_disagreement(analyzer):
    """The reason fires exactly when classifiers holding half the weight or more pick another class: an even
    split always, the lighter member's dissent never, its outvoting the heavier one always."""
    engine = Analyzer(analyzer.manifest.folder)
    for weights_ in ({"resnet18": 0.5, "efficientnet_lite0": 0.5}, {"resnet18": 0.3, "efficientnet_lite0": 0.7}):
        engine.fusion = replace(engine.fusion, class_weights=weights_)
        seen = set()
        for seed in range(6):
            a = engine.analyze(png_scan(seed=seed))
            picks = {n: max(p, key=p.get) for n, p in a.per_model.items()}
            against = sum(w for n, w in weights_.items() if picks[n] != a.label) / sum(weights_.values())
            flagged = any("classifiers disagree" in r for r in a.review_reasons)
            assert flagged == (against >= 0.5), (weights_, seed, picks, a.label)
            seen.add((len(set(picks.values())) > 1, flagged))
        when_they_differ = {flagged for members_differ, flagged in seen if members_differ}
        if weights_["resnet18"] == 0.5:
            assert when_they_differ == {True}, "an even split is always enough dissent"
        else:
            assert False in when_they_differ, "the lighter member's dissent alone should be seen, and not flag"


def test_members_with_little_weight_do_not_raise_the_disagreement_flag(analyzer):
    quiet = Analyzer(analyzer.manifest.folder)
    scans = [png_scan(seed=s) for s in range(12)]
    split = [s for s in scans if len({max(p, key=p.get) for p in analyzer.analyze(s).per_model.values()}) > 1]
    assert split, "the random members should disagree on some noise scan"
    quiet.fusion = replace(quiet.fusion, class_weights={"resnet18": 0.02, "efficientnet_lite0": 0.98})
    for scan in split:
        a = quiet.analyze(scan)
        assert set(a.per_model) == {"resnet18", "efficientnet_lite0"}  # still shown
        assert not any("classifiers disagree" in r for r in a.review_reasons)
    loud = replace(quiet.fusion, class_weights={"resnet18": 0.1, "efficientnet_lite0": 0.9})
    assert "resnet18" in loud.voters(a.per_model) and "resnet18" not in quiet.fusion.voters(a.per_model)


def test_a_segmenter_calibrated_to_zero_does_not_raise_the_disagreement_flag(analyzer):
    # untrained, the U-Net's lesion probabilities sit mostly above 0.52 and SegFormer's all below it
    scan, engine = png_scan(), Analyzer(analyzer.manifest.folder)
    engine.fusion = replace(engine.fusion, threshold=0.52, seg_weights={"unet_lite0": 1.0, "segformer_b0": 1.0})
    assert any("segmenters disagree" in r for r in engine.analyze(scan).review_reasons)
    engine.fusion = replace(engine.fusion, seg_weights={"unet_lite0": 1.0, "segformer_b0": 0.0})
    a = engine.analyze(scan)
    assert set(a.segmenter_maps) == {"unet_lite0", "segformer_b0"}  # still shown
    assert not any("segmenters disagree" in r for r in a.review_reasons)


def test_explain_on_demand(analyzer):
    scan = png_scan()
    heat = analyzer.explain(scan, "resnet18", "benign", "Grad-CAM++")
    assert heat.cam.shape == scan.shape and heat.target_class == "benign"
    with pytest.raises(ValueError, match="not a shipped classifier"):
        analyzer.explain(scan, "unet_lite0")


def test_no_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shipped models"):
        Analyzer(tmp_path)


def test_stage_timings_are_recorded_on_request(analyzer):
    timings = {}
    analyzer.analyze(png_scan(), timings)
    assert {f"model {n}" for n in MODELS} | {"preprocess", "fusion", "post-processing"} <= set(timings)
    assert all(v >= 0 for v in timings.values())


def test_onnxruntime_engine_matches_the_torch_engine(analyzer):
    """The default CPU backend (ONNX Runtime) gives the PyTorch models' answer."""
    assert analyzer.backend == "onnxruntime"
    reference = Analyzer(analyzer.manifest.folder, backend="torch")
    scan = png_scan(seed=7)
    a, b = analyzer.analyze(scan), reference.analyze(scan)
    for name, probs in b.per_model.items():
        assert a.per_model[name] == pytest.approx(probs, abs=1e-4)
    for name, lesion in b.segmenter_maps.items():
        np.testing.assert_allclose(a.segmenter_maps[name], lesion, atol=1e-4)
    assert (a.mask != b.mask).mean() < 1e-3  # only pixels within 1e-4 of the threshold may flip


def test_unknown_backend_is_a_clear_error(analyzer):
    with pytest.raises(ValueError, match="unknown inference backend 'tvm'"):
        Analyzer(analyzer.manifest.folder, backend="tvm")


def test_warm_up_prepares_every_model(tmp_path):
    engine = Analyzer(ship_random(tmp_path, ("resnet18", "unet_lite0")))
    engine.warm_up()
    assert set(engine._runners) == {"resnet18", "unet_lite0"}


def _p(benign, malignant, normal):
    return np.array([benign, malignant, normal])


LESION = np.zeros((8, 8), bool)
LESION[2:5, 2:5] = True
EMPTY = np.zeros((8, 8), bool)


@pytest.mark.parametrize("probs, mask, expected", [
    (_p(0.9, 0.05, 0.05), LESION, []),
    (_p(0.5, 0.3, 0.2), LESION, ["ensemble unsure: top probability 0.50 < 0.65"]),
    (_p(0.64, 0.3, 0.06), LESION, ["ensemble unsure: top probability 0.64 < 0.65"]),
    (_p(0.65, 0.3, 0.05), LESION, []),  # exactly the threshold is sure enough: "under 0.65" flags
    (_p(0.66, 0.3, 0.04), LESION, []),
    (_p(0.05, 0.05, 0.9), LESION, ["called normal, yet a lesion is segmented"]),
    (_p(0.05, 0.05, 0.9), EMPTY, []),
    (_p(0.05, 0.9, 0.05), EMPTY, ["called malignant, yet no lesion is segmented"]),
    (_p(0.05, 0.9, 0.05), None, []),  # no segmenter shipped: nothing to compare with
    (np.full(3, np.nan), None, ["ensemble unsure: top probability nan < 0.65"]),  # a broken output is not sure
])
def test_each_review_reason_fires_exactly_when_it_should(probs, mask, expected):
    assert review_reasons(probs, {}, [], mask) == expected


def test_review_reasons_for_disagreeing_members():
    probs = _p(0.9, 0.05, 0.05)  # called benign
    outvoted = {"a": ("benign", 0.4), "b": ("malignant", 0.35), "c": ("normal", 0.25)}
    assert review_reasons(probs, outvoted, [], LESION) == [
        "classifiers disagree: members with 0.60 of the weight pick another class "
        "(a says benign, b says malignant, c says normal)"]
    assert review_reasons(probs, {"a": ("benign", 0.5), "b": ("malignant", 0.5)}, [], LESION) != []  # half is enough
    assert review_reasons(probs, {"a": ("benign", 0.6), "b": ("malignant", 0.4)}, [], LESION) == []  # a minority
    assert review_reasons(probs, {"a": ("benign", 0.5), "b": ("benign", 0.5)}, [LESION, LESION], LESION) == []
    assert review_reasons(probs, {}, [LESION, EMPTY], LESION) == [
        "segmenters disagree: mean pairwise Dice 0.00 < 0.6"]
    overlap = np.zeros((8, 8), bool)
    overlap[2:5, 2:3] = True  # Dice 0.5 with LESION: too little agreement
    assert review_reasons(probs, {}, [LESION, overlap], LESION) == [
        "segmenters disagree: mean pairwise Dice 0.50 < 0.6"]
    overlap[2:5, 3] = True  # Dice 0.8: enough, no reason
    assert review_reasons(probs, {}, [LESION, overlap], LESION) == []
    assert dissent("benign", outvoted) == pytest.approx(0.6) and dissent("normal", outvoted) == pytest.approx(0.75)


def test_the_review_thresholds_are_inclusive_where_the_rule_says_so():
    """The boundaries `reports/review_flag.py` chose: agreement of exactly 0.6 is enough, and a lone segmenter
    has no pair to disagree with (no mean of nothing, no warning). Found by mutation testing (`<=`, `>= 1`)."""
    probs = _p(0.9, 0.05, 0.05)
    a, b = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    a[0, :5] = True
    b[0, 2:7] = True  # 3 of 5 pixels shared: Dice exactly 0.6
    assert dice_iou(a, b)[0] == MIN_SEGMENTER_AGREEMENT
    assert review_reasons(probs, {}, [a, b], a) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert review_reasons(probs, {}, [LESION], LESION) == []
        assert review_reasons(probs, {}, [EMPTY], LESION) == []


def test_the_engine_flags_a_call_its_mask_contradicts(analyzer):
    scan, engine = png_scan(seed=11), Analyzer(analyzer.manifest.folder)
    engine.fusion = replace(engine.fusion, threshold=1.01)  # nothing can be segmented
    a = engine.analyze(scan)
    assert not a.mask.any()
    if a.label != "normal":
        assert f"called {a.label}, yet no lesion is segmented" in a.review_reasons
    engine.fusion = replace(engine.fusion, threshold=-0.01)  # everything is lesion
    b = engine.analyze(scan)
    assert b.mask.all() and b.label == a.label
    if b.label == "normal":
        assert "called normal, yet a lesion is segmented" in b.review_reasons
    contradictions = [r for r in (*a.review_reasons, *b.review_reasons) if ", yet " in r]
    assert len(contradictions) == 1, contradictions  # one of the two masks contradicts the call, never both
