"""ONNX graphs kept on disk, so that a restart does not export every member again.

Exporting the eight shipped members to ONNX (and building the two int8 graphs) takes 7-10 s on the 2-core
CPU, against about 0.5 s to hash their weights; every app start, Space cold start, batch run and Ray worker
paid it. A graph is stored under a key made of everything that decides it: the model's class and
parameters (weights and buffers, so a site-adapted model never gets the shipped one's graph), the input
size, the int8 activation ranges, the exporter's opset, and the versions of the libraries that build and
quantize the graph and of this project's model code. A new key simply exports again.

Where: ``$SONOMARK_ONNX_CACHE``, else ``$XDG_CACHE_HOME/sonomark/onnx``, else ``~/.cache/sonomark/onnx``;
``SONOMARK_ONNX_CACHE=off`` turns it off. It holds model graphs only, never scans. Files are written
atomically; an unreadable folder or a damaged file costs an export, never an analysis. The least recently
used graphs are removed past ``LIMIT_BYTES``.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

ENV = "SONOMARK_ONNX_CACHE"
OFF = "off"
LIMIT_BYTES = 1 << 30  # a weights version's eight graphs take about 180 MB
LIBRARIES = ("torch", "onnx", "onnxruntime", "timm", "segmentation-models-pytorch", "transformers")
log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """The folder graphs are kept in, or None when ``SONOMARK_ONNX_CACHE=off``."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() == OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sonomark" / "onnx"


def _versions() -> list[str]:
    out = []
    for name in LIBRARIES:
        try:
            out.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name}=-")
    return out


def _source(model: nn.Module) -> bytes:
    """This project's code that decides the graph: the model class's own module (if it is ours) and the zoo."""
    parts = []
    for module in {type(model).__module__, "models.zoo"}:
        try:
            parts.append(inspect.getsource(__import__(module, fromlist=["_"])).encode())
        except (OSError, TypeError, ImportError):
            parts.append(module.encode())
    return b"".join(sorted(parts))


def graph_key(model: nn.Module, size: int, opset: int, int8_ranges: Mapping[str, list[float]] | None) -> str:
    """A digest of everything the exported (and quantized) graph depends on."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"class": f"{type(model).__module__}.{type(model).__qualname__}", "size": size,
                         "opset": opset, "int8": {k: list(v) for k, v in sorted((int8_ranges or {}).items())},
                         "versions": _versions()}, sort_keys=True).encode())
    h.update(_source(model))
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cached_graph(key: str, build: Callable[[], bytes], folder: Path | None = None) -> bytes:
    """The graph stored under ``key``, or ``build()``'s, stored for next time."""
    folder = cache_dir() if folder is None else folder
    if folder is None:
        return build()
    path = folder / f"{key}.onnx"
    try:
        graph = path.read_bytes()
        os.utime(path)  # marks it recently used
        return graph
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("ONNX cache: cannot read %s (%s); exporting again", path, exc)
    graph = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as fh:
            fh.write(graph)
        os.replace(fh.name, path)  # readers see the whole file or none
        prune(folder)
    except OSError as exc:
        log.warning("ONNX cache: cannot write to %s (%s); set %s to a writable folder, or to %r", folder, exc, ENV,
                    OFF)
    return graph


def forget(key: str, folder: Path | None = None) -> bool:
    """Removes the graph stored under ``key`` (ONNX Runtime refused it); False if none was stored."""
    folder = cache_dir() if folder is None else folder
    if folder is None:
        return False
    try:
        (folder / f"{key}.onnx").unlink()
    except OSError:
        return False
    return True


def prune(folder: Path, limit: int = LIMIT_BYTES) -> None:
    """Removes the least recently used graphs until the rest fit in ``limit`` bytes, and writes left unfinished
    by a process that died (a day old)."""
    now, stats = time.time(), []
    for path in folder.iterdir():
        try:  # another process may remove a file between the listing and its stat
            st = path.stat()
        except FileNotFoundError:
            continue
        if path.suffix == ".onnx":
            stats.append((st.st_mtime, st.st_size, path))
        elif path.suffix == ".part" and now - st.st_mtime > 86400:
            path.unlink(missing_ok=True)
    total = 0
    for _, size, path in sorted(stats, reverse=True):
        total += size
        if total > limit:
            path.unlink(missing_ok=True)
