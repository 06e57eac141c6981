"""Load on a running app: concurrent visitors' analyses, an annotator's saves meanwhile, server memory.

    python benchmarks/load.py [--visitors 8] [--analyses 3] [--soak 100]

Starts ``python -m app`` (public mode, the shipped weights) on 127.0.0.1 twice: with one analysis at a
time (``SONOMARK_CONCURRENT_ANALYSES=1``, the baseline: Gradio's default) and with the shipped setting
(``app.ui.ANALYSES``). In each server: the p50 of analyses one visitor alone; then ``--visitors`` clients
each analysing ``--analyses`` examples at once, while one annotator, whose scan is already analysed, saves
a case again and again. Reported as ratios against the same server's figures alone (never as timed
assertions in tests): analysis p50/p95 under load, throughput, and the annotator's save latency under
load (saves run in the edit lane, beside analyses, not behind them). Then ``--soak`` more analyses and the
server's resident memory before and after. Results: ``benchmarks/results/load.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from app import ui  # noqa: E402
from tests.app.conftest import running_app  # noqa: E402

EXAMPLES = sorted((REPO / "examples").glob("*.png"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def analyze(client, example: Path) -> float:
    from gradio_client import handle_file

    t0 = time.perf_counter()
    client.predict(handle_file(str(example)), True, True, 0.35, api_name="/analyze")
    return time.perf_counter() - t0


def one_server(lanes: int, visitors: int, analyses: int, soak: int, root: Path) -> dict:
    from gradio_client import Client, handle_file

    with running_app(root, shipped=True, SONOMARK_PUBLIC="1", SONOMARK_CONCURRENT_ANALYSES=str(lanes),
                     OMP_NUM_THREADS="2") as url:
        pid = int((root / "server.pid").read_text())
        clients = [Client(url, verbose=False) for _ in range(visitors)]
        annotator = Client(url, verbose=False)
        analyze(annotator, EXAMPLES[0])  # warm: models loaded, the annotator's scan analysed
        alone = [analyze(clients[0], EXAMPLES[k % len(EXAMPLES)]) for k in range(5)]
        example = EXAMPLES[0]
        h, w = np.asarray(Image.open(example)).shape[:2]
        layer = root / "layer.png"
        paint = np.zeros((h, w, 4), np.uint8)
        paint[h // 3:h // 2, w // 3:w // 2] = (0, 220, 90, 200)
        Image.fromarray(paint).save(layer)
        editor = {"background": handle_file(str(example)), "layers": [handle_file(str(layer))], "composite": None}

        def save() -> float:
            t0 = time.perf_counter()
            annotator.predict(editor, "benign", "load test", api_name="/export")
            return time.perf_counter() - t0

        saves_alone = [save() for _ in range(5)]
        memory_before = rss_mb(pid)
        done = threading.Event()
        saves_loaded: list[float] = []

        def keep_saving() -> None:
            while not done.is_set():
                saves_loaded.append(save())
                time.sleep(0.2)

        saver = threading.Thread(target=keep_saving)
        t0 = time.perf_counter()
        saver.start()
        with ThreadPoolExecutor(visitors) as pool:
            jobs = [pool.submit(lambda c, k: [analyze(c, EXAMPLES[(k + j) % len(EXAMPLES)]) for j in range(analyses)],
                                clients[k], k) for k in range(visitors)]
            loaded = [t for job in jobs for t in job.result()]
        wall = time.perf_counter() - t0
        done.set()
        saver.join()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda k: analyze(clients[k % visitors], EXAMPLES[k % len(EXAMPLES)]), range(soak)))
        memory_after = rss_mb(pid)
    return {
        "analysis_lanes": lanes,
        "alone_p50_s": statistics.median(alone),
        "loaded_p50_s": pct(loaded, 50), "loaded_p95_s": pct(loaded, 95),
        "throughput_per_s": len(loaded) / wall,
        "save_alone_p50_s": statistics.median(saves_alone),
        "save_loaded_p50_s": pct(saves_loaded, 50), "save_loaded_p95_s": pct(saves_loaded, 95),
        "saves_during_load": len(saves_loaded),
        "server_rss_mb_before": memory_before, "server_rss_mb_after": memory_after,
        "analyses_between_memory_readings": len(loaded) + soak,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=8)
    ap.add_argument("--analyses", type=int, default=3, help="per visitor, all at once")
    ap.add_argument("--soak", type=int, default=100, help="analyses between the two memory readings")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "load.json")
    args = ap.parse_args(argv)
    runs = {}
    for lanes in (1, ui.ANALYSES):
        with tempfile.TemporaryDirectory(prefix="sonomark-load-") as tmp:
            runs[lanes] = one_server(lanes, args.visitors, args.analyses, args.soak, Path(tmp))
        print(json.dumps(runs[lanes], indent=1), flush=True)
    base, shipped = runs[1], runs[ui.ANALYSES]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "visitors": args.visitors, "analyses_per_visitor": args.analyses, "runs": list(runs.values()),
        "ratios": {
            "throughput_shipped_vs_one_lane": shipped["throughput_per_s"] / base["throughput_per_s"],
            "loaded_p50_shipped_vs_one_lane": shipped["loaded_p50_s"] / base["loaded_p50_s"],
            "loaded_p95_shipped_vs_one_lane": shipped["loaded_p95_s"] / base["loaded_p95_s"],
            "save_loaded_vs_alone_p50": shipped["save_loaded_p50_s"] / shipped["save_alone_p50_s"],
            "save_loaded_p50_vs_analysis_alone_p50": shipped["save_loaded_p50_s"] / shipped["alone_p50_s"],
            "memory_growth_ratio": shipped["server_rss_mb_after"] / shipped["server_rss_mb_before"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["ratios"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
