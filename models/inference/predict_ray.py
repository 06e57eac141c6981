"""Archive pre-annotation on a Ray cluster: ``sonomark predict INPUT... --out DIR --engine ray``.

Ray Data streams the scan paths to a pool of actors; each actor loads the analysis engine once (the
models and their ONNX Runtime sessions, about 2 s) and then analyses batch after batch, writing masks
(and overlays) straight into ``DIR``. The driver collects the rows into the same ``predictions.csv`` as
the local run (``models.inference.predict``), after every batch, so a stopped run resumes where it left
off, and a file that cannot be read gets its row with the error. Why Ray Data rather than Dask: the work
is a stateful map (a loaded model per worker) over a stream of files, which Ray Data's actor pools do
directly, with back-pressure and per-actor CPU reservations; Dask would need the model loaded per task
or managed by hand per worker.

- ``--ray-address auto`` (or ``ray://HOST:10001``) joins an existing cluster; every worker must see the
  inputs, ``DIR`` and the weights at the same paths (a shared file system), and have SonoMark installed.
- Without an address, a local cluster with ``--workers`` CPUs is started for the run and stopped after it.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from models.inference.predictions import COLUMNS, predict_one, read_rows, write_rows
from models.inference.scan import ScanError

BATCH = 4  # scans per actor call: small, so that progress and the resumable CSV follow closely


class _Annotator:
    """One Ray actor: the analysis engine, loaded once, applied to batches of paths."""

    def __init__(self, weights: str, out: str, overlays: bool, frame: int | None, threads: int):
        import torch

        from models.inference.analysis import Analyzer
        torch.set_num_threads(threads)  # one actor per reserved CPU: no oversubscription
        self.analyzer = Analyzer(Path(weights))
        self.out, self.overlays, self.frame = Path(out), overlays, frame

    def __call__(self, batch: dict) -> dict:
        rows = []
        for path in batch["path"]:
            try:
                rows.append(predict_one(Path(path), self.out, self.analyzer, self.overlays, self.frame))
            except ScanError as exc:
                rows.append({**{c: "" for c in COLUMNS}, "path": path, "error": f"{exc.kind}: {exc}"})
            except Exception as exc:  # noqa: BLE001 - one file's failure is that file's row, never the run's end
                rows.append({**{c: "" for c in COLUMNS}, "path": path,
                             "error": f"failed: {type(exc).__name__}: {exc}"})
        return {c: [r[c] for r in rows] for c in COLUMNS}


def predict_ray(inputs: list[Path], out: Path, weights: Path, overlays: bool = False, sort: str | None = None,
                frame: int | None = None, workers: int = 2, address: str | None = None, threads: int = 1,
                progress: bool = True, timing: dict | None = None) -> list[dict[str, str]]:
    """As ``models.inference.predict.predict``, on ``workers`` Ray actors (a local cluster, or ``address``).
    ``timing``, if given, gets the seconds to the first rows back (start-up: cluster, actors loading the models)
    and to the last, and how many scans came with the first batches, for benchmarks."""
    import time

    import ray
    t0 = time.perf_counter()

    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    csv_path = out / "predictions.csv"
    done = {r["path"]: r for r in read_rows(csv_path) if not r["error"] and (out / r["mask_path"]).is_file()}
    rows = list(done.values())
    todo = [str(p) for p in inputs if str(p) not in done]
    started = bool(todo) and not ray.is_initialized()
    if started:
        # The workers import SonoMark from this checkout when it is not installed where they run.
        repo = str(Path(__file__).resolve().parents[2])
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}}
        kwargs = {"address": address} if address else {"num_cpus": workers * threads, "include_dashboard": False}
        ray.init(runtime_env=env, logging_level="ERROR", log_to_driver=False, **kwargs)
    try:
        if todo:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False  # ours counts scans
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            ds = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=max(1, len(todo) // BATCH))
            results = ds.map_batches(_Annotator, batch_size=BATCH, concurrency=workers, num_cpus=threads,
                                     fn_constructor_args=(str(weights), str(out), overlays, frame, threads),
                                     batch_format="default", max_restarts=0)
            bar = tqdm(total=len(todo), desc=f"pre-annotating on {workers} Ray workers", unit="scan",
                       disable=not progress)
            for batch in results.iter_batches(batch_size=None, batch_format="default"):
                new = [{c: str(batch[c][k]) for c in COLUMNS} for k in range(len(batch["path"]))]
                for r in new:
                    if r["error"]:
                        print(f"warning: {r['path']}: {r['error']}", file=sys.stderr)
                rows += new
                write_rows(csv_path, rows)  # after every batch: a stopped run loses at most the batches in flight
                bar.update(len(new))
                if timing is not None:
                    timing.setdefault("first_s", time.perf_counter() - t0)
                    timing.setdefault("first_scans", len(new))
                    timing["last_s"] = time.perf_counter() - t0
            bar.close()
    finally:
        if started:
            ray.shutdown()
    order = {str(p): k for k, p in enumerate(inputs)}
    rows.sort(key=lambda r: order.get(r["path"], len(order)))  # the local run's order
    if sort == "uncertainty":
        rows.sort(key=lambda r: (r["error"] != "", -float(r["uncertainty"] or 0)))
    write_rows(csv_path, rows)
    return rows
