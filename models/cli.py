"""SonoMark's command line, one subcommand per pipeline task (``sonomark`` or ``python -m models``).

Each subcommand is the ``main(argv)`` of the module that does the work, imported only when it is
run, so ``sonomark --help`` answers without loading torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Command:
    module: str
    function: str
    summary: str


# In pipeline order: data, training and shipping, inference, the app.
COMMANDS: dict[str, Command] = {
    "audit": Command("models.data.audit", "main", "audit the datasets (defects, near-duplicates); writes reports/audit.*"),
    "splits": Command("models.data.splits", "main", "make or check the fixed, grouped train/val/test split"),
    "train": Command("models.training.train", "main", "train registered models (resumable checkpoints in runs/)"),
    "ship": Command("models.training.shipping", "main", "export trained models as fp16 weights if they beat the shipped ones"),
    "verify": Command("models.weights", "verify_main", "check every shipped weights file against the manifest"),
    "calibrate": Command("models.training.calibrate", "main",
                         "fit temperatures, ensemble weights and the mask threshold on validation"),
    "adapt": Command("models.training.adapt", "main",
                     "fine-tune the ensemble on a site's exported corrections into a new weights folder"),
    "evaluate": Command("models.training.evaluate", "main", "test-split metrics, plots and the model card"),
    "card": Command("models.training.model_card", "main", "re-render the model card (weights/README.md)"),
    "predict": Command("models.inference.predict", "main", "pre-annotate a folder of scans (CSV, masks, overlays)"),
    "app": Command("app.__main__", "main", "run the review app (http://127.0.0.1:7860)"),
}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sonomark", description=__doc__.split("\n\n")[0],
                                 epilog="`sonomark COMMAND --help` describes a command's options.")
    sub = ap.add_subparsers(title="commands", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.summary, add_help=False)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = _parser()
        if not argv:
            parser.print_help()
            return 2
        parser.parse_args(argv[:1])  # --help prints the list; an unknown name exits 2 naming the choices
        return 0
    command = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(command.module), command.function)(argv[1:]) or 0)
