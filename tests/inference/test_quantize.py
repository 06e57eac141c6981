"""int8 under ONNX Runtime: activation ranges measured once, and the int8 graph rebuilt from them."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from models.inference.quantize import activation_ranges, quantized, scoped_nodes
from models.inference.runtime import make_runner, onnx_bytes, onnx_runner
from models.zoo import REGISTRY, build_model, get_spec


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()


def inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def ranges():
    return activation_ranges(onnx_bytes(small_net(), 32), inputs(16))


def test_ranges_cover_the_input_and_every_activation_and_are_json(ranges):
    assert json.loads(json.dumps(ranges)) == ranges  # what the manifest stores
    assert {"x", "y", "/1/Relu_output_0", "/3/Relu_output_0"} <= set(ranges)
    lo, hi = ranges["x"]
    assert lo == pytest.approx(min(float(x.min()) for x in inputs(16)))
    assert hi == pytest.approx(max(float(x.max()) for x in inputs(16)))
    assert ranges["/1/Relu_output_0"][0] == 0.0 < ranges["/1/Relu_output_0"][1]


def test_the_int8_graph_has_int8_weights_and_stays_close_to_fp32(ranges):
    graph = onnx.load_from_string(quantized(onnx_bytes(small_net(), 32), ranges))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)
    fp32, int8 = onnx_runner(small_net(), 32), onnx_runner(small_net(), 32, ranges)
    for x in inputs(4, seed=1):  # scans other than those the ranges came from
        a, b = fp32(x), int8(x)
        assert not np.array_equal(a, b)  # int8 really ran
        np.testing.assert_allclose(b, a, atol=0.02 * float(np.abs(a).max()))


def test_same_ranges_same_graph(ranges):
    graph = onnx_bytes(small_net(), 32)
    assert quantized(graph, ranges) == quantized(graph, ranges)


def test_no_ranges_is_a_clear_error():
    with pytest.raises(ValueError, match="sonomark calibrate"):
        quantized(onnx_bytes(small_net(), 32), {})


def test_pytorch_on_a_gpu_runs_the_fp32_model(ranges):
    model = small_net()
    x = inputs(1)[0]
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(make_runner(model, 32, "torch", "cpu", ranges)(x), expected, rtol=1e-6)


def test_only_the_measured_members_are_registered_int8():
    """A registry choice, measured (reports/vgg19_int8_trial.py, reports/unet_vgg19_int8_trial.py): another
    member made int8 needs its own trial."""
    assert {n: get_spec(n).int8_scope for n in REGISTRY if get_spec(n).int8} == {"vgg19": "", "unet_vgg19": "/encoder/"}


def test_the_vgg19_unet_scope_is_its_encoder_and_nothing_after_it():
    """In int8 the decoder (or any of its convolutions) collapsed the masks: its nodes must stay fp32. The
    scope must be the first of the graph's module nodes (ONNX lists them in topological order; the exporter's
    unnamed ``Identity_*`` aliases of weights aside), all 12 encoder convolutions (VGG19 blocks 1-4: 2 + 2 + 4 + 4)
    among them."""
    spec = get_spec("unet_vgg19")
    graph = onnx.load_from_string(onnx_bytes(build_model("unet_vgg19", init=None), spec))
    nodes = scoped_nodes(graph.SerializeToString(), spec)
    assert [n.name for n in graph.graph.node if n.name.startswith("/")][:len(nodes)] == nodes
    assert sum(n.op_type == "Conv" for n in graph.graph.node if n.name in set(nodes)) == 12


def test_a_scope_keeps_the_nodes_outside_it_in_fp32(ranges):
    """``int8_scope`` (the VGG19 U-Net's encoder): int8 weights for the nodes named with the prefix only."""
    graph = onnx_bytes(small_net(), 32)
    spec = dataclasses.replace(get_spec("resnet18"), int8=True, int8_scope="/0/")
    int8 = onnx.load_from_string(quantized(graph, ranges, spec))
    quantized_weights = [t.name for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert quantized_weights and all(name.startswith("0.") for name in quantized_weights), quantized_weights
    whole = onnx.load_from_string(quantized(graph, ranges))
    assert any(t.name.startswith("2.") and t.data_type == onnx.TensorProto.INT8 for t in whole.graph.initializer)


def test_a_scope_that_names_no_node_is_a_clear_error(ranges):
    spec = dataclasses.replace(get_spec("resnet18"), int8=True, int8_scope="/encoder/")
    with pytest.raises(ValueError, match=r"resnet18: no node .*'/encoder/'.*int8_scope .*models/zoo.py"):
        quantized(onnx_bytes(small_net(), 32), ranges, spec)
