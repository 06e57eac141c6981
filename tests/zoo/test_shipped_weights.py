"""The repository's own weights: manifest, checksums, loading, size budget, and the quality floors."""
import json

import numpy as np
import pytest
import torch

from models.data.images import load_gray
from models.data.records import CLASSES
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.inference.ensemble import ENSEMBLE, run_int8, run_model
from models.preprocess import resize_scan
from models.training import evaluate, model_card
from models.training.floors import FLOORS
from models.training.metrics import classification_metrics
from models.weights import WEIGHTS_DIR, Manifest
from models.zoo import get_spec
from tests.conftest import REPO

MANIFEST = Manifest.read(WEIGHTS_DIR)
SHIPPED = MANIFEST.shipped()
needs_weights = pytest.mark.skipif(not SHIPPED, reason="no weights shipped yet in weights/manifest.json")


@needs_weights
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_verifies_and_runs(name):
    spec = get_spec(name)
    model = MANIFEST.load(name)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, spec.input_size, spec.input_size))
    assert out.shape[0] == 1 and torch.isfinite(out).all()


@needs_weights
def test_weights_budget_and_fitted_ensemble():
    total = sum((WEIGHTS_DIR / m["file"]).stat().st_size for m in MANIFEST.models.values())
    assert total <= 150 * 1024 * 1024
    fitted = MANIFEST.ensemble.get("fitted")
    assert fitted and fitted["split"] == "val", "run `sonomark calibrate` after shipping"
    assert set(fitted.get("class_weights", {})) == set(MANIFEST.shipped("classify"))
    # a member registered int8 is served int8: calibration must have measured its activation ranges
    assert all(MANIFEST.int8_ranges(n) for n in SHIPPED if get_spec(n).int8), "run `sonomark calibrate`"


# Floors the shipped ensemble does not meet yet: (source, metric) -> the value measured on the test split
# (weights/README.md has it with its interval). The measurement must still be that value, so a collapse or
# an error fails; only the floor itself is an expected failure. Strict: once the floor is met the test
# XPASSes and fails, until its entry is removed here and from the README.
SHORTFALLS: dict[tuple[str, str], float] = {
    ("busi", "dice_mean"): 0.693,  # [0.618, 0.763]: U-Net-Lite0 0.5, DeepLabV3+ (scanner fine-tune) 0.25,
    # U-Net-VGG19 0.25, SegFormer-B0 0
}
METRICS = json.loads((WEIGHTS_DIR / "metrics.json").read_text()) if (WEIGHTS_DIR / "metrics.json").is_file() else {}


class FloorMissed(AssertionError):
    pass


@needs_weights
@pytest.mark.parametrize("source, metric", [(s, m) for s, floors in FLOORS.items() for m in floors])
def test_ensemble_meets_the_floor_on_the_test_split(source, metric, request):
    """On ``weights/metrics.json``'s numbers: the tests below tie them to the manifest's weights (identity), to
    the recorded answers case by case (recomputed), and those answers to what the code gives now (replayed)."""
    got = ensemble_score(source, metric)
    floor = FLOORS[source][metric]
    if (source, metric) in SHORTFALLS:
        assert got == pytest.approx(SHORTFALLS[(source, metric)], abs=0.002), (
            f"{source} {metric} is {got:.3f}, not the recorded shortfall {SHORTFALLS[(source, metric)]}")
        request.applymarker(pytest.mark.xfail(strict=True, raises=FloorMissed, reason=f"{source} {metric} {got:.3f}"))
    if got < floor:
        raise FloorMissed(f"{source} {metric} {got:.3f} < {floor}")


REPLAY_CASES = 12  # of each source's test cases, about this many, evenly spaced in split order: ~26 of 499


@pytest.fixture(scope="module")
def split_cases(shared_datasets):
    split, cases = load_verified([shared_datasets], DEFAULT_SPLIT, progress=False)
    return split, {s: [c for c in split.select(cases, "test") if c.source == s] for s in FLOORS}


@pytest.fixture(scope="module")
def replayed(split_cases):
    split, by_source = split_cases
    return {s: evaluate.evaluate_source(MANIFEST, cases[::max(1, len(cases) // REPLAY_CASES)], split, "test",
                                        n_boot=0, progress=False)
            for s, cases in by_source.items()}


@needs_weights
@pytest.mark.parametrize("source", sorted(FLOORS))
def test_the_recorded_answers_give_the_recorded_metrics(split_cases, source):
    recorded = METRICS[source]["cases"]
    cases = split_cases[1][source]
    assert sorted(recorded) == sorted(c.case_id for c in cases), f"weights/metrics.json: {source}'s cases are not its test split's"
    probs = np.array([recorded[c.case_id]["probs"] for c in cases])
    y = [c.label for c in cases]
    scores = classification_metrics(y, probs, average_over=[k for k in CLASSES if k in y], n_boot=0).scores
    for metric in ("macro_f1", "malignant_auc"):
        assert scores[metric].value == pytest.approx(ensemble_score(source, metric), abs=5e-4)
    dice = [recorded[c.case_id]["dice"] for c in cases if recorded[c.case_id]["dice"] is not None]
    assert np.mean(dice) == pytest.approx(ensemble_score(source, "dice_mean"), abs=5e-4)


@needs_weights
@pytest.mark.parametrize("source", sorted(FLOORS))
def test_the_code_and_weights_still_give_the_recorded_answers(replayed, source):
    """Some of each source's test cases through the shipped ensemble now, against ``metrics.json``: any change in
    decoding, the models, their int8 graphs, the fusion or the masks moves some of these. The tolerances leave
    room for another CPU's int8 kernels, not for a changed answer."""
    recorded = METRICS[source]["cases"]
    now = replayed[source].cases
    assert len(now) >= REPLAY_CASES
    for case_id, out in now.items():
        rec = recorded[case_id]
        assert np.allclose(out.probs, rec["probs"], atol=0.01), f"{source} {case_id}: {out.probs} != {rec['probs']}"
        assert out.mask_share == pytest.approx(rec["mask_share"], abs=0.003), f"{source} {case_id} mask area"
        assert (out.dice is None) == (rec["dice"] is None)
        if out.dice is not None:
            assert out.dice == pytest.approx(rec["dice"], abs=0.02), f"{source} {case_id} Dice"


def ensemble_score(source: str, metric: str) -> float:
    task = "segmentation" if metric == "dice_mean" else "classification"
    return METRICS[source][task][ENSEMBLE]["scores"][metric]["value"]


@needs_weights
def test_the_published_metrics_describe_the_shipped_weights():
    assert set(METRICS) == set(FLOORS), "weights/metrics.json is missing: run `sonomark evaluate`"
    for source, ev in METRICS.items():
        assert ev.get("weights") == MANIFEST.identity(), (
            f"weights/metrics.json: {source} was measured with other weights or calibration than the manifest's; "
            "run `sonomark evaluate` (and update the README's numbers)")


@needs_weights
def test_the_readme_and_the_model_card_state_the_published_metrics():
    readme = (REPO / "README.md").read_text()
    status = readme[readme.index("**Status.**"):readme.index("## Set up and run")]
    for source, floors in FLOORS.items():
        for metric in floors:
            value = ensemble_score(source, metric)
            assert f"{value:.3f}" in status, f"README status: {source} {metric} should read {value:.3f}"
            if (source, metric) in SHORTFALLS:
                assert round(value, 3) == SHORTFALLS[(source, metric)]
    assert (WEIGHTS_DIR / "README.md").read_text() == model_card.render(WEIGHTS_DIR), "run `sonomark card`"


@needs_weights
@pytest.mark.parametrize("name", [n for n in SHIPPED if get_spec(n).int8])
def test_the_int8_graph_the_engine_runs_keeps_the_shipped_members_answers(name):
    """What calibration measured: a member run int8 says what it says in fp32 on the example scans (the VGG19
    U-Net's masks collapsed with its decoder in int8: this fails if its ``int8_scope`` is widened)."""
    spec = get_spec(name)
    model = MANIFEST.load(name)
    scans = sorted((REPO / "examples").glob("*.png"))
    images = np.stack([resize_scan(load_gray(p), spec.input_size) for p in scans])
    fp32, int8 = run_model(model, spec, images), run_int8(model, spec, images, MANIFEST.int8_ranges(name))
    if spec.task == "classify":
        assert (fp32.argmax(1) == int8.argmax(1)).all()
    else:
        # the shipped VGG19 U-Net: mean |difference| at most 0.002 per scan, pooled mask Dice 0.994 (int8 whole: 0.03)
        assert (np.abs(fp32 - int8).mean((1, 2)) < 0.005).all()
        a, b = fp32 > 0.5, int8 > 0.5
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.98
