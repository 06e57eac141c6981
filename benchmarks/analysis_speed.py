"""Speed of one full analysis, per stage, against a naive baseline measured in the same process.

    python benchmarks/analysis_speed.py [--repeats 20] [--cam]

Engine: ``models.inference.analysis.Analyzer`` (decode once, preprocessing shared between models of one input
size, every network run by ONNX Runtime through ``models.inference.runtime``).
Naive baseline: every model on its own, as a first script would: decode the file with PIL,
resize and normalize with torchvision, forward under ``torch.no_grad``, upsample its own output;
then average, threshold, clean and measure. The two alternate scan by scan, so load on the machine
falls on both. Targets (issue: analysis engine): engine p50 <= 1.0 s without CAM, <= 1.5 s with
one CAM, and >= 2x faster than the baseline. Two configurations, one after the other: the shipped
ensemble (what users run), and, while some registered model is not shipped, every registered model
(random-initialised copies of those not shipped; speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.measure import measure  # noqa: E402
from models.inference.postprocess import clean_mask  # noqa: E402
from models.inference.scan import read_scan  # noqa: E402
from models.weights import WEIGHTS_DIR, Manifest, ship  # noqa: E402
from models.zoo import REGISTRY, build_model, get_spec  # noqa: E402


def all_registered_folder() -> Path:
    """Every registered model shipped with its trained weights where there are some, else random ones."""
    manifest = Manifest.read(WEIGHTS_DIR)
    root = Path(tempfile.mkdtemp(prefix="sonomark-bench-"))
    for name in REGISTRY:
        (root / "runs" / name).mkdir(parents=True)
        model = manifest.load(name) if name in manifest.shipped() else build_model(name, init=None)
        state = model.state_dict()
        torch.save({"model": state, "epoch": 0, "score": 0.0, "config": {"model": name}}, root / "runs" / name / "best.pt")
        ship(name, root / "runs", root / "weights")
    return root / "weights"


def naive(path: Path, models: dict, threshold: float, timings: dict) -> None:
    probs, maps = [], []
    for name, model in models.items():
        t0 = time.perf_counter()
        spec = get_spec(name)
        image = Image.open(path).convert("L")
        size = image.size
        x = TF.to_tensor(image.resize((spec.input_size, spec.input_size), Image.BILINEAR)).expand(3, -1, -1)
        x = TF.normalize(x, spec.mean, spec.std)[None]
        with torch.no_grad():
            out = model(x)
        if spec.task == "classify":
            probs.append(out.softmax(1)[0].numpy())
        elif spec.task == "grade":  # the naive way reads the whole scan: the crop's cost is the engine's alone
            out.softmax(1)
        else:
            maps.append(F.interpolate(torch.sigmoid(out), size=size[::-1], mode="bilinear")[0, 0].numpy())
        timings[f"model {name}"] = timings.get(f"model {name}", 0.0) + time.perf_counter() - t0
    t0 = time.perf_counter()
    np.mean(probs, axis=0)
    measure(clean_mask(np.mean(maps, axis=0) > threshold))
    timings["fusion + post-processing"] = time.perf_counter() - t0


def stats(values: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(values, 50)), 4), "p95": round(float(np.percentile(values, 95)), 4)}


def run_config(folder: Path, scans: list[Path], repeats: int, cam: str) -> dict:
    engine = Analyzer(folder)
    models = {n: engine.manifest.load(n) for n in engine.manifest.shipped()}
    engine.analyze(read_scan(scans[0]))  # load every model once (lazy loading is not what is measured)
    naive(scans[0], models, engine.fusion.threshold, {})
    stages: dict[str, list[float]] = {}
    base_stages: dict[str, list[float]] = {}
    totals = {"engine": [], "engine + CAM": [], "naive": []}
    for k in range(repeats):
        path = scans[k % len(scans)]
        t0 = time.perf_counter()
        scan = read_scan(path)
        t_read = time.perf_counter() - t0
        timings: dict[str, float] = {"read": t_read}
        engine.analyze(scan, timings)
        t_engine = time.perf_counter() - t0
        t1 = time.perf_counter()
        engine.explain(scan, cam)
        timings[f"CAM {cam}"] = time.perf_counter() - t1
        for s, v in timings.items():
            stages.setdefault(s, []).append(v)
        totals["engine"].append(t_engine)
        totals["engine + CAM"].append(t_engine + timings[f"CAM {cam}"])
        t0 = time.perf_counter()
        base: dict[str, float] = {}
        naive(path, models, engine.fusion.threshold, base)
        totals["naive"].append(time.perf_counter() - t0)
        for s, v in base.items():
            base_stages.setdefault(s, []).append(v)
    return {
        "models": engine.manifest.shipped(), "backend": engine.backend,
        "totals": {k: stats(v) for k, v in totals.items()},
        "engine_stages": {k: stats(v) for k, v in stages.items()},
        "naive_stages": {k: stats(v) for k, v in base_stages.items()},
        "speedup_p50": round(float(np.median(totals["naive"]) / np.median(totals["engine"])), 3),
        "peak_rss_mb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cam", default="efficientnet_lite0", help="classifier whose Grad-CAM is timed")
    args = ap.parse_args()
    scans = sorted((REPO / "examples").glob("*.png"))
    configs = {"shipped ensemble": WEIGHTS_DIR}
    if set(REGISTRY) - set(Manifest.read(WEIGHTS_DIR).shipped()):  # else both configurations are the same
        configs["all registered models"] = all_registered_folder()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "torch": torch.__version__, "repeats": args.repeats,
        "note": "'all registered models' uses random weights for the models not shipped (speed does not depend "
                "on the values); peak RSS is the process's, so it includes every configuration run before",
    }
    for label, folder in configs.items():
        try:
            result[label] = run_config(folder, scans, args.repeats, args.cam)
        finally:
            if folder != WEIGHTS_DIR:  # the temporary folder all_registered_folder() made (~270 MB)
                shutil.rmtree(folder.parent, ignore_errors=True)
        r = result[label]
        print(f"{label} ({', '.join(r['models'])}):")
        for k, v in r["totals"].items():
            print(f"  {k:14s} p50 {v['p50']:.3f} s  p95 {v['p95']:.3f} s")
        print(f"  speed-up over naive (p50): {r['speedup_p50']}x; peak RSS so far {r['peak_rss_mb_so_far']} MB")
    out = REPO / "benchmarks" / "results" / "analysis_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
