"""Trial (issue #17/#18 speed): int8 static quantization (ONNX Runtime, QDQ, per-channel, 1 in 16 train scans
to calibrate) of the shipped VGG19. Prints batch-1 latency and validation scores, fp32 against int8.

    python reports/vgg19_int8_trial.py

The trial that decided the adoption (2026-11-23). It runs the engine's own code (``models/inference/quantize.py``
through ``runtime.onnx_runner``); the shipped ranges are measured by ``sonomark calibrate`` on validation scans,
this trial's on training scans.
"""
import time

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from models.data import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.inference.quantize import activation_ranges
from models.inference.runtime import onnx_bytes, onnx_runner
from models.preprocess import decode_cases, normalize
from models.weights import Manifest
from models.zoo import get_spec

torch.set_num_threads(2)
spec = get_spec("vgg19")
model = Manifest.read().load("vgg19")
split, cases = load_verified([DEFAULT_DATA_DIR / "Dataset_BUSI_with_GT", DEFAULT_DATA_DIR / "BUSBRA"], DEFAULT_SPLIT,
                             progress=False)
tr = decode_cases(split.select(cases, "train")[::16], spec.input_size, split.groups, progress=False)
va = decode_cases(split.select(cases, "val"), spec.input_size, split.groups, progress=False)


def prep(images: np.ndarray) -> np.ndarray:
    return normalize(torch.from_numpy(images), spec).numpy()


ranges = activation_ranges(onnx_bytes(model, spec), (prep(tr.images[i:i + 1]) for i in range(len(tr))))
res = {}
for name, run in (("fp32", onnx_runner(model, spec)), ("int8", onnx_runner(model, spec, ranges))):
    for _ in range(5):
        run(prep(va.images[:1]))
    t = []
    for i in range(30):
        x = prep(va.images[i:i + 1])
        t0 = time.perf_counter()
        run(x)
        t.append(time.perf_counter() - t0)
    logits = np.concatenate([run(prep(va.images[i:i + 1])) for i in range(len(va))])
    said, sources = logits.argmax(1), np.array(va.sources)
    f1 = {src: f1_score(va.labels[sources == src], said[sources == src], average="macro") for src in ("busi", "busbra")}
    auc = roc_auc_score(va.labels == 1, torch.from_numpy(logits).softmax(1)[:, 1].numpy())
    res[name] = logits
    print(name, f"p50 {np.median(t) * 1000:.1f} ms", {k: round(v, 3) for k, v in f1.items()}, f"AUC {auc:.3f}", flush=True)
print("max |logit diff|", np.abs(res["fp32"] - res["int8"]).max(),
      "argmax agreement", (res["fp32"].argmax(1) == res["int8"].argmax(1)).mean())
