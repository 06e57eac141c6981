"""``sonomark ship``: a trained run replaces the shipped weights only if it scores higher on the same
validation cases, both measured now.

The score a run recorded was measured on its own run's sources (a run on BUS-BRA alone never saw BUSI's
validation cases) by the code of its day; the shipped entry's score too. So both are measured again here,
as fp16 (what ships), with training's own validation score, on the committed split's validation cases of
the sources the shipped weights were trained on. Without the datasets, ``--force`` ships unmeasured.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from models.data.paths import REPO
from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, EXPORT_SOURCES, load_verified
from models.preprocess import decode_for
from models.training.train import RunConfig, class_weights, validate
from models.weights import WEIGHTS_DIR, Manifest, checkpoint_path, fp16_state, retire, ship
from models.zoo import REGISTRY, build_model, get_spec


def as_shipped(name: str, state: dict, source: Path) -> torch.nn.Module:
    """``name`` with ``state`` rounded to fp16 and back, as it would run once shipped."""
    model = build_model(name, init=None)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype if k in own else v.dtype) for k, v in fp16_state(state, source).items()})
    return model.eval()


def rescore(name: str, runs: Path, folder: Path, data_dirs, split_path: Path = DEFAULT_SPLIT,
            progress: bool = True, loaded: tuple | None = None) -> tuple[float, float] | None:
    """(candidate, shipped) validation scores on the same cases, now; None when nothing is shipped as ``name``.
    ``loaded``: ``load_verified``'s answer for ``data_dirs``, when the caller has it."""
    manifest = Manifest.read(folder)
    old = manifest.models.get(name)
    if not old:
        return None
    path = checkpoint_path(name, runs)
    candidate = torch.load(path, map_location="cpu", weights_only=False)["model"]
    split, cases = loaded or load_verified(data_dirs, split_path, progress=progress)
    # annotation exports never hold validation cases (``place_exports``)
    sources = set(old.get("train_config", {}).get("data") or {c.source for c in cases}) - set(EXPORT_SOURCES)
    missing = sources - {c.source for c in cases}
    if missing:
        raise FileNotFoundError(f"{name}: the shipped weights were trained on {', '.join(sorted(missing))} too, "
                                f"which {', '.join(map(str, data_dirs))} lack; pass every dataset with --data, or "
                                "--force to ship without measuring")
    # each read as it was trained: a candidate may change the input's size or fit (the registry's now)
    chosen = [c for c in split.select(cases, "val") if c.source in sources]
    scores = []
    for spec, model in ((get_spec(name), as_shipped(name, candidate, path)),
                        (manifest.recorded_spec(name), manifest.load(name, check_input=False))):
        val = decode_for(chosen, spec, split.groups, progress=progress)
        config = RunConfig.for_model(spec, "cpu", bf16=False)
        with torch.no_grad():
            scores.append(validate(model, spec, val, config, class_weights(val.labels))[1])
    print(f"{name}: validation score now, on {len(val)} {'/'.join(sorted(sources))} cases: "
          f"candidate {scores[0]:.4f}, shipped {scores[1]:.4f} (recorded {old['val_score']:.4f})")
    return scores[0], scores[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark ship", description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"registered models: {', '.join(REGISTRY)}")
    ap.add_argument("--retire", nargs="+", default=[], metavar="NAME",
                    help="remove these shipped models (and their files) from the weights folder instead")
    ap.add_argument("--runs", type=Path, default=Path(os.environ.get("SONOMARK_RUNS", REPO / "runs")))
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="the weights folder (default: %(default)s)")
    ap.add_argument("--data", type=Path, nargs="+", default=[DEFAULT_DATA_DIR],
                    help="the datasets whose validation cases decide (default: %(default)s)")
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--force", action="store_true",
                    help="ship without measuring, even if it does not beat the shipped weights")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if not args.names and not args.retire:
        ap.error("name the models to ship, or --retire the ones to remove")
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:  # checked here: argparse rejects an empty nargs="*" list that has choices
        ap.error(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(REGISTRY)}")
    for name in args.retire:
        retire(name, args.weights)
    loaded = None
    for name in args.names:
        if not args.force and name in Manifest.read(args.weights).models and loaded is None:
            loaded = load_verified(args.data, args.split, progress=not args.quiet)  # once for every model named
        scores = None if args.force else rescore(name, args.runs, args.weights, args.data, args.split,
                                                 progress=not args.quiet, loaded=loaded)
        ship(name, args.runs, args.weights, force=args.force, scores=scores)
    return 0
