"""The review queue: background pre-annotation, uncertainty order, navigation, resume, done marks."""
import numpy as np
import pytest
from PIL import Image

from models.annotation import export
from models.annotation.review_queue import ReviewQueue
from models.inference.analysis import Analyzer
from models.inference.scan import read_scan
from tests.inference.test_analysis import ship_random


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Analyzer(ship_random(tmp_path_factory.mktemp("q"), ("resnet18", "unet_lite0")))


@pytest.fixture
def folder(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        Image.fromarray(rng.integers(0, 256, (80 + 5 * k, 100), dtype=np.uint8)).save(scans / f"s{k}.png")
    (scans / "broken.png").write_bytes(b"nope")
    return scans


def test_queue_orders_navigates_resumes_and_marks_done(tmp_path, folder, engine):
    q = ReviewQueue(folder, tmp_path / "exports", tmp_path / "queues")
    q.start(engine)
    q.wait(120)
    assert not q.running and q.failure is None and q.progress() == (6, 6)
    items = q.items()
    readable = [i for i in items if not i.error]
    assert [i.uncertainty for i in readable] == sorted((i.uncertainty for i in readable), reverse=True)
    assert items[-1].error  # the unreadable file goes last
    first = q.current()
    assert first.path == readable[0].path
    assert q.next().path == readable[1].path
    assert q.skip().path == readable[2].path and q.items()[1].skipped
    assert q.previous().path == readable[1].path
    # save the current case: it counts as done
    scan = read_scan(q.current().path)
    export.save_case(tmp_path / "exports", export.Annotation(scan, "benign", "annotator",
                                                             np.ones(scan.shape, bool), "q"))
    assert q.done_count() == (1, 6)
    # a restart resumes at the same place, without pre-annotating again
    again = ReviewQueue(folder, tmp_path / "exports", tmp_path / "queues")
    assert again.current().path == readable[1].path and again.current().done
    assert again.progress() == (6, 6)


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ReviewQueue(tmp_path / "nowhere", tmp_path / "e", tmp_path / "q")
