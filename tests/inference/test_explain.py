import numpy as np
import pytest
import torch

from models import zoo
from models.inference.explain import CAM_METHODS, explain, heatmap_overlay

GRAY = np.random.default_rng(0).integers(0, 256, (90, 120), dtype=np.uint8)


@pytest.mark.parametrize("name", zoo.names("classify"))
@pytest.mark.parametrize("method", ["Grad-CAM", "Grad-CAM++", "EigenCAM"])
def test_cam_for_every_classifier_and_method(name, method):
    torch.manual_seed(0)
    model = zoo.build_model(name, init=None)
    heat = explain(model, zoo.get_spec(name), GRAY, method=method)
    assert heat.cam.shape == GRAY.shape and heat.cam.dtype == np.float32
    assert 0 <= heat.cam.min() and heat.cam.max() <= 1 and np.isfinite(heat.cam).all()
    assert heat.target_class in zoo.get_spec(name).classes and heat.method == method


def test_chosen_class_under_no_grad_and_overlay():
    spec = zoo.get_spec("resnet18")
    model = zoo.build_model("resnet18", init=None)
    with torch.no_grad():
        heat = explain(model, spec, GRAY, target_class="malignant")
    assert heat.target_class == "malignant"
    rgb = np.repeat(GRAY[..., None], 3, axis=2)
    out = heatmap_overlay(rgb, heat.cam, 0.4)
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_cam_errors_say_what_exists():
    spec = zoo.get_spec("resnet18")
    model = zoo.build_model("resnet18", init=None)
    with pytest.raises(ValueError, match="choose one of Grad-CAM"):
        explain(model, spec, GRAY, method="magic")
    with pytest.raises(ValueError, match="not one of"):
        explain(model, spec, GRAY, target_class="cyst")
    with pytest.raises(ValueError, match="explains the classifiers"):
        explain(zoo.build_model("unet_lite0", init=None), zoo.get_spec("unet_lite0"), GRAY)
    assert {"Grad-CAM", "Grad-CAM++", "EigenCAM"} <= set(CAM_METHODS)
