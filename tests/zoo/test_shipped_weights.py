"""The repository's own weights: manifest, checksums, loading, size budget, and the quality floors."""
import json

import numpy as np
import pytest
import torch

from models.data.images import load_gray
from models.inference.ensemble import ENSEMBLE, run_int8, run_model
from models.preprocess import resize_scan
from models.training import evaluate, model_card
from models.training.floors import FLOORS
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


@pytest.fixture(scope="module")
def test_results(shared_datasets):
    return evaluate.evaluate([shared_datasets], n_boot=0, progress=False)


@needs_weights
@pytest.mark.parametrize("source, metric", [(s, m) for s, floors in FLOORS.items() for m in floors])
def test_ensemble_meets_the_floor_on_the_test_split(test_results, source, metric, request):
    got = test_results[source].ensemble_scores()[metric]
    floor = FLOORS[source][metric]
    if (source, metric) in SHORTFALLS:
        assert got == pytest.approx(SHORTFALLS[(source, metric)], abs=0.002), (
            f"{source} {metric} is {got:.3f}, not the recorded shortfall {SHORTFALLS[(source, metric)]}")
        request.applymarker(pytest.mark.xfail(strict=True, raises=FloorMissed, reason=f"{source} {metric} {got:.3f}"))
    if got < floor:
        raise FloorMissed(f"{source} {metric} {got:.3f} < {floor}")


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
