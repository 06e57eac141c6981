"""Adapting to a scanner from its scans alone: ``sonomark adapt-scans SCANS... --out SITE_WEIGHTS``.

Each batch-norm layer of a member normalises its features by the mean and variance they had over the
training scans. A scanner the models never met (other gain, speckle, depth, processing) moves those
statistics, and every layer after the first reads features off their scale. Re-estimating them on the
site's own scans (AdaBN, Li et al. 2016) needs no label, no mask and no training: one forward pass per
member over the scans. Nothing else changes: weights, temperatures, ensemble weights and the mask
threshold stay the base's.

``--blend B`` sets how far the statistics move: ``B * site + (1 - B) * base`` (1: the site's alone).
Measured across sites in ``reports/adapt_scans.md``; the default is the blend chosen there on the
left-out sources' validation splits.

The output is a complete weights folder (manifest with checksums, ``adapt_scans.json``, a model
card naming the base and the scans by hash); the base folder is never touched. Load it with
``--weights SITE_WEIGHTS`` (``sonomark app``, ``predict``, ``evaluate``), or adapt it further with
corrections (``sonomark adapt EXPORTS --weights SITE_WEIGHTS``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from models.inference.predict import find_inputs
from models.inference.scan import ScanError, read_scan
from models.preprocess import normalize, resize_scan
from models.training.adapt import copy_weights
from models.training.calibrate import int8_ranges
from models.weights import WEIGHTS_DIR, Manifest, fp16_state, sha256_file
from models.zoo import ModelSpec, get_spec

DEFAULT_BLEND = 1.0
MIN_SCANS = 20  # fewer scans estimate a variance per channel too noisily to replace the base's
BATCH = 16
FP16_SAFE = 2.0 ** 15  # running variances kept under this (fp16's largest value is 65504)


@dataclass(frozen=True)
class SiteScans:
    """The site's readable scans, as the models read them (the imaging region of a screen capture)."""

    views: tuple[np.ndarray, ...]  # (H, W) uint8 each
    names: tuple[str, ...]
    skipped: tuple[str, ...]  # "path: why" for each file that could not be read
    sha256: str  # of the sorted file checksums: which scans, whatever their names or order


def read_site_scans(inputs: Sequence[Path], progress: bool = True, min_scans: int = MIN_SCANS) -> SiteScans:
    """Every scan file in ``inputs`` (files or folders); unreadable files are listed, not fatal."""
    paths = find_inputs(inputs)
    views, names, skipped, digests = [], [], [], []
    for path in tqdm(paths, desc="reading the site's scans", unit="scan", disable=not progress):
        try:
            scan = read_scan(path)
        except ScanError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        views.append(scan.model_view)
        names.append(str(path))
        digests.append(scan.sha256)
    if len(views) < min_scans:
        where = ", ".join(str(p) for p in inputs)
        raise ValueError(f"{where}: {len(views)} readable scans ({len(skipped)} unreadable); adapting needs at "
                         f"least {min_scans} scans from the site's scanner (PNG, JPEG or DICOM). Point it at a "
                         "folder holding more of them")
    digest = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
    return SiteScans(tuple(views), tuple(names), tuple(skipped), digest)


def batchnorm_layers(model: torch.nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def stack(views: Sequence[np.ndarray], size: int) -> np.ndarray:
    """The scans resized to a member's input, ``(N, size, size)`` uint8."""
    return np.stack([resize_scan(v, size) for v in views])


@torch.no_grad()
def reestimate(model: torch.nn.Module, spec: ModelSpec, images: np.ndarray, blend: float = DEFAULT_BLEND,
               batch_size: int = BATCH, progress: bool = False) -> int:
    """Replace ``model``'s batch-norm statistics, in place, by ``blend * (their values over images) + (1 -
    blend) * (their values now)``; the number of layers changed. Nothing else in the model moves."""
    if not 0 < blend <= 1:
        raise ValueError(f"--blend {blend}: give a share above 0 and at most 1 (1: the site's statistics alone)")
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    if len(images) < 2:
        raise ValueError(f"{len(images)} scan: batch statistics need at least 2")
    before = [(m.running_mean.clone(), m.running_var.clone(), m.momentum) for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not the last few
        m.train()
    # near-equal batches, none of one scan (a batch of one has no variance)
    batches = np.array_split(np.arange(len(images)), max(1, len(images) // batch_size))
    for batch in tqdm(batches, desc=f"{spec.name}: batch-norm statistics", unit="batch", disable=not progress):
        model(normalize(torch.from_numpy(np.ascontiguousarray(images[batch])), spec))
    for m, (mean, var, momentum) in zip(layers, before):
        m.running_mean.mul_(blend).add_(mean, alpha=1 - blend)
        m.running_var.mul_(blend).add_(var, alpha=1 - blend)
        m.momentum = momentum
    model.eval()
    return len(layers)


def fit_fp16(model: torch.nn.Module) -> int:
    """Rescale, exactly, each batch-norm channel whose running variance fp16 could not hold (VGG19's head reads
    features in the 0-255 scale: variances in the tens of thousands): the variance divided by 4^j and the
    scale by 2^j give the same output (powers of two lose no bits). The number of channels rescaled."""
    changed = 0
    for m in batchnorm_layers(model):
        over = m.running_var > FP16_SAFE
        if m.weight is None or not over.any():
            continue
        j = torch.ceil(torch.log2(m.running_var[over] / FP16_SAFE) / 2)
        with torch.no_grad():
            m.running_var[over] /= 4 ** j
            m.weight[over] /= 2 ** j
        changed += int(over.sum())
    return changed


def adapt_scans(inputs: Sequence[Path], out: Path, base_dir: Path = WEIGHTS_DIR, blend: float = DEFAULT_BLEND,
                models: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Re-estimate the batch-norm statistics of ``base_dir``'s members on the site's scans; writes ``out``
    (a complete weights folder) and returns its report."""
    t0 = time.time()
    out, base_dir = Path(out).resolve(), Path(base_dir).resolve()
    if out == base_dir or out == WEIGHTS_DIR.resolve():
        raise ValueError(f"--out {out} is the base or the shipped weights folder; adaptation writes a new folder")
    if not 0 < blend <= 1:
        raise ValueError(f"--blend {blend}: give a share above 0 and at most 1 (1: the site's statistics alone)")
    base = Manifest.read(base_dir)
    if not base.shipped():
        raise FileNotFoundError(f"{base_dir / 'manifest.json'}: no shipped models to adapt; give --weights the "
                                "folder of the weights to start from")
    names = list(models) if models else base.shipped()
    missing = sorted(set(names) - set(base.shipped()))
    if missing:
        raise ValueError(f"{', '.join(missing)}: not in {base_dir / 'manifest.json'}; choose from "
                         f"{', '.join(base.shipped())}")
    site = read_site_scans(inputs, progress)
    say = print if progress else (lambda *a, **k: None)
    say(f"{len(site.views)} scans read ({len(site.skipped)} unreadable); re-estimating batch-norm statistics of "
        f"{', '.join(names)} (blend {blend})")
    adapted = copy_weights(base, out)
    layers: dict[str, int] = {}
    for k, name in enumerate(names, 1):
        spec = get_spec(name)
        model = base.load(name)
        images = stack(site.views, spec.input_size)
        layers[name] = reestimate(model, spec, images, blend, progress=progress)
        if not layers[name]:
            say(f"[{k}/{len(names)}] {name}: no batch-norm layer, kept as it is")
            continue
        rescaled = fit_fp16(model)
        path = out / adapted.models[name]["file"]
        save_file(fp16_state(model.state_dict(), path), str(path),
                  metadata={"model": name, "format": "sonomark-fp16"})
        entry = adapted.models[name]
        entry.update(sha256=sha256_file(path), bytes=path.stat().st_size)
        entry["site_statistics"] = {"scans": len(site.views), "scans_sha256": site.sha256, "blend": blend,
                                    "layers": layers[name], "base_sha256": base.models[name]["sha256"],
                                    "fp16_rescaled_channels": rescaled}
        if spec.int8:  # its activations moved: the int8 ranges are measured again, on the site's scans
            entry["int8_ranges"] = int8_ranges(model, spec, images)
        say(f"[{k}/{len(names)}] {name}: {layers[name]} batch-norm layer{'s' if layers[name] > 1 else ''} re-estimated")
        adapted.write()
    report = {"base": {"folder": str(base_dir), "manifest_sha256": sha256_file(base_dir / "manifest.json"),
                       **base.identity()},
              "scans": len(site.views), "scans_sha256": site.sha256, "skipped": list(site.skipped),
              "inputs": [str(p) for p in inputs], "blend": blend, "layers": layers,
              "minutes": round((time.time() - t0) / 60, 1)}
    (out / "adapt_scans.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "README.md").write_text(card(report))
    say(card(report))
    return report


def card(report: dict) -> str:
    """The adapted folder's model card."""
    changed = [f"{n} ({k} layers)" for n, k in report["layers"].items() if k]
    kept = [n for n, k in report["layers"].items() if not k]
    lines = ["# Site-adapted SonoMark weights (batch-norm statistics)", "",
             f"From `{report['base']['folder']}` (manifest sha256 `{report['base']['manifest_sha256'][:12]}`) by "
             f"`sonomark adapt-scans`, in {report['minutes']} min, on {report['scans']} of the site's scans "
             f"(sha256 of their checksums `{report['scans_sha256'][:12]}`; {len(report['skipped'])} unreadable).", "",
             f"- Batch-norm statistics re-estimated (blend {report['blend']}: that share of the site's, the rest "
             f"the base's): {', '.join(changed) or 'none'}.",
             *([f"- Without batch norm, kept as they were: {', '.join(kept)}."] if kept else []),
             "- No label was used and nothing was trained: weights, temperatures, ensemble weights and the mask "
             "threshold are the base's.",
             "- What it buys across sites, and what it costs: `reports/adapt_scans.md` in the SonoMark repository. "
             "Measure it on your own labelled cases before relying on it (`sonomark evaluate --weights` on a "
             "labelled export, or `sonomark adapt` with corrections from here)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark adapt-scans", description=__doc__.split("\n\n")[0])
    ap.add_argument("scans", nargs="+", type=Path, help="scan files or folders from the site's scanner (no labels)")
    ap.add_argument("--out", type=Path, required=True, help="the site's weights folder to write")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="base weights (default: %(default)s)")
    ap.add_argument("--blend", type=float, default=DEFAULT_BLEND,
                    help="share of the site's statistics, the rest the base's (default: %(default)s)")
    ap.add_argument("--models", nargs="+", help="members to adapt (default: every shipped member)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        adapt_scans(args.scans, args.out, args.weights, args.blend, args.models, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
