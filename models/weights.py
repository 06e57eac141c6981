"""Shipped weights: fp16 safetensors in ``weights/`` with ``weights/manifest.json``.

The manifest records, per model, the file and its sha256, the input spec it was trained with,
its calibration (temperature; activation ranges for a member run int8), its validation score, and the
training command; and, for the ensemble, the combination weights and the segmentation threshold fitted on validation.
Loading verifies every checksum and that the registry still describes the weights.

    sonomark ship NAME...   # export runs/NAME/best.pt if it beats the shipped one (models/training/shipping.py)
    sonomark verify         # check every file against the manifest
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .data.paths import REPO
from .zoo import REGISTRY, ModelSpec, build_model, get_spec

WEIGHTS_DIR = Path(os.environ.get("SONOMARK_WEIGHTS", REPO / "weights"))
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class WeightsError(RuntimeError):
    """Shipped weights that are missing, altered, or no longer fit the registry."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_spec(spec: ModelSpec) -> dict:
    out = {"input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std),
           "classes": list(spec.classes), "cam_layer": spec.cam_layer}
    if spec.fit != "squash":  # only where set, so that weights shipped before the fit existed still verify
        out["fit"] = spec.fit
    if spec.task == "grade":
        out["crop_margin"] = spec.crop_margin
    return out


@dataclass
class Manifest:
    folder: Path
    data: dict

    @classmethod
    def read(cls, folder: Path = WEIGHTS_DIR) -> Manifest:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            return cls(Path(folder), {"format_version": FORMAT_VERSION, "models": {}, "ensemble": {}})
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise WeightsError(f"{path}: format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        return cls(Path(folder), data)

    def write(self) -> Path:
        path = self.folder / MANIFEST
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(path)
        return path

    @property
    def models(self) -> dict[str, dict]:
        return self.data["models"]

    @property
    def ensemble(self) -> dict:
        return self.data.setdefault("ensemble", {})

    def identity(self) -> dict:
        """What a set of results was computed with: each shipped file's sha256 and a digest of the calibration
        (temperatures, ensemble weights, threshold). Metrics record it; a test compares it with the manifest."""
        calibration = {"temperatures": {n: m.get("temperature") for n, m in sorted(self.models.items())},
                       "ensemble": self.ensemble.get("fitted")}
        biases = {n: m["class_bias"] for n, m in sorted(self.models.items()) if m.get("class_bias")}
        if biases:  # only where fitted, so that the digest of weights without them is unchanged
            calibration["class_bias"] = biases
        ranges = {n: m["int8_ranges"] for n, m in sorted(self.models.items()) if m.get("int8_ranges")}
        if ranges:  # likewise
            calibration["int8_ranges"] = ranges
        scopes = {n: REGISTRY[n].int8_scope for n in ranges if n in REGISTRY and REGISTRY[n].int8_scope}
        if scopes:  # likewise: the part of the graph that runs int8 (models.inference.quantize)
            calibration["int8_scope"] = scopes
        digest = hashlib.sha256(json.dumps(calibration, sort_keys=True).encode()).hexdigest()
        return {"models": {n: self.models[n]["sha256"] for n in sorted(self.models)}, "calibration_sha256": digest}

    def int8_ranges(self, name: str) -> dict[str, list[float]] | None:
        """The activation ranges ``name`` runs int8 with on the CPU (``models.inference.quantize``): fitted by
        calibration for a member registered ``int8``; None for the others."""
        spec = REGISTRY.get(name)  # None for a retired member (verify() names it)
        return self.models[name].get("int8_ranges") if spec is not None and spec.int8 else None

    def shipped(self, task: str | None = None) -> list[str]:
        return [n for n, m in self.models.items() if task in (None, m["task"])]

    def verify(self, name: str, check_input: bool = True) -> Path:
        """The weights file of ``name`` after checking it exists, its checksum and (``check_input``) that the
        registry still reads scans as they were trained on."""
        if name not in self.models:
            raise WeightsError(f"{self.folder / MANIFEST}: no shipped weights for {name!r} "
                               f"(shipped: {', '.join(self.models) or 'none'}); train and ship it first")
        entry = self.models[name]
        path = self.folder / entry["file"]
        if name not in REGISTRY:
            raise WeightsError(f"{path}: {name!r} is no longer a registered model; remove it with "
                               f"`sonomark ship --retire {name} --weights {self.folder}`")
        if not path.is_file():
            raise WeightsError(f"{path}: weights file missing; restore it (git checkout -- {path.name}) "
                               "or re-ship the model")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise WeightsError(f"{path}: sha256 {actual[:12]} does not match the manifest's {entry['sha256'][:12]}; "
                               "the file is corrupt or was replaced without updating the manifest")
        if check_input and entry["input"] != input_spec(get_spec(name)):
            raise WeightsError(f"{path}: trained with input {entry['input']}, but the registry now says "
                               f"{input_spec(get_spec(name))}; re-train or restore the registry entry")
        return path

    def recorded_spec(self, name: str) -> ModelSpec:
        """The registry's spec of ``name`` with the input size and fit its shipped weights were trained with:
        what a candidate that changes them is compared against (``models.training.shipping.rescore``)."""
        entry = self.models[name]["input"]
        return replace(get_spec(name), input_size=entry["input_size"], fit=entry.get("fit", "squash"))

    def load(self, name: str, device: str = "cpu", check_input: bool = True) -> nn.Module:
        """The shipped model in eval mode (fp32), after verifying its file (``verify``)."""
        path = self.verify(name, check_input)
        state = load_file(path)
        # Built on the meta device, so that no time goes on random initial values the weights replace at once
        # (3.4 of the 5 s that loading the eight shipped members took, most of it VGG19's unused classifier).
        with torch.device("meta"):
            model = build_model(name, init=None)
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True, assign=True)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # a buffer the file does not hold
            model = build_model(name, init=None)
            model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
        return model.to(device).eval()


def training_command(name: str, config: dict) -> str:
    """The ``models.training.train`` command that reproduces a run, from its recorded configuration."""
    parts = [f"sonomark train --models {name}"]
    flags = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "patience": "--patience", "seed": "--seed"}
    parts += [f"{flag} {config[key]}" for key, flag in flags.items() if key in config]
    if config.get("init", "default") != "default":
        parts.append(f"--init {config['init']}")
    if config.get("balance_sources"):
        parts.append("--balance-sources")
    if config.get("augment", "standard") != "standard":
        parts.append(f"--augment {config['augment']}")
    if config.get("erased_normals"):
        parts.append(f"--erased-normals {config['erased_normals']}")
        if config.get("erased_from"):
            parts.append(f"--erased-from {' '.join(config['erased_from'])}")
    if config.get("distil"):
        parts.append("--distil")
        if config.get("distil_weight", 0.5) != 0.5:
            parts.append(f"--distil-weight {config['distil_weight']}")
    return " ".join(parts)


def checkpoint_path(name: str, runs: Path, final: bool = False) -> Path:
    """The run's checkpoint that shipping exports: ``best.pt``, or ``last.pt`` for ``final``."""
    path = Path(runs) / name / ("last.pt" if final else "best.pt")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained checkpoint; run `sonomark train --models {name}` first")
    return path


def fp16_state(state: dict, source: Path) -> dict:
    """``state`` as it ships: floating tensors in fp16; a value fp16 cannot hold is an error naming ``source``."""
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    overflow = [k for k, v in half.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if overflow:  # e.g. a batch norm's running variance above 65504: the shipped model would give nonsense
        raise WeightsError(f"{source}: {', '.join(overflow[:3])}{' ...' if len(overflow) > 3 else ''} do not fit fp16 "
                           "(values beyond 65504, or already inf/nan); nothing shipped. Rescale what feeds them "
                           "(see VGG19_UNET_CENTER_SCALE in models/zoo.py) and train again")
    return half


def ship(name: str, runs: Path, folder: Path = WEIGHTS_DIR, force: bool = False, command: str = "",
         final: bool = False, scores: tuple[float, float] | None = None) -> bool:
    """Export ``runs/<name>/best.pt`` to fp16 safetensors if its validation score beats the shipped one.

    ``final``: the last epoch's weights (``last.pt``) instead, for a fixed schedule whose validation
    cases must not choose the epoch (``sonomark adapt`` fits the ensemble on them).
    ``scores``: (candidate, shipped) measured now on the same validation cases (``sonomark ship`` does,
    ``models.training.shipping``); without them the recorded scores are compared, which another run's
    sources or an older version of the code may have measured.
    """
    best = checkpoint_path(name, runs, final)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    if final:
        ckpt = {**ckpt, "epoch": ckpt["state"]["epoch"], "score": ckpt["state"]["logs"][-1]["score"]}
    if scores is not None:
        ckpt = {**ckpt, "score": scores[0]}
    manifest = Manifest.read(folder)
    old = manifest.models.get(name)
    shipped_score = old["val_score"] if old and scores is None else scores[1] if old else None
    if old and not force and shipped_score >= ckpt["score"]:
        print(f"{name}: validation score {ckpt['score']:.4f} does not beat the shipped {shipped_score:.4f}"
              f"{' (both measured now)' if scores else ' (as recorded)'}; kept")
        return False
    spec = get_spec(name)
    path = Path(folder) / spec.weights_file
    path.parent.mkdir(parents=True, exist_ok=True)
    config = dict(ckpt["config"])
    if old and config.get("init") and Path(config["init"]).resolve() == path.resolve():
        # fine-tuned from the weights it replaces (--init shipped): name them by checksum, as the file is overwritten
        config["init"] = "shipped"
        config["init_sha256"], config["init_command"] = old["sha256"], old.get("command", "")
    half = fp16_state(ckpt["model"], best)
    save_file(half, str(path), metadata={"model": name, "format": "sonomark-fp16"})
    manifest.models[name] = {
        "task": spec.task, "arch": spec.arch, "init": spec.init, "file": spec.weights_file,
        "sha256": sha256_file(path), "bytes": path.stat().st_size, "input": input_spec(spec),
        "temperature": 1.0, "val_score": ckpt["score"], "best_epoch": ckpt["epoch"],
        "train_config": config, "command": command or training_command(name, config),
    }
    manifest.ensemble.pop("fitted", None)  # calibration must be re-fitted with the new member
    manifest.write()
    print(f"{name}: shipped {path.name} ({path.stat().st_size / 1e6:.1f} MB, validation score {ckpt['score']:.4f})")
    return True


def retire(name: str, folder: Path = WEIGHTS_DIR) -> None:
    """Take ``name`` out of the shipped ensemble: its manifest entry and its file; calibration must be re-fitted."""
    manifest = Manifest.read(folder)
    if name not in manifest.models:
        raise WeightsError(f"{Path(folder) / MANIFEST}: no shipped weights for {name!r} "
                           f"(shipped: {', '.join(manifest.models) or 'none'})")
    entry = manifest.models.pop(name)
    manifest.ensemble.pop("fitted", None)
    manifest.write()
    (Path(folder) / entry["file"]).unlink(missing_ok=True)
    print(f"{name}: retired from {folder} (removed {entry['file']}); run `sonomark calibrate` before using the ensemble")


def verify_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark verify", description="Check every shipped weights file against "
                                 "the manifest's checksum and size.")
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="the weights folder (default: %(default)s)")
    manifest = Manifest.read(ap.parse_args(argv).weights)
    total = 0
    for name in manifest.shipped():
        path = manifest.verify(name)
        total += path.stat().st_size
        print(f"{name}: {path.name} ok")
    print(f"{len(manifest.shipped())} models, {total / 1e6:.1f} MB")
    return 0
