"""Start-up of the analysis engine and the prompt segmenter with the ONNX cache filled, against an empty one.

    python benchmarks/startup_speed.py [--repeats 3]

What the app does at start (``app/ui.py`` warms both up in the background): ``Analyzer.warm_up()`` loads the
shipped members and prepares their ONNX Runtime sessions; ``PromptSegmenter()`` loads LiteMedSAM and prepares
its image encoder's. Baseline: the same with an empty cache folder, so every graph is exported (and the int8
members quantized) again, as every start did before ``models.inference.onnx_cache``. Each repeat runs the
baseline in a new empty folder, then the engine on the folder the baseline filled, in the same process. Target:
the filled cache starts >= 3x faster. Writes ``benchmarks/results/startup_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.annotation.prompts import PromptSegmenter  # noqa: E402
from models.inference import onnx_cache  # noqa: E402
from models.inference.analysis import Analyzer  # noqa: E402

TARGET = 3.0


def start() -> dict[str, float]:
    """Seconds to a warm analysis engine and to a ready prompt segmenter."""
    t = time.perf_counter()
    Analyzer().warm_up()
    mid = time.perf_counter()
    PromptSegmenter()
    return {"analysis engine": mid - t, "prompt segmenter": time.perf_counter() - mid}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup_speed.json")
    args = ap.parse_args(argv)
    times: dict[str, list[dict[str, float]]] = {"empty cache (baseline)": [], "filled cache": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            os.environ[onnx_cache.ENV] = folder
            times["empty cache (baseline)"].append(start())
            times["filled cache"].append(start())
    seconds = {run: {part: round(float(np.median([r[part] for r in rows])), 3) for part in rows[0]}
               | {"total": round(float(np.median([sum(r.values()) for r in rows])), 3)}
               for run, rows in times.items()}
    speedup = round(seconds["empty cache (baseline)"]["total"] / seconds["filled cache"]["total"], 2)
    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "torch": torch.__version__,
              "repeats": args.repeats, "seconds (median)": seconds, "speedup": speedup, "target_speedup": TARGET,
              "meets_target": speedup >= TARGET}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
