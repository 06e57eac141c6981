"""Trial (issues #17/#18, speed): which part of the shipped VGG19 U-Net can run int8 (ONNX Runtime, static QDQ,
per-channel, the engine's ``QUANT_OPTIONS``; 1 in 16 training scans to calibrate). Prints batch-1 latency,
validation lesion Dice per source at 160 px (threshold 0.5) and the Dice between each int8 mask and the fp32 one
(mean over every validation scan, normal ones included, 1 where both masks are empty).

    python reports/unet_vgg19_int8_trial.py

Quantizing the whole graph (what the registry's ``int8=True`` did) gave the member weight 0 in the validation
refit. The suspect: the decoder's Concat nodes join caffe-scale encoder features (thousands) with decoder
features (order 1) under one uint8 scale, which flattens the decoder's half. So the variants: the whole graph,
only its Conv nodes, and only the encoder's convolutions (``int8_scope`` in the registry).
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from models.data import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.inference.quantize import QUANT_OPTIONS, CalibrationInputs, scoped_nodes
from models.inference.runtime import onnx_bytes
from models.preprocess import decode_cases, normalize
from models.weights import Manifest
from models.zoo import get_spec

torch.set_num_threads(2)
spec = get_spec("unet_vgg19")
model = Manifest.read().load("unet_vgg19")
split, cases = load_verified([DEFAULT_DATA_DIR / "Dataset_BUSI_with_GT", DEFAULT_DATA_DIR / "BUSBRA"], DEFAULT_SPLIT,
                             progress=False)
tr = decode_cases(split.select(cases, "train")[::16], spec.input_size, split.groups, progress=False)
va = decode_cases(split.select(cases, "val"), spec.input_size, split.groups, progress=False)


def prep(images: np.ndarray) -> np.ndarray:
    return normalize(torch.from_numpy(np.ascontiguousarray(images)), spec).numpy()


def session(graph: bytes):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def quantize(graph: bytes, **kw) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fp32.onnx").write_bytes(graph)
        quantize_static(str(Path(tmp) / "fp32.onnx"), str(Path(tmp) / "int8.onnx"),
                        CalibrationInputs(prep(tr.images[i:i + 1]) for i in range(len(tr))),
                        quant_format=QuantFormat.QDQ,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, **QUANT_OPTIONS, **kw)
        return (Path(tmp) / "int8.onnx").read_bytes()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2 * (a & b).sum() / s


fp32 = onnx_bytes(model, spec)
variants = {"fp32": fp32, "int8 whole graph": quantize(fp32),
            "int8 Conv nodes": quantize(fp32, op_types_to_quantize=["Conv"]),
            "int8 encoder only": quantize(fp32, nodes_to_quantize=scoped_nodes(fp32, spec))}
sources = np.array(va.sources)
lesion = va.masks.reshape(len(va), -1).any(1)
masks = {}
for name, graph in variants.items():
    sess = session(graph)
    run = lambda x: sess.run(None, {"x": x})[0]  # noqa: E731
    for _ in range(5):
        run(prep(va.images[:1]))
    t = []
    for i in range(30):
        x = prep(va.images[i:i + 1])
        t0 = time.perf_counter()
        run(x)
        t.append(time.perf_counter() - t0)
    masks[name] = np.concatenate([expit(run(prep(va.images[i:i + 1]))[:, 0]) for i in range(len(va))]) > 0.5
    d = {src: np.mean([dice(masks[name][i], va.masks[i]) for i in np.flatnonzero((sources == src) & lesion)])
         for src in ("busi", "busbra")}
    agree = np.mean([dice(masks[name][i], masks["fp32"][i]) for i in range(len(va))])
    print(f"{name:18s} p50 {np.median(t) * 1000:5.1f} ms  lesion Dice " + " ".join(f"{k} {v:.4f}" for k, v in d.items())
          + f"  Dice with fp32 {agree:.4f}", flush=True)
