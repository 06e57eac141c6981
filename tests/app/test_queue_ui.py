"""Queue tab handlers without a browser."""
import numpy as np
import pytest
from PIL import Image

from app import queue_ui, review
from models.inference.analysis import Analyzer
from tests.inference.test_analysis import ship_random


@pytest.fixture
def setup(tmp_path, monkeypatch, tmp_path_factory):
    engine = Analyzer(ship_random(tmp_path_factory.mktemp("qw"), ("resnet18", "unet_lite0")))
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    monkeypatch.setenv("SONOMARK_EXPORT_DIR", str(tmp_path / "exports"))
    monkeypatch.setenv("SONOMARK_QUEUE_DIR", str(tmp_path / "queues"))
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(3):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (70, 90), dtype=np.uint8)).save(scans / f"q{k}.png")
    return scans


def test_open_status_step_and_current(setup):
    q = queue_ui.open_queue(str(setup))
    q.wait(120)
    text, rows = queue_ui.status(q)
    assert "0 of 3 done" in text and "pre-annotated 3 of 3" in text and len(rows) == 3
    assert [r[0] for r in rows].count("▶") == 1
    first = queue_ui.current_path(q)
    queue_ui.step(q, "next")
    assert queue_ui.current_path(q) != first
    queue_ui.step(q, "previous")
    assert queue_ui.current_path(q) == first


def test_queue_errors_are_clear(setup, tmp_path):
    with pytest.raises(review.ReviewError, match="Type the path"):
        queue_ui.open_queue("  ")
    with pytest.raises(review.ReviewError, match="no such folder"):
        queue_ui.open_queue(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(review.ReviewError, match="no scan files"):
        queue_ui.open_queue(str(tmp_path / "empty"))
    with pytest.raises(review.ReviewError, match="Open a folder first"):
        queue_ui.step(None, "next")
    assert queue_ui.status(None) == ("No folder open.", [])
