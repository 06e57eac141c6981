"""Archive pre-annotation throughput: the local engine against Ray Data with 1 and 2 workers, same process.

    python benchmarks/predict_scale.py [--copies 12]

The five shipped examples, each copied ``--copies`` times under distinct names (60 scans by default), are
pre-annotated with the shipped weights by ``sonomark predict`` (local engine, this process: ONNX Runtime on
both cores) and by ``--engine ray`` on a local Ray cluster with 1 and 2 actors (one CPU and one thread each).
Reported: start-up (the Ray cluster and each actor loading the models), wall time, images/s over the wall
time and in the steady state after start-up.
On this 2-core machine two Ray workers can at best match the local engine, which already uses both cores;
the point of the engine is a cluster with more machines. Writes ``benchmarks/results/predict_scale.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.inference.analysis import Analyzer  # noqa: E402
from models.inference.predict import find_inputs, predict  # noqa: E402
from models.inference.predict_ray import predict_ray  # noqa: E402
from models.weights import WEIGHTS_DIR  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "predict_scale.json")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sonomark-scale-"))
    try:
        scans = root / "scans"
        scans.mkdir()
        for k in range(args.copies):
            for p in sorted((REPO / "examples").glob("*.png")):
                shutil.copy(p, scans / f"{p.stem}-{k}.png")
        inputs = find_inputs([scans])
        results = {}
        t = time.perf_counter()
        analyzer = Analyzer(WEIGHTS_DIR)
        analyzer.warm_up()
        start = time.perf_counter() - t
        t = time.perf_counter()
        predict(inputs, root / "local", analyzer, progress=False)
        work = time.perf_counter() - t
        results["local engine"] = {"start_s": round(start, 2), "wall_s": round(start + work, 2),
                                   "images_per_s": round(len(inputs) / (start + work), 2),
                                   "steady_images_per_s": round(len(inputs) / work, 2)}
        for workers in (1, 2):
            t, timing = time.perf_counter(), {}
            predict_ray(inputs, root / f"ray{workers}", WEIGHTS_DIR, workers=workers, progress=False, timing=timing)
            wall = time.perf_counter() - t
            steady = (len(inputs) - timing["first_scans"]) / max(timing["last_s"] - timing["first_s"], 1e-9)
            results[f"ray, {workers} worker{'s' * (workers > 1)}"] = {
                "start_s": round(timing["first_s"], 2), "wall_s": round(wall, 2),
                "images_per_s": round(len(inputs) / wall, 2), "steady_images_per_s": round(steady, 2)}
            print(workers, results, flush=True)
        out = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "scans": len(inputs),
               "results": results,
               "note": "start_s for Ray: to the first rows back (cluster start, actors loading the models); "
                       "steady: scans per second after that",
               "ray_2_vs_1_workers_steady": round(results["ray, 2 workers"]["steady_images_per_s"]
                                                  / results["ray, 1 worker"]["steady_images_per_s"], 2),
               "ray_2_workers_vs_local_steady": round(results["ray, 2 workers"]["steady_images_per_s"]
                                                      / results["local engine"]["steady_images_per_s"], 2)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
