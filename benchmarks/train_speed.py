"""Training speed per registered model on this machine: images/s of a training step at the model's
input size in three modes, measured in one process so the ratios are comparable: plain fp32 (the
baseline), fp32 in channels_last memory format (what ``models.training.train`` uses), and bf16 autocast.

    python benchmarks/train_speed.py [--models NAME...] [--steps 5] [--batch-size 16]

Writes benchmarks/results/train_speed.json and prints a table of ratios against the baseline
(> 1: faster). The bf16 ratio is what ``TrainDefaults.bf16_on_cpu`` in models/zoo.py follows.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.zoo import REGISTRY, build_model, get_spec  # noqa: E402


def images_per_s(name: str, bf16: bool, steps: int, batch: int, channels_last: bool = False) -> float:
    spec = get_spec(name)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(name, init=None).train().to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, spec.input_size, spec.input_size).contiguous(memory_format=fmt)
    target = (torch.randint(0, 3, (batch,)) if spec.task != "segment"
              else (torch.rand(batch, 1, spec.input_size, spec.input_size) > 0.5).float())

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x).float()
        loss = (F.cross_entropy(out, target) if spec.task != "segment"
                else F.binary_cross_entropy_with_logits(out, target))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: the first steps pick oneDNN kernels
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(REGISTRY), choices=list(REGISTRY))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    rows = []
    for name in args.models:
        fp32 = images_per_s(name, False, args.steps, args.batch_size)
        cl = images_per_s(name, False, args.steps, args.batch_size, channels_last=True)
        bf16 = images_per_s(name, True, args.steps, args.batch_size)
        rows.append({"model": name, "input": get_spec(name).input_size, "fp32_img_s": round(fp32, 2),
                     "channels_last_img_s": round(cl, 2), "bf16_img_s": round(bf16, 2),
                     "channels_last_over_fp32": round(cl / fp32, 2), "bf16_over_fp32": round(bf16 / fp32, 2)})
        print(f"{name:22s} {rows[-1]['input']:4d} px  fp32 {fp32:6.2f} img/s  channels_last x{cl / fp32:.2f}  "
              f"bf16 x{bf16 / fp32:.2f}", flush=True)
    out = Path(__file__).resolve().parent / "results" / "train_speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                               "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "batch_size": args.batch_size, "steps": args.steps, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
