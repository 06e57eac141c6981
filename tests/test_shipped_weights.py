"""The repository's own weights: manifest, checksums, loading, size budget, and the quality floors."""
import pytest
import torch

from models import evaluate
from models.weights import WEIGHTS_DIR, Manifest
from models.zoo import get_spec

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
    assert fitted and fitted["split"] == "val", "run `python -m models.calibrate` after shipping"
    assert set(fitted.get("class_weights", {})) == set(MANIFEST.shipped("classify"))


# Floors the shipped ensemble does not meet yet, with the measured values in weights/README.md.
# Strict: once a floor is met its test XPASSes and fails, until its entry is removed here.
SHORTFALLS: dict[tuple[str, str], str] = {
    ("busi", "dice_mean"): "0.711 [0.642, 0.782]: U-Net-Lite0 0.5, DeepLabV3+ 0.5, SegFormer-B0 0 (160 px, CPU epochs)",
}


@pytest.fixture(scope="module")
def test_results(shared_datasets):
    return evaluate.evaluate([shared_datasets], n_boot=0, progress=False)


@needs_weights
@pytest.mark.parametrize("source, metric", [(s, m) for s, floors in evaluate.FLOORS.items() for m in floors])
def test_ensemble_meets_the_floor_on_the_test_split(test_results, source, metric, request):
    if (source, metric) in SHORTFALLS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=SHORTFALLS[(source, metric)]))
    got = test_results[source].ensemble_scores().get(metric, 0.0)
    assert got >= evaluate.FLOORS[source][metric], f"{source} {metric} {got:.3f} < {evaluate.FLOORS[source][metric]}"
