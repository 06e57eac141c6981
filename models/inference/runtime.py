"""Running one registered network on one prepared input, as fast as this machine allows.

The analysis engine's forward passes go through a ``Runner``: a callable from the model's float32
input ``(1, 3, S, S)`` to its raw output (classifier logits or segmenter lesion logits), both numpy.

- ``onnxruntime`` (the default on the CPU): the PyTorch model, with its shipped weights, is exported
  once to ONNX and run by ONNX Runtime; the graph is kept on disk for the next start
  (``models.inference.onnx_cache``). With its graph optimizations (batch norm folded into
  convolutions, fused activations, blocked memory layouts) the registered networks took 1.5x (VGG19 in
  fp32) to 3.4x (DeepLabV3+) less time than the naive baseline's PyTorch eager stage on the 2-core CPU
  (``benchmarks/results/analysis_speed.json``); VGG19 in int8, 5x.
  A member registered ``int8`` (VGG19; the VGG19 U-Net's encoder) runs as an int8 graph built from its
  weights and the activation ranges calibration stored in the manifest (``models.inference.quantize``).
- ``torch``: the model itself under ``torch.inference_mode`` (the choice on a GPU, and the reference
  the tests compare ONNX Runtime against).

PyTorch stays the source of truth: training, evaluation and Grad-CAM use the PyTorch model.
"""
from __future__ import annotations

import io
import logging
import threading
import warnings
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from models.inference import onnx_cache
from models.inference.quantize import quantized
from models.zoo import ModelSpec

log = logging.getLogger(__name__)
BACKENDS = ("onnxruntime", "torch")
Runner = Callable[[np.ndarray], np.ndarray]
OPSET = 17
# torch.onnx.export keeps global state: two exports at once (the analysis's models and LiteMedSAM warming up in
# their own threads) fail with "GLOBALS.in_onnx_export must be False". Every export in the process takes this lock.
EXPORT_LOCK = threading.Lock()


def check_backend(backend: str | None, device: str = "cpu") -> str:
    """The backend to use: ``backend`` if it can run on ``device``, ONNX Runtime on the CPU and PyTorch
    elsewhere when it is None."""
    if backend is None:
        return "onnxruntime" if device == "cpu" else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and device != "cpu":
        raise ValueError(f"backend 'onnxruntime' runs on the CPU; use backend 'torch' on {device!r}")
    return backend


def torch_runner(model: nn.Module, device: str = "cpu") -> Runner:
    model.eval()

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return run


def onnx_bytes(model: nn.Module, spec: ModelSpec | int) -> bytes:
    """The model as an ONNX graph for a batch-1 input of the spec's size (or of ``spec`` pixels square)."""
    size = spec if isinstance(spec, int) else spec.input_size
    x = torch.zeros(1, 3, size, size)
    buffer = io.BytesIO()
    with EXPORT_LOCK, warnings.catch_warnings():
        # The TorchScript-based exporter, deprecated in favour of the torch.export one, took about 1 s
        # per registered model here against 4-10 s for the new one, and every model runs the same
        # under ONNX Runtime (tests/test_runtime.py). Tracing at the fixed input size is exact here.
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval().cpu(), (x,), buffer, input_names=["x"], output_names=["y"],
                          dynamo=False, opset_version=OPSET)
    return buffer.getvalue()


def onnx_runner(model: nn.Module, spec: ModelSpec | int, int8_ranges: Mapping[str, list[float]] | None = None) -> Runner:
    """The model under ONNX Runtime on the CPU, for a batch-1 input as ``onnx_bytes`` takes it; int8 with
    ``int8_ranges`` (``models.inference.quantize``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    # Idle worker threads of one session otherwise spin and steal the cores from the next model:
    # six sessions in a row took 0.40 s with spinning, 0.23 s without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    size = spec if isinstance(spec, int) else spec.input_size

    def build() -> bytes:
        graph = onnx_bytes(model, spec)
        return quantized(graph, int8_ranges, None if isinstance(spec, int) else spec) if int8_ranges else graph

    key = onnx_cache.graph_key(model, size, OPSET, int8_ranges)
    try:
        session = ort.InferenceSession(onnx_cache.cached_graph(key, build), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors derive from Exception alone (InvalidProtobuf, Fail, ...)
        if not onnx_cache.forget(key):
            raise
        log.warning("ONNX cache: the stored graph %s was unusable (%s); exported it again", key, exc)
        session = ort.InferenceSession(onnx_cache.cached_graph(key, build), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]
    return run


def make_runner(model: nn.Module, spec: ModelSpec, backend: str | None = None, device: str = "cpu",
                int8_ranges: Mapping[str, list[float]] | None = None) -> Runner:
    """``int8_ranges`` (a manifest entry's, for a member registered ``int8``) makes ONNX Runtime run it int8;
    PyTorch (on a GPU) runs the fp32 model."""
    if check_backend(backend, device) == "onnxruntime":
        return onnx_runner(model, spec, int8_ranges)
    return torch_runner(model, device)
