"""Trial (issue #17/#18 speed): int8 static quantization (ONNX Runtime, QDQ, per-channel, 1 in 16 train scans
to calibrate) of the shipped VGG19. Prints batch-1 latency and validation scores, fp32 against int8.

    python reports/vgg19_int8_trial.py

The trial that decided the adoption (2026-11-23). The engine now runs VGG19 this way: ``models/inference/quantize.py``
builds the same graph at load from the shipped weights and activation ranges ``sonomark calibrate`` measures on
validation (this trial measured them on training scans).
"""
import time

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantFormat, QuantType
from sklearn.metrics import f1_score, roc_auc_score
from models.weights import Manifest
from models.zoo import get_spec
from models.inference.runtime import onnx_bytes
from models.preprocess import decode_cases, normalize
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.data import DEFAULT_DATA_DIR
torch.set_num_threads(2)
spec = get_spec("vgg19"); model = Manifest.read().load("vgg19")
open("/tmp/vgg19.onnx", "wb").write(onnx_bytes(model, spec))
split, cases = load_verified([DEFAULT_DATA_DIR / "Dataset_BUSI_with_GT", DEFAULT_DATA_DIR / "BUSBRA"], DEFAULT_SPLIT, progress=False)
tr = decode_cases(split.select(cases, "train")[::16], spec.input_size, split.groups, progress=False)
va = decode_cases(split.select(cases, "val"), spec.input_size, split.groups, progress=False)


def prep(images: np.ndarray) -> np.ndarray:
    return normalize(torch.from_numpy(images), spec).numpy()


class Reader(CalibrationDataReader):
    """One training scan at a time, for the activation ranges."""

    def __init__(self):
        self.batches = iter([{"x": prep(tr.images[i:i + 1])} for i in range(len(tr))])

    def get_next(self):
        return next(self.batches, None)


quantize_static("/tmp/vgg19.onnx", "/tmp/vgg19_int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
res = {}
for name in ("vgg19", "vgg19_int8"):
    s = ort.InferenceSession(f"/tmp/{name}.onnx", o, providers=["CPUExecutionProvider"])
    x = prep(va.images[:1])
    for _ in range(5): s.run(None, {"x": x})
    t = []
    for i in range(30):
        t0 = time.perf_counter(); s.run(None, {"x": prep(va.images[i:i+1])}); t.append(time.perf_counter() - t0)
    logits = np.concatenate([s.run(None, {"x": prep(va.images[i:i+1])})[0] for i in range(len(va))])
    y = va.labels; said = logits.argmax(1)
    f1 = {src: f1_score(y[np.array(va.sources) == src], said[np.array(va.sources) == src], average="macro") for src in ("busi", "busbra")}
    auc = roc_auc_score(y == 1, torch.from_numpy(logits).softmax(1)[:, 1].numpy())
    res[name] = logits
    print(name, f"p50 {np.median(t)*1000:.1f} ms", {k: round(v, 3) for k, v in f1.items()}, f"AUC {auc:.3f}", flush=True)
print("max |logit diff|", np.abs(res["vgg19"] - res["vgg19_int8"]).max(), "argmax agreement", (res["vgg19"].argmax(1) == res["vgg19_int8"].argmax(1)).mean())
