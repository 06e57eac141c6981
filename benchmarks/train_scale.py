"""Training throughput: one process against ``torchrun`` with 2 processes (gloo), on this machine.

    python benchmarks/train_scale.py [--model efficientnet_lite0] [--limit 160] [--epochs 3]

Runs ``sonomark train`` on the first ``--limit`` cases of each split of the datasets, once as one
process (all cores) and once under ``torchrun --nproc_per_node 2`` (one thread per process), with
the same global batch, and reads the training images/s of the epochs after the first from each
run's ``log.csv`` (validation and start-up excluded). On this 2-core machine two processes share
the cores that one process already uses, so the ratio shows the DDP overhead rather than a gain;
the gain comes with one process per GPU or per machine. Writes ``benchmarks/results/train_scale.json``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data.sources import DEFAULT_DATA_DIR  # noqa: E402


def run(processes: int, threads: int, args: argparse.Namespace, runs: Path) -> dict:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    subprocess.run([*launcher, "-m", "models", "train", "--models", args.model, "--data", *map(str, args.data),
                    "--limit", str(args.limit), "--epochs", str(args.epochs), "--runs", str(runs), "--quiet",
                    "--device", "cpu"], cwd=REPO, env=env, check=True)
    wall = time.perf_counter() - t
    rows = list(csv.DictReader(open(runs / args.model / "log.csv")))
    rates = [float(r["images_per_s"]) for r in rows[1:]]
    return {"processes": processes, "threads_per_process": threads, "wall_s": round(wall, 1),
            "train_images_per_s": round(statistics.median(rates), 2),
            "samples_per_epoch": int(rows[-1]["samples"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--data", nargs="+", type=Path, default=[DEFAULT_DATA_DIR])
    ap.add_argument("--limit", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_scale.json")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="sonomark-train-scale-"))
    try:
        one = run(1, cores, args, root / "one")
        two = run(2, max(cores // 2, 1), args, root / "two")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out = {"machine": f"{platform.machine()}, {cores} cores", "model": args.model, "cases_per_split": args.limit,
           "epochs": args.epochs, "one_process": one, "torchrun_2_processes": two,
           "ratio_2_vs_1": round(two["train_images_per_s"] / one["train_images_per_s"], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
