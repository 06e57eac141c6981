"""ONNX graphs kept on disk: a second start does not export again, and nothing stale or damaged is ever run."""
import logging
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from models.inference import onnx_cache
from models.inference.runtime import onnx_runner

X = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)


def net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).eval()


@pytest.fixture
def exports(monkeypatch, tmp_path):
    """The number of ONNX exports so far, with the cache in a fresh folder."""
    monkeypatch.setenv(onnx_cache.ENV, str(tmp_path / "cache"))
    calls, real = [], torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_a_second_runner_of_the_same_model_reads_the_stored_graph(exports, tmp_path):
    first = onnx_runner(net(), 16)(X)
    again = onnx_runner(net(), 16)(X)
    assert len(exports) == 1 and len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    np.testing.assert_array_equal(first, again)


def test_other_weights_or_ranges_or_sizes_are_other_graphs(exports):
    model = net()
    onnx_runner(model, 16)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1
    changed = onnx_runner(model, 16)(X)
    np.testing.assert_allclose(changed, model(torch.from_numpy(X)).detach().numpy(), rtol=1e-4, atol=1e-5)
    onnx_runner(net(), 32)
    assert len(exports) == 3
    keys = {onnx_cache.graph_key(net(), 16, 17, r) for r in (None, {"a": [0.0, 1.0]}, {"a": [0.0, 2.0]})}
    assert len(keys) == 3 and onnx_cache.graph_key(net(), 16, 18, None) not in keys


def test_a_damaged_stored_graph_is_exported_again(exports, tmp_path, caplog):
    expected = onnx_runner(net(), 16)(X)
    (stored,) = (tmp_path / "cache").glob("*.onnx")
    stored.write_bytes(b"half a graph")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(onnx_runner(net(), 16)(X), expected)
    assert len(exports) == 2 and stored.stat().st_size > 1000 and "unusable" in caplog.text


def test_off_writes_nothing_and_an_unwritable_folder_only_costs_the_export(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv(onnx_cache.ENV, "off")
    assert onnx_cache.cache_dir() is None
    onnx_runner(net(), 16)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(onnx_cache.ENV, str(blocked / "cache"))
    with caplog.at_level(logging.WARNING):
        assert onnx_runner(net(), 16)(X).shape == (1, 3)
    assert f"set {onnx_cache.ENV}" in caplog.text and blocked.read_text() == "not a folder"


def test_the_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(onnx_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert onnx_cache.cache_dir() == tmp_path / "sonomark" / "onnx"


def test_prune_keeps_the_most_recently_used_within_the_limit(tmp_path):
    now = time.time()
    for k, age in enumerate([30, 10, 20]):  # graph 1 used last, then 2, then 0
        path = tmp_path / f"g{k}.onnx"
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - age, now - age))
    stale, fresh = tmp_path / "old.part", tmp_path / "new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (now - 2 * 86400, now - 2 * 86400))
    onnx_cache.prune(tmp_path, limit=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g1.onnx", "g2.onnx", "new.part"]
