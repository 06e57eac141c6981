"""Train -> ship -> verify -> calibrate -> evaluate on a small synthetic dataset."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models import weights
from models.data import load_cases
from models.data.splits import make_split, save_split
from models.data.survey import survey
from models.inference.ensemble import Fusion, softmax
from models.inference.review import review_reasons
from models.training import calibrate, evaluate, train
from models.zoo import get_spec
from tests.conftest import write_busbra, write_busi


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    busi = write_busi(root / "data" / "busi", {"benign": 20, "malignant": 8, "normal": 6})
    busbra = write_busbra(root / "data" / "busbra", patients=15)
    cases = load_cases([busi, busbra])
    split_path = save_split(make_split(cases, survey(cases, progress=False)), root / "split.json")
    runs, wdir = root / "runs", root / "weights"
    for name in ("efficientnet_lite0", "unet_lite0"):
        assert train.main(["--models", name, "--data", str(busi), str(busbra), "--split", str(split_path),
                           "--runs", str(runs), "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
        assert weights.ship(name, runs, wdir)
    return root, [busi, busbra], split_path, runs, wdir


def test_shipped_weights_are_fp16_with_checksums(world):
    _, _, _, runs, wdir = world
    manifest = weights.Manifest.read(wdir)
    assert manifest.shipped() == ["efficientnet_lite0", "unet_lite0"]
    from safetensors.torch import load_file
    state = load_file(wdir / "efficientnet_lite0.safetensors")
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    model = manifest.load("efficientnet_lite0")
    assert not model.training
    entry = manifest.models["unet_lite0"]
    assert entry["sha256"] == weights.sha256_file(wdir / "unet_lite0.safetensors")
    assert entry["input"]["input_size"] == get_spec("unet_lite0").input_size
    assert entry["command"].startswith("sonomark train --models unet_lite0 --epochs 1 --batch-size 8")
    # not better on validation: not shipped again
    assert not weights.ship("unet_lite0", runs, wdir)


def test_a_fine_tuned_model_names_the_weights_it_started_from(world, tmp_path):
    """``--init shipped`` points at the file that shipping overwrites; the manifest keeps its checksum."""
    import shutil

    from safetensors.torch import load_file
    _, _, _, _, wdir = world
    copy = tmp_path / "w"
    shutil.copytree(wdir, copy)
    old = weights.Manifest.read(copy).models["unet_lite0"]
    config = {**old["train_config"], "init": str(copy / "unet_lite0.safetensors"), "balance_sources": True}
    (tmp_path / "runs" / "unet_lite0").mkdir(parents=True)
    torch.save({"model": load_file(copy / "unet_lite0.safetensors"), "epoch": 2, "score": old["val_score"] + 0.01,
                "config": config}, tmp_path / "runs" / "unet_lite0" / "best.pt")
    assert weights.ship("unet_lite0", tmp_path / "runs", copy)
    entry = weights.Manifest.read(copy).models["unet_lite0"]
    assert entry["train_config"]["init"] == "shipped"
    assert entry["train_config"]["init_sha256"] == old["sha256"]
    assert entry["train_config"]["init_command"] == old["command"]
    assert entry["command"].endswith("--init shipped --balance-sources")
    from models.training import model_card
    assert f"fine-tuned from the weights with sha256 `{old['sha256'][:12]}`" in model_card.render(copy)


def test_calibrate_then_evaluate(world):
    _, data, split_path, _, wdir = world
    assert calibrate.main(["--data", *map(str, data), "--split", str(split_path), "--weights", str(wdir)]) == 0
    manifest = weights.Manifest.read(wdir)
    fitted = manifest.ensemble["fitted"]
    assert fitted["split"] == "val"
    # the threshold is the grid's best on validation, and the recorded Dice is that best
    from models.data.splits import load_verified
    from models.inference.ensemble import predict_cases
    split, cases = load_verified(data, split_path, progress=False)
    preds = predict_cases(manifest, split.select(cases, "val"), split.groups, progress=False)
    dice = {float(t): calibrate.mean_dice(preds.seg_probs["unet_lite0"], preds.masks, t) for t in calibrate.THRESHOLDS}
    assert fitted["seg_weights"] == {"unet_lite0": 1.0}
    assert dice[fitted["threshold"]] == max(dice.values())
    assert fitted["val_mean_dice"] == pytest.approx(max(dice.values()), abs=1e-4)
    assert manifest.models["efficientnet_lite0"]["temperature"] > 0
    assert evaluate.main(["--data", *map(str, data), "--split", str(split_path), "--weights", str(wdir),
                          "--n-boot", "20"]) == 0
    metrics = json.loads((wdir / "metrics.json").read_text())
    assert set(metrics) == {"busi", "busbra"}
    busi = metrics["busi"]
    assert busi["split"] == "test" and len(busi["fingerprint"]) == 64
    assert busi["weights"] == weights.Manifest.read(wdir).identity()  # the weights and calibration measured
    assert set(busi["classification"]) == {"efficientnet_lite0", "ensemble"}
    assert set(busi["segmentation"]) == {"unet_lite0", "ensemble"}
    assert metrics["busbra"]["classification"]["ensemble"]["averaged_over"] == ["benign", "malignant"]
    # every case's answer is recorded, and its Dice entries are the ensemble's per-lesion Dice
    test_ids = {c.case_id for c in split.select(cases, "test") if c.source == "busi"}
    assert set(busi["cases"]) == test_ids and len(test_ids) == busi["n_cases"]
    answers = list(busi["cases"].values())
    assert all(len(a["probs"]) == 3 and abs(sum(a["probs"]) - 1) < 1e-3 for a in answers)
    assert [a["dice"] for a in answers if a["dice"] is not None] == pytest.approx(
        busi["segmentation"]["ensemble"]["dice"], abs=1e-4)
    assert all((busi["cases"][c.case_id]["dice"] is None) == (c.label == "normal") for c in cases if c.case_id in test_ids)
    assert all(0 <= a["mask_share"] <= 1 for a in answers)
    card = (wdir / "README.md").read_text()
    assert "not a medical device" in card and "| efficientnet_lite0 |" in card and "| resnet18 |" in card
    assert "Floors: macro_f1" in card and busi["fingerprint"][:12] in card
    assert "normal scans with a false lesion" in card  # BUSI has normals: the segmenters' false alarms
    assert "- `unet_lite0`: `sonomark train --models unet_lite0 --epochs 1" in card
    for png in ("busi_confusion.png", "busi_roc_reliability.png", "busi_dice.png", "busi_worst.png"):
        assert (wdir / "plots" / png).stat().st_size > 1000
    assert "plots/busi_worst.png" in card
    shipped_report = {png.name: png.read_bytes() for png in (wdir / "plots").glob("*.png")}
    assert evaluate.main(["--data", *map(str, data), "--split", str(split_path), "--weights", str(wdir),
                          "--n-boot", "20", "--split-name", "val"]) == 0
    assert json.loads((wdir / "metrics_val.json").read_text())["busi"]["split"] == "val"
    assert (wdir / "plots" / "val" / "busi_worst.png").stat().st_size > 1000
    assert {png.name: png.read_bytes() for png in (wdir / "plots").glob("*.png")} == shipped_report  # test report kept


def test_segmenters_of_different_input_sizes_are_fused_at_the_largest(world, monkeypatch):
    """Calibration and evaluation fuse maps as the analysis does: each resized, here to the largest input, and
    a padding member's taken to the squashed frame."""
    import dataclasses

    import cv2

    from models import zoo
    from models.data.splits import load_verified
    from models.inference.ensemble import predict_cases, run_model
    from models.preprocess import decode_cases, read_case, reframe
    _, data, split_path, _, wdir = world
    split, cases = load_verified(data, split_path)
    val = split.select(cases, "val")
    model = weights.Manifest.read(wdir).load("unet_lite0")
    specs = {n: dataclasses.replace(get_spec("unet_lite0"), name=n, input_size=s) for n, s in (("small", 64), ("big", 96))}

    class TwoSizes:
        folder = Path("two-sizes")

        def shipped(self, task=None):
            return ["small", "big"]

        def load(self, name, device="cpu"):
            return model

        def int8_ranges(self, name):
            return None

    monkeypatch.setattr(zoo, "get_spec", specs.__getitem__)
    preds = predict_cases(TwoSizes(), val, split.groups, progress=False)
    assert preds.masks.shape == (len(val), 96, 96)
    assert {p.shape for p in preds.seg_probs.values()} == {(len(val), 96, 96)}
    small = run_model(model, specs["small"], decode_cases(val, 64, split.groups, progress=False).images)
    expected = cv2.resize(small[0], (96, 96), interpolation=cv2.INTER_LINEAR)
    assert preds.seg_probs["small"][0] == pytest.approx(expected, abs=1e-6)
    assert preds.masks.sum() == decode_cases(val, 96, split.groups, progress=False).masks.sum()
    assert preds.seg_fit == "squash"
    # a padding member's maps join the squashed scan's frame, each placed as the analysis places it on the scan
    specs["big"] = dataclasses.replace(specs["big"], fit="pad")
    mixed = predict_cases(TwoSizes(), val, split.groups, progress=False)
    squashed = decode_cases(val, 96, split.groups, progress=False)
    assert mixed.seg_fit == "squash" and np.array_equal(mixed.masks, squashed.masks)
    assert mixed.seg_probs["small"] == pytest.approx(preds.seg_probs["small"])
    padded = decode_cases(val, 96, split.groups, progress=False, fit="pad")
    big = run_model(model, specs["big"], padded.images)
    assert padded.shapes == squashed.shapes and squashed.shapes[0] == read_case(val[0])[0].shape  # 48 x 64: pads
    for k in (0, len(val) - 1):
        assert mixed.seg_probs["big"][k] == pytest.approx(reframe(big[k], squashed.shapes[k], 96, "pad"), abs=1e-6)
    assert not np.allclose(mixed.seg_probs["big"], preds.seg_probs["big"], atol=0.05)


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    assert calibrate.fit_temperature(true_logits * 3, y) == pytest.approx(3, rel=0.1)


def test_class_weights_prefer_the_informative_model():
    y = np.array([0, 1, 2] * 50)
    good = np.eye(3)[y] * 0.8 + 0.2 / 3
    noise = np.full((150, 3), 1 / 3)
    w = calibrate.fit_class_weights({"good": good, "noise": noise}, y)
    assert w["good"] > 0.9


def test_class_weights_leave_equal_shares_when_five_similar_members_differ():
    """Five members, one somewhat better: the fit must move off equal weights (Nelder-Mead's default first
    steps from 0 once stopped there, which would deny a new member the say it earns)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)

    def member(strength: float, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).normal(0, 1, (300, 3))
        z[np.arange(300), y] += strength
        return softmax(z)

    probs = {f"weak{i}": member(1.0, i + 1) for i in range(4)} | {"better": member(1.5, 9)}
    w = calibrate.fit_class_weights(probs, y)
    fused = sum(w[n] * p for n, p in probs.items())
    equal = sum(p / 5 for p in probs.values())
    assert w["better"] > 0.5
    assert calibrate.nll(fused, y) < calibrate.nll(equal, y) - 0.02


def test_segmentation_fit_picks_weights_and_threshold():
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    good = masks * 0.7 + 0.1
    bad = np.full_like(good, 0.6)
    w, t, dice = calibrate.fit_segmentation({"good": good, "bad": bad}, masks)
    assert w["good"] >= 0.75 and dice == pytest.approx(1.0) and t < 0.8


def test_fusion_weights_and_temperatures():
    f = Fusion({"a": 2.0}, {"a": 3, "b": 1}, {"s": 1, "t": 1}, threshold=0.4)
    logits = {"a": np.array([[2.0, 0, 0]]), "b": np.array([[0, 0, 0.0]])}
    per, fused = f.classify(logits)
    assert per["a"][0, 0] == pytest.approx(softmax(np.array([[1.0, 0, 0]]))[0, 0])
    assert fused == pytest.approx(0.75 * per["a"] + 0.25 * per["b"])
    assert f.segment({"s": np.ones((2, 2)), "t": np.zeros((2, 2))}) == pytest.approx(np.full((2, 2), 0.5))
    assert f.voters(["a", "b"]) == ["a", "b"] and f.voters([]) == []  # a segment-only ensemble has no voters
    g = Fusion({}, {}, {"s": 1, "t": 1, "zero": 0})
    assert g.seg_voters(["s", "t", "zero"]) == ["s", "t"]  # a member calibrated to 0 has no say


def test_votes_carry_each_voters_share_of_all_the_classifiers_weight():
    """A member under MIN_SAY has no vote, but its weight still counts in the others' shares: two members
    at 0.48 each are not half each, so neither alone can outvote the call."""
    f = Fusion({}, {"a": 0.48, "b": 0.48, "c": 0.04}, {})
    probs = {"a": np.array([0.8, 0.1, 0.1]), "b": np.array([0.1, 0.8, 0.1]), "c": np.array([0.1, 0.1, 0.8])}
    assert f.votes(probs) == {"a": ("benign", pytest.approx(0.48)), "b": ("malignant", pytest.approx(0.48))}
    assert review_reasons(np.array([0.8, 0.15, 0.05]), f.votes(probs), [], None) == []  # 0.48 dissents
    assert f.votes({"a": probs["a"]}) == {"a": ("benign", pytest.approx(1.0))}  # alone, it holds all the weight
    assert f.votes({}) == {}
    # an even split is half whichever way the shares' rounding falls: {0.1, 0.2} against 0.3 of 0.6
    even = Fusion({}, {"x": 0.1, "y": 0.2, "z": 0.3}, {})
    split = {"x": probs["a"], "y": probs["a"], "z": probs["b"]}
    for label, probs_ in (("benign", [0.6, 0.3, 0.1]), ("malignant", [0.3, 0.6, 0.1])):
        reasons = review_reasons(np.array(probs_), even.votes(split), [], None)
        assert any(r.startswith("classifiers disagree") for r in reasons), (label, reasons)


def test_fine_tuning_from_shipped_weights_verifies_their_checksum(world, tmp_path):
    import shutil
    _, data, split_path, _, wdir = world
    copy = tmp_path / "w"
    shutil.copytree(wdir, copy)
    blob = bytearray((copy / "unet_lite0.safetensors").read_bytes())
    blob[-1] ^= 0xFF  # still a loadable file: only the checksum can tell
    (copy / "unet_lite0.safetensors").write_bytes(bytes(blob))
    argv = ["--models", "unet_lite0", "--data", *map(str, data), "--split", str(split_path), "--runs",
            str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "8", "--quiet", "--init", "shipped"]
    with pytest.raises(weights.WeightsError, match="sha256"):
        train.main([*argv, "--weights", str(copy)])
    assert not (tmp_path / "runs" / "unet_lite0" / "last.pt").exists()


def test_training_and_calibration_never_decode_the_test_split(world, tmp_path, monkeypatch):
    """Every scan decoded for a model is recorded: calibration reads validation only, training train and
    validation only; the test split is left for the evaluation."""
    import shutil

    from models import preprocess
    from models.data.splits import load_verified
    _, data, split_path, _, wdir = world
    split, cases = load_verified(data, split_path, progress=False)
    paths = {name: {c.image_path for c in split.select(cases, name)} for name in ("train", "val", "test")}
    assert all(paths.values()) and not paths["test"] & (paths["train"] | paths["val"])
    read, real = [], preprocess.load_gray
    monkeypatch.setattr(preprocess, "load_gray", lambda path: read.append(path) or real(path))
    copy = tmp_path / "w"
    shutil.copytree(wdir, copy)
    assert calibrate.main(["--data", *map(str, data), "--split", str(split_path), "--weights", str(copy)]) == 0
    assert set(read) == paths["val"]
    assert weights.Manifest.read(copy).ensemble["fitted"]["n_cases"] == len(paths["val"])
    read.clear()
    assert train.main(["--models", "efficientnet_lite0", "--data", *map(str, data), "--split", str(split_path),
                       "--runs", str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    assert set(read) == paths["train"] | paths["val"]


def test_cross_site_evaluates_a_source_with_weights_that_never_saw_it(world, tmp_path, capsys, monkeypatch):
    _, data, split_path, _, wdir = world
    busi, busbra = data
    unseen = tmp_path / "without-busi"
    for name in ("efficientnet_lite0", "unet_lite0"):  # trained, shipped and calibrated on BUS-BRA alone
        assert train.main(["--models", name, "--data", str(busbra), "--split", str(split_path), "--runs",
                           str(tmp_path / "runs"), "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
        assert weights.ship(name, tmp_path / "runs", unseen)
    assert calibrate.main(["--data", str(busbra), "--split", str(split_path), "--weights", str(unseen)]) == 0
    assert weights.Manifest.read(unseen).ensemble["fitted"]["sources"] == ["busbra"]
    argv = ["--data", str(busi), str(busbra), "--split", str(split_path), "--weights", str(unseen), "--n-boot", "20"]
    assert evaluate.main([*argv, "--cross-site", f"busi={unseen}"]) == 0
    result = json.loads((unseen / "cross_site.json").read_text())
    ev = result["busi"]
    assert ev["split"] == "test" and ev["weights"]["trained_on"] == ["busbra"]
    scores = ev["classification"]["ensemble"]["scores"]
    assert {"macro_f1", "malignant_auc", "normal_recall", "lesion_recall", "ece"} <= set(scores)
    assert {"dice_mean", "empty_rate"} <= set(ev["segmentation"]["ensemble"]["scores"])
    assert {"flagged_share", "error_flagged", "error_unflagged"} == set(ev["review"])
    card = (unseen / "README.md").read_text()
    assert "## Unseen sites (cross-site)" in card and "| busi (" in card and "| busbra | efficientnet_lite0, unet_lite0 |" in card
    assert (unseen / "plots" / "busi_confusion.png").exists() or (unseen / "plots" / "cross_site" / "busi_confusion.png").exists()
    # weights that saw the source cannot stand for an unseen site
    assert evaluate.main([*argv, "--cross-site", f"busi={wdir}"]) == 1
    assert "saw busi" in capsys.readouterr().err
    empty = tmp_path / "nothing-shipped"
    empty.mkdir()
    assert evaluate.main([*argv, "--cross-site", f"busi={empty}"]) == 1
    assert f"--weights {empty}`" in capsys.readouterr().err  # the command to run names the folder
    assert evaluate.main([*argv, "--cross-site", "busi"]) == 2
    # the held-out source's validation split, for choosing across sites; the card keeps showing the test split
    from models import preprocess
    from models.data.splits import load_verified
    split, cases = load_verified(data, split_path, progress=False)
    read, real = [], preprocess.load_gray
    monkeypatch.setattr(preprocess, "load_gray", lambda path: read.append(path) or real(path))
    cards, test_results = [], (unseen / "cross_site.json").read_bytes()
    monkeypatch.setattr(evaluate, "write_card", lambda folder: cards.append(folder))
    assert evaluate.main([*argv, "--cross-site", f"busi={unseen}", "--split-name", "val"]) == 0
    assert set(read) == {c.image_path for c in split.select(cases, "val") if c.source == "busi"}
    val = json.loads((unseen / "cross_site_val.json").read_text())["busi"]
    assert val["split"] == "val" and val["weights"]["trained_on"] == ["busbra"]
    assert not cards and (unseen / "cross_site.json").read_bytes() == test_results  # the card keeps the test split
    assert (unseen / "plots" / "cross_site_val").is_dir()


def test_temperature_and_class_offsets_recover_a_shifted_class_mix():
    """Logits whose class 2 is under-called by a fixed offset: the fit finds the offset back, and
    Fusion applies it (the manifest's class_bias)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    clean = rng.normal(0, 1, (3000, 3)) + 3 * np.eye(3)[y]
    shifted = clean - np.array([0, 0, 2.5])
    t, bias = calibrate.fit_temperature_and_bias(shifted, y, ridge=0)
    # unit-variance noise around a margin of 3: the calibrated logits are 3x these (T = 1/3), and the
    # offset, applied after the temperature, is the shift times 3
    assert t == pytest.approx(1 / 3, abs=0.05) and bias[0] == 0
    assert (bias[2] - bias[1]) * t == pytest.approx(2.5, abs=0.3)
    f = Fusion({"m": t}, {"m": 1.0}, {}, class_bias={"m": tuple(bias)})
    said = f.classify({"m": shifted})[1].argmax(1)
    assert (said[y == 2] == 2).mean() > 0.9 > (softmax(shifted).argmax(1)[y == 2] == 2).mean()


def test_a_member_registered_int8_is_calibrated_on_and_served_from_its_int8_graph(world, tmp_path, monkeypatch):
    """Calibration measures the ranges first and fits the int8 outputs; the engine runs that same graph."""
    import dataclasses
    import shutil

    from models import zoo
    from models.data.splits import load_verified
    from models.inference.analysis import Analyzer
    from models.inference.ensemble import predict_cases, run_model
    from models.preprocess import decode_cases, normalize
    _, data, split_path, _, wdir = world
    copy = tmp_path / "w"
    shutil.copytree(wdir, copy)
    monkeypatch.setitem(zoo.REGISTRY, "efficientnet_lite0", dataclasses.replace(get_spec("efficientnet_lite0"), int8=True))
    before = weights.Manifest.read(copy)
    assert before.int8_ranges("efficientnet_lite0") is None
    assert calibrate.main(["--data", *map(str, data), "--split", str(split_path), "--weights", str(copy)]) == 0
    manifest = weights.Manifest.read(copy)
    ranges = manifest.int8_ranges("efficientnet_lite0")
    assert ranges and "x" in ranges and manifest.int8_ranges("unet_lite0") is None
    assert manifest.identity()["calibration_sha256"] != before.identity()["calibration_sha256"]
    split, cases = load_verified(data, split_path, progress=False)
    val = split.select(cases, "val")[:4]
    preds = predict_cases(manifest, val, split.groups, progress=False)
    spec = get_spec("efficientnet_lite0")
    images = decode_cases(val, spec.input_size, split.groups, progress=False).images
    engine = Analyzer(copy).runner("efficientnet_lite0")
    served = np.concatenate([engine(normalize(torch.from_numpy(image[None]), spec).numpy()) for image in images])
    np.testing.assert_allclose(preds.logits["efficientnet_lite0"], served, rtol=1e-5, atol=1e-5)
    fp32 = run_model(manifest.load("efficientnet_lite0"), spec, images)
    assert np.abs(fp32 - served).max() > 1e-3  # int8, not the fp32 model
    from models.training import model_card
    assert "int8 on the CPU" in model_card.render(copy) and "int8" not in model_card.render(wdir)


def test_distillation_learns_the_other_classifiers_calibrated_probabilities(world, tmp_path):
    """``--distil``: soft targets are the other shipped classifiers' fused, calibrated probabilities, named in
    the run's settings by the manifest's checksum; a run given other targets than cases is refused."""
    from models.data.splits import load_verified
    from models.inference.ensemble import predict_cases
    from models.preprocess import decode_cases
    from models.training import distil
    _, data, split_path, _, wdir = world
    manifest = weights.Manifest.read(wdir)
    assert distil.teachers(manifest, "resnet18") == ["efficientnet_lite0"]
    with pytest.raises(ValueError, match="no shipped classifier other than 'efficientnet_lite0'"):
        distil.teachers(manifest, "efficientnet_lite0")
    split, cases = load_verified(data, split_path, progress=False)
    chosen = split.select(cases, "train")[:10]
    soft = distil.soft_targets(manifest, "resnet18", chosen, split.groups, progress=False)
    logits = predict_cases(manifest, chosen, split.groups, progress=False).logits["efficientnet_lite0"]
    np.testing.assert_allclose(soft, Fusion.from_manifest(manifest).calibrated("efficientnet_lite0", logits), rtol=1e-5)
    runs = tmp_path / "runs"
    assert train.main(["--models", "resnet18", "--data", *map(str, data), "--split", str(split_path), "--runs", str(runs),
                       "--weights", str(wdir), "--distil", "--distil-weight", "0.7", "--epochs", "1", "--batch-size", "4",
                       "--limit", "10", "--quiet"]) == 0
    config = json.loads((runs / "resnet18" / "config.json").read_text())
    assert config["distil"] == distil.teacher_id(manifest) and config["distil_weight"] == 0.7
    assert weights.training_command("resnet18", config).endswith("--distil --distil-weight 0.7")
    spec = get_spec("resnet18")
    arrays = decode_cases(chosen, spec.input_size, split.groups, progress=False)
    run = train.RunConfig.for_model(spec, "cpu", epochs=1, batch_size=4, distil=config["distil"])
    with pytest.raises(ValueError, match="one soft target per training case"):
        train.train_model(spec, arrays, arrays, run, tmp_path / "refused", soft=soft[:5], progress=False)
    with pytest.raises(ValueError, match="one soft target per training case"):
        train.train_model(spec, arrays, arrays, train.RunConfig.for_model(spec, "cpu", epochs=1), tmp_path / "r2",
                          soft=soft, progress=False)


def test_a_segmenter_distils_the_other_segmenters_fused_map_warped_with_its_scan(world, tmp_path):
    """``--distil`` for a segmenter: its targets are the other shipped segmenters' fused lesion maps at its input
    size, and training warps each map exactly as it warps the scan's mask."""
    from models.data.splits import load_verified
    from models.inference.ensemble import predict_cases
    from models.preprocess import decode_cases
    from models.training import distil
    _, data, split_path, _, wdir = world
    manifest = weights.Manifest.read(wdir)
    assert distil.teachers(manifest, "segformer_b0") == ["unet_lite0"]
    with pytest.raises(ValueError, match="no shipped segmenter other than 'unet_lite0'"):
        distil.teachers(manifest, "unet_lite0")
    split, cases = load_verified(data, split_path, progress=False)
    chosen = split.select(cases, "train")[:8]
    soft = distil.soft_targets(manifest, "segformer_b0", chosen, split.groups, progress=False)
    spec = get_spec("segformer_b0")
    assert soft.shape == (8, spec.input_size, spec.input_size) and soft.dtype == np.float32
    maps = predict_cases(manifest, chosen, split.groups, progress=False).seg_probs["unet_lite0"]
    np.testing.assert_allclose(soft, maps, rtol=1e-5, atol=1e-6)
    assert 0 < soft.max() <= 1

    arrays = decode_cases(chosen, spec.input_size, split.groups, progress=False)
    lesion = int(np.argmax(arrays.masks.reshape(8, -1).any(1)))
    assert arrays.masks[lesion].any()
    data_ = train.AugmentedCases(arrays, spec.input_size, train=True, augment="scanner",
                                 soft_maps=arrays.masks.astype(np.float32))
    for seed in range(5):  # the map rides along as the mask's second channel: warped identically
        _, mask, _, _ = data_[(lesion, seed)]
        assert mask.shape == (2, spec.input_size, spec.input_size) and mask.dtype == torch.float32
        assert torch.equal(mask[0], mask[1]) and mask[0].any()
    with pytest.raises(ValueError, match="do not match the masks"):
        train.AugmentedCases(arrays, spec.input_size, train=True, soft_maps=soft[:, :10])

    runs = tmp_path / "runs"
    assert train.main(["--models", "segformer_b0", "--data", *map(str, data), "--split", str(split_path), "--runs",
                       str(runs), "--weights", str(wdir), "--distil", "--epochs", "1", "--batch-size", "4",
                       "--limit", "8", "--quiet"]) == 0
    config = json.loads((runs / "segformer_b0" / "config.json").read_text())
    assert config["distil"] == distil.teacher_id(manifest)
    assert weights.training_command("segformer_b0", config).endswith("--distil")
    with pytest.raises(SystemExit, match="no shipped segmenter other than 'unet_lite0'"):
        train.main(["--models", "unet_lite0", "--data", *map(str, data), "--split", str(split_path), "--runs",
                    str(runs), "--weights", str(wdir), "--distil", "--epochs", "1", "--limit", "8", "--quiet"])
    run = train.RunConfig.for_model(spec, "cpu", epochs=1, batch_size=4, distil=config["distil"])
    trained = {}
    for target in (0.0, 1.0):  # the same run taught other maps learns other weights: the maps are in the loss
        folder = tmp_path / f"taught-{target}"
        train.train_model(spec, arrays, arrays, run, folder, soft=np.full_like(soft, target), progress=False)
        trained[target] = torch.load(folder / "last.pt", weights_only=False)["model"]
    assert any(not torch.equal(trained[0.0][k], trained[1.0][k]) for k in trained[0.0])


def test_ship_refuses_weights_that_overflow_fp16(world, tmp_path):
    """A batch norm's running variance above fp16's 65504 turned into inf in the shipped file (the VGG19 U-Net of
    2026-11-24 then left every mask empty): ship must stop and say which tensor."""
    import shutil

    from safetensors.torch import load_file
    _, _, _, _, wdir = world
    copy = tmp_path / "w"
    shutil.copytree(wdir, copy)
    old = weights.Manifest.read(copy).models["unet_lite0"]
    state = {k: v.float() for k, v in load_file(copy / "unet_lite0.safetensors").items()}
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = 1e7
    (tmp_path / "runs" / "unet_lite0").mkdir(parents=True)
    torch.save({"model": state, "epoch": 2, "score": old["val_score"] + 0.01, "config": old["train_config"]},
               tmp_path / "runs" / "unet_lite0" / "best.pt")
    with pytest.raises(weights.WeightsError, match=f"{key}.*do not fit fp16"):
        weights.ship("unet_lite0", tmp_path / "runs", copy)
    assert weights.Manifest.read(copy).models["unet_lite0"]["sha256"] == old["sha256"]  # nothing shipped
    state[key][0] = 6e4  # within fp16: ships
    torch.save({"model": state, "epoch": 2, "score": old["val_score"] + 0.01, "config": old["train_config"]},
               tmp_path / "runs" / "unet_lite0" / "best.pt")
    assert weights.ship("unet_lite0", tmp_path / "runs", copy)


def test_training_with_erased_normals_records_the_recipe_and_refuses_distillation(world, tmp_path, capsys):
    _, data, split_path, _, wdir = world
    runs = tmp_path / "runs"
    argv = ["--models", "efficientnet_lite0", "--data", *map(str, data), "--split", str(split_path), "--runs",
            str(runs), "--epochs", "1", "--batch-size", "8", "--erased-normals", "0.5"]
    assert train.main(argv) == 0
    erased, decoys = map(int, re.search(r"(\d+) lesion scans erased as normal, (\d+) decoys", capsys.readouterr().out).groups())
    assert erased > 0 and decoys == erased
    out = weights.ship("efficientnet_lite0", runs, tmp_path / "w", force=True)
    assert out and "--erased-normals 0.5" in weights.Manifest.read(tmp_path / "w").models["efficientnet_lite0"]["command"]
    with pytest.raises(SystemExit, match="cannot be combined"):
        train.main([*argv, "--distil", "--weights", str(wdir), "--fresh"])


def test_ship_measures_the_candidate_and_the_shipped_weights_now_on_the_same_cases(world, tmp_path, capsys,
                                                                                  monkeypatch):
    """A stale recorded score (another code, another run's sources) does not decide: the same weights as
    the shipped ones are not shipped again however low the manifest's record, and a better run is."""
    import shutil

    from safetensors.torch import load_file

    from models.training import shipping
    _, data, split_path, _, wdir = world
    copy, runs = tmp_path / "w", tmp_path / "runs"
    shutil.copytree(wdir, copy)
    manifest = weights.Manifest.read(copy)
    old = manifest.models["efficientnet_lite0"]
    manifest.models["efficientnet_lite0"] = {**old, "val_score": -1.0}  # recorded long ago: any run would beat it
    manifest.write()
    (runs / "efficientnet_lite0").mkdir(parents=True)
    same = {k: v.float() for k, v in load_file(copy / "efficientnet_lite0.safetensors").items()}
    torch.save({"model": same, "epoch": 1, "score": 0.99, "config": old["train_config"]},
               runs / "efficientnet_lite0" / "best.pt")
    argv = ["efficientnet_lite0", "--runs", str(runs), "--weights", str(copy), "--data", *map(str, data),
            "--split", str(split_path), "--quiet"]
    assert shipping.main(argv) == 0
    out = capsys.readouterr().out
    assert "does not beat the shipped" in out and "(both measured now)" in out
    measured = re.search(r"candidate ([\d.]+), shipped ([\d.]+) \(recorded -1.0000\)", out)
    assert measured and measured[1] == measured[2]
    assert weights.Manifest.read(copy).models["efficientnet_lite0"]["sha256"] == old["sha256"]
    # without the shipped model's sources the measurement is refused, and names the way out
    with pytest.raises(FileNotFoundError, match="--data, or --force"):
        shipping.rescore("efficientnet_lite0", runs, copy, data[:1], split_path, progress=False)
    # the measured scores decide, and the candidate's is recorded
    assert not weights.ship("efficientnet_lite0", runs, copy, scores=(0.5, 0.6))
    assert weights.ship("efficientnet_lite0", runs, copy, scores=(0.6, 0.5))
    assert weights.Manifest.read(copy).models["efficientnet_lite0"]["val_score"] == 0.6
    # a candidate that reads scans otherwise (another fit) is compared with the shipped weights read as trained
    import dataclasses

    from models import zoo
    spec = zoo.get_spec("efficientnet_lite0")
    other = "squash" if spec.fit == "pad" else "pad"
    monkeypatch.setitem(zoo.REGISTRY, spec.name, dataclasses.replace(spec, fit=other))
    with pytest.raises(weights.WeightsError, match="re-train or restore the registry entry"):
        weights.Manifest.read(copy).load(spec.name)
    assert weights.Manifest.read(copy).recorded_spec(spec.name) == spec
    candidate, shipped = shipping.rescore(spec.name, runs, copy, data, split_path, progress=False)
    assert shipped == pytest.approx(float(measured[2]), abs=1e-4) and 0 <= candidate <= 1
