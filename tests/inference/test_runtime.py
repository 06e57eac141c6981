"""ONNX Runtime gives what PyTorch gives, for every registered model, at the model's own input size."""
import numpy as np
import pytest
import torch

from models import zoo
from models.inference.runtime import make_runner


@pytest.mark.parametrize("name", list(zoo.REGISTRY))
def test_onnxruntime_matches_torch(name):
    spec = zoo.get_spec(name)
    torch.manual_seed(0)
    model = zoo.build_model(name, init=None).eval()
    # Move batch-norm statistics off their initial 0/1 so that folding them into the convolutions is tested.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = np.random.default_rng(0).standard_normal((1, 3, spec.input_size, spec.input_size)).astype(np.float32)
    expected = make_runner(model, spec, "torch")(x)
    got = make_runner(model, spec, "onnxruntime")(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))  # the README promises 1e-4


def test_unknown_backend_and_gpu_onnx_are_clear_errors():
    spec = zoo.get_spec("resnet18")
    model = zoo.build_model("resnet18", init=None)
    with pytest.raises(ValueError, match="choose one of onnxruntime, torch"):
        make_runner(model, spec, "tensorrt")
    with pytest.raises(ValueError, match="use backend 'torch'"):
        make_runner(model, spec, "onnxruntime", device="cuda")
