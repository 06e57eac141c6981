"""int8 under ONNX Runtime: a registered network's activation ranges, and its graph quantized with them.

A member whose registry entry says ``int8=True`` (VGG19: 45 of the engine's 99 ms in fp32; the VGG19 U-Net's
encoder, below) runs on the CPU as a
static QDQ graph: int8 weights per output channel, uint8 activations scaled by ranges measured on
validation scans. ``sonomark calibrate`` (and ``sonomark adapt``, on the site's held-out cases) measures the
ranges and writes them into the member's manifest entry (``int8_ranges``); everything that runs the member on
the CPU (the analysis engine, calibration, evaluation) builds the same int8 graph from its shipped weights and
those ranges, in about 0.3 s. The weights stay fp16 safetensors; the quantized graph is never stored.

Measured on the shipped VGG19 (``reports/vgg19_int8_trial.py``): batch-1 54 -> 21 ms on the 2 cores, validation
macro-F1 and malignant AUC unchanged to 0.001, 99.2% of predicted classes the same.

A registry entry's ``int8_scope`` limits int8 to the nodes named with that prefix. The VGG19 U-Net runs int8 on
its encoder only (``reports/unet_vgg19_int8_trial.py``: 61 -> 34 ms, validation Dice unchanged to 0.0005);
with its decoder in int8 too its masks collapsed (Dice 0.05).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from models.zoo import ModelSpec

# 7-bit weights (reduce_range): on x86 CPUs without VNNI (AVX2 only, e.g. the AMD EPYC Zen 3 of the tenth
# session) ONNX Runtime's u8s8 kernels saturate with 8-bit weights. There, the VGG19 U-Net's int8 mask of one
# example scan kept Dice 0.36 against its fp32 mask (pooled over the five examples 0.975, VGG19's largest
# probability change 0.71); with 7-bit weights 0.91 (pooled 0.996, 0.40). ORT's advice: reduce_range where
# there is no VNNI; the same graph everywhere, so calibration and evaluation hold on every CPU.
QUANT_OPTIONS = {"per_channel": True, "reduce_range": True}


class CalibrationInputs:
    """ONNX Runtime's calibration reader (by its ``get_next`` protocol) over prepared batch-1 inputs; the
    model's input is named ``x``."""

    def __init__(self, inputs: Iterable[np.ndarray]):
        self._batches = ({"x": np.ascontiguousarray(x, np.float32)} for x in inputs)

    def get_next(self):
        return next(self._batches, None)


def scoped_nodes(graph: bytes, spec: ModelSpec | None) -> list[str] | None:
    """The names of the graph's nodes that start with the spec's ``int8_scope``, for ONNX Runtime's
    ``nodes_to_quantize``; None (every node) without a spec or with an empty scope."""
    if spec is None or not spec.int8_scope:
        return None
    import onnx

    nodes = [n.name for n in onnx.load_from_string(graph).graph.node if n.name.startswith(spec.int8_scope)]
    if not nodes:
        raise ValueError(f"{spec.name}: no node of its ONNX graph is named {spec.int8_scope!r}...; fix the "
                         "int8_scope of its registry entry (models/zoo.py)")
    return nodes


def _quantize(graph: bytes, folder: Path, cache: Path, inputs: Iterable[np.ndarray] | None,
              spec: ModelSpec | None = None) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    (folder / "fp32.onnx").write_bytes(graph)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT warns about graph pre-processing and the head's rank-1 batch norm
    try:
        quantize_static(str(folder / "fp32.onnx"), str(folder / "int8.onnx"),
                        None if inputs is None else CalibrationInputs(inputs), quant_format=QuantFormat.QDQ,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        calibration_cache_path=str(cache), nodes_to_quantize=scoped_nodes(graph, spec),
                        **QUANT_OPTIONS)
    finally:
        root.setLevel(level)
    return (folder / "int8.onnx").read_bytes()


def activation_ranges(graph: bytes, inputs: Iterable[np.ndarray]) -> dict[str, list[float]]:
    """Each activation's [lowest, highest] over ``inputs`` (prepared ``(1, 3, S, S)`` float32 arrays) for the
    ONNX ``graph`` (``runtime.onnx_bytes``): what the manifest stores as ``int8_ranges``. Every tensor's, also
    outside a registry entry's ``int8_scope`` (ONNX Runtime's calibrator measures them all)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    with tempfile.TemporaryDirectory(prefix="sonomark-int8-") as tmp:
        folder = Path(tmp)
        _quantize(graph, folder, folder / "ranges.json", inputs)
        data = load_tensors_data(folder / "ranges.json").data
    return {name: [float(np.asarray(r.range_value[0]).item()), float(np.asarray(r.range_value[1]).item())]
            for name, r in sorted(data.items())}


def quantized(graph: bytes, ranges: Mapping[str, list[float]], spec: ModelSpec | None = None) -> bytes:
    """The int8 QDQ graph of ``graph`` with the stored activation ``ranges``; with ``spec``, int8 only in its
    ``int8_scope``."""
    if not ranges:
        raise ValueError("no activation ranges to quantize with; run `sonomark calibrate` to measure them")
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    data = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array([lo], np.float32), highest=np.array([hi], np.float32))
        for name, (lo, hi) in ranges.items()})
    with tempfile.TemporaryDirectory(prefix="sonomark-int8-") as tmp:
        folder = Path(tmp)
        save_tensors_data(data, folder / "ranges.json")
        return _quantize(graph, folder, folder / "ranges.json", None, spec)
