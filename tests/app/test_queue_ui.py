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


def test_save_and_next_goes_through_the_queue_in_the_workspace(setup):
    """The Review workspace and the queue are one flow: Save & next saves and opens the next scan."""
    from app import ui, workspace
    q = queue_ui.open_queue(str(setup))
    q.wait(120)
    first = queue_ui.current_path(q)
    out = ui.queue_step(q, None, "previous", True, True, 0.35)  # at the first already: it stays, and is analysed
    session = out[0]
    assert session.scan.name == first.rsplit("/", 1)[-1]
    workspace.clear(session)
    painted = np.zeros(session.scan.shape, bool)
    painted[20:40, 30:60] = True
    workspace.state(session).set_active(painted)
    out = ui.save_and_next(q, session, None, "benign", "tester", True, True, 0.35)
    assert "Saved" in out[-1] and out[0].scan.name != first.rsplit("/", 1)[-1]
    assert queue_ui.status(q)[0].startswith("**1 of 3 done**")
    with pytest.raises(Exception, match="Choose the label"):
        ui.save_and_next(None, out[0], None, None, "tester", True, True, 0.35)
    workspace.state(out[0]).set_active(painted)
    alone = ui.save_and_next(None, out[0], None, "benign", "tester", True, True, 0.35)
    assert "No queue open" in alone[-1]
