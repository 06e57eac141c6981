"""Review handlers without a browser, on shipped random-initialised weights."""
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import review
from models.annotation import editing, export
from models.inference.analysis import Analyzer
from tests.inference.test_analysis import ship_random


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Analyzer(ship_random(tmp_path_factory.mktemp("w")))


@pytest.fixture
def session(engine, monkeypatch, tmp_path):
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    monkeypatch.setenv("SONOMARK_EXPORT_DIR", str(tmp_path / "exports"))
    s = review.new_session(public=False)
    yield s
    review.close_session(s)


def test_examples_cover_every_class():
    files = review.examples()
    assert len(files) >= 3
    assert {l for l in ("benign", "malignant", "normal") if any(l in f for f in files)} == {"benign", "malignant", "normal"}


def test_analyze_an_example_and_views(session):
    s = review.open_scan(review.examples()[0], session)
    a = s.analysis
    assert "## " in review.verdict_markdown(a)
    rows = review.per_model_rows(a)
    assert rows[-1][0] == "ensemble" and len(rows) == len(a.per_model) + 1
    view = review.mask_view(s, fill=True, contour=False, opacity=0.5)
    assert view.shape == (*s.scan.shape, 3)
    cam = review.cam_view(s, "resnet18", review.PREDICTED, "EigenCAM")
    assert cam.shape == (*s.scan.shape, 3)
    assert "Lesion" in review.measurements_markdown(a, s.scan)
    data = review.summary(a)
    assert set(data["probabilities"]) == {"benign", "malignant", "normal"} and data["scan"] == s.scan.name
    assert data["lesion_grade"] is None  # no grader shipped here


def test_the_lesion_graders_row_sits_before_the_ensembles(session):
    import dataclasses
    a = review.open_scan(review.examples()[0], session).analysis
    graded = dataclasses.replace(a, lesion_grade={"benign": 0.25, "malignant": 0.75})
    rows = review.per_model_rows(graded)
    assert rows[-2][0].startswith("lesion graders") and rows[-1][0] == "ensemble"
    assert dict(zip(("model", "benign", "malignant", "normal"), rows[-2]))["malignant"] == 0.75
    assert rows[-2][3] == ""  # no normal call from a lesion crop


def test_a_screen_capture_is_read_as_its_region_and_the_review_says_so(session, tmp_path):
    """An example inside a synthetic scanner screen: the verdict names the region, the summary carries it and the
    canvas outlines it; the mask lies inside it."""
    from app import workspace
    from tests.inference.test_scan_region import framed
    gray = np.asarray(Image.open(review.examples()[0]).convert("L"))
    screen, (t, b, l, r) = framed(gray)
    Image.fromarray(screen).save(tmp_path / "capture.png")
    s = review.open_scan(str(tmp_path / "capture.png"), session)
    a = s.analysis
    assert a.region is not None and abs(a.region.top - t) <= 3 and abs(a.region.left - l) <= 3
    assert "the frame around it was left out" in review.verdict_markdown(a)
    assert review.summary(a)["region"]["source"] == "frame detected"
    assert not a.mask[:a.region.top].any() and not a.mask[:, :a.region.left].any()
    cam = review.cam_view(s, "resnet18", review.PREDICTED, "Grad-CAM")  # the frame keeps its own pixels
    outside = ~a.region.inside(s.scan.shape)
    assert np.array_equal(cam[outside], s.scan.display[outside]) and not np.array_equal(cam[~outside],
                                                                                         s.scan.display[~outside])
    plain = review.open_scan(review.examples()[0], session).analysis
    assert plain.region is None and "frame" not in review.verdict_markdown(plain)
    assert review.summary(plain)["region"] is None
    s = review.open_scan(str(tmp_path / "capture.png"), session)
    workspace.clear(s)  # the untrained models' mask fills the region, and lesions are drawn over its outline
    view = workspace.view(s, fill=False, contour=False)
    k = review.canvas_scale(s.scan.shape)
    assert (view[int(a.region.top * k), int((a.region.left + a.region.right) / 2 * k)] == (160, 160, 160)).all()


def test_editor_round_trip_and_tools(session):
    s = review.open_scan(review.examples()[1], session)
    value = review.editor_start(s)
    assert np.array_equal(editing.mask_from_editor(value, s.scan.shape), s.analysis.mask)
    assert not editing.mask_from_editor(review.editor_clear(s), s.scan.shape).any()
    painted = np.zeros(s.scan.shape, bool)
    painted[100:160, 150:230] = True
    from app import workspace
    workspace.from_editor(s, editing.editor_value(s.scan.display, painted))
    assert workspace.smooth(s).startswith("Smoothed") and workspace.state(s).lesions[0].any()
    assert workspace.grabcut(s).startswith("Edges refined") and workspace.state(s).lesions[0].shape == s.scan.shape
    workspace.clear(s)
    with pytest.raises(review.ReviewError, match="Paint a rough mask"):
        workspace.grabcut(s)


def test_save_writes_the_painted_mask_and_the_zip_comes_on_request(session, tmp_path):
    s = review.open_scan(review.examples()[1], session)
    with pytest.raises(review.ReviewError, match="Nothing saved yet"):
        review.export_zip(s)
    painted = np.zeros(s.scan.shape, bool)
    painted[50:90, 60:140] = True
    status = review.save(editing.editor_value(s.scan.display, painted), "malignant", "dr. b", s)
    assert "revision 1" in status
    assert not list(s.workspace.rglob("*.zip"))  # a save does not pack the whole export again
    first = review.export_zip(s)
    review.save(editing.editor_value(s.scan.display, painted), "malignant", "dr. b", s)
    zip_path = review.export_zip(s)
    assert list(s.workspace.rglob("*.zip")) == [Path(zip_path)] and zip_path != first  # one kept, a new name
    assert [e["revision"] for e in export.read_manifest(tmp_path / "exports")] == [1, 2]
    cases = export.current_entries(tmp_path / "exports")
    (entry,) = cases.values()
    assert entry["annotator"] == "dr. b" and entry["label"] == "malignant"
    saved = np.asarray(Image.open(tmp_path / "exports" / export.view_paths(entry)["mask"])) > 127
    assert np.array_equal(saved, painted)
    assert zipfile.ZipFile(zip_path).read("manifest.jsonl").decode().count("\n") == 2


def test_save_rules(session):
    s = review.open_scan(review.examples()[0], session)
    lesion = np.zeros(s.scan.shape, bool)
    lesion[10:30, 10:30] = True
    with pytest.raises(review.ReviewError, match="Choose the label"):
        review.save(editing.editor_value(s.scan.display, lesion), None, "a", s)
    with pytest.raises(review.ReviewError, match="normal scan has no lesion"):
        review.save(editing.editor_value(s.scan.display, lesion), "normal", "a", s)
    with pytest.raises(review.ReviewError, match="needs its lesion painted"):
        review.save(review.editor_clear(s), "benign", "a", s)


def test_bad_uploads_and_missing_scan_are_clear(session, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(review.ReviewError, match="notes.png: not an image"):
        review.open_scan(str(bad), session)
    with pytest.raises(review.ReviewError, match="Upload a scan"):
        review.open_scan(None, session)
    with pytest.raises(review.ReviewError, match="Analyze a scan first"):
        review.mask_view(review.new_session(public=True))


def test_public_sessions_are_private_and_deleted(engine, monkeypatch):
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    a, b = review.new_session(public=True), review.new_session(public=True)
    assert a.workspace != b.workspace and a.export_dir.is_relative_to(a.workspace)
    s = review.open_scan(review.examples()[1], a)
    painted = np.zeros(s.scan.shape, bool)
    painted[10:40, 10:40] = True
    review.save(editing.editor_value(s.scan.display, painted), "benign", "x", s)
    assert any(a.export_dir.rglob("*_mask.png"))
    assert not any(b.workspace.rglob("*.png"))  # nothing of a's reaches b
    review.close_session(a)
    assert not a.workspace.exists() and b.workspace.exists()
    review.close_session(b)


def test_the_app_deletes_a_workspace_with_its_state_and_when_its_browser_session_ends(tmp_path):
    """Two ways a session ends: Gradio drops its state (the State's delete_callback), or the browser
    closes the tab (the app's unload event, keyed by Gradio's session hash)."""
    import gradio as gr

    from app.ui import build
    demo = build(tmp_path / "no-data")
    (state,) = [b for b in demo.blocks.values() if isinstance(b, gr.State) and b.delete_callback is review.close_session]
    gone = review.new_session(public=True)
    state.delete_callback(gone)
    assert not gone.workspace.exists()
    assert any(dep.targets and dep.targets[0][1] == "unload" for dep in demo.fns.values())
    mine, mine_too, other = (review.new_session(public=True, owner="hash-a"),
                             review.new_session(public=True, owner="hash-a"), review.new_session(public=True, owner="hash-b"))
    review.end_browser_session("hash-a")
    assert not mine.workspace.exists() and not mine_too.workspace.exists() and other.workspace.exists()
    review.end_browser_session(None)  # an API call without a session: nothing to end
    assert other.workspace.exists()
    review.close_session(other)


def test_hostile_saves_are_refused_with_a_message(session):
    s = review.open_scan(review.examples()[1], session)
    painted = np.zeros(s.scan.shape, bool)
    painted[10:40, 10:40] = True
    value = editing.editor_value(s.scan.display, painted)
    with pytest.raises(review.ReviewError, match="200,000 characters; use at most 100"):
        review.save(value, "benign", "x" * 200_000, s)
    tiny = np.zeros((2, 2, 4), np.uint8)
    tiny[0, 0, 3] = 255
    with pytest.raises(review.ReviewError, match="mask layer is 2x2"):
        review.save({"background": None, "layers": [tiny], "composite": None}, "benign", "dr. b", s)
    review.save(value, "benign", "dr.\n b\x00", s)
    entry = export.read_manifest(s.export_dir)[-1]
    assert entry["annotator"] == "dr. b"


def test_a_failed_analysis_leaves_no_workspace_and_public_messages_no_server_path(engine, monkeypatch, tmp_path):
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    monkeypatch.setenv("SONOMARK_PUBLIC", "1")
    before = set(review.sessions_root().iterdir())
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    for _ in range(3):
        with pytest.raises(review.ReviewError, match="bad.png"):
            review.open_scan(str(bad), None, owner="visitor")
    assert set(review.sessions_root().iterdir()) == before
    s = review.open_scan(review.examples()[1], None, owner="visitor")
    painted = np.zeros(s.scan.shape, bool)
    painted[10:40, 10:40] = True
    status = review.save(editing.editor_value(s.scan.display, painted), "benign", "v", s)
    assert str(s.workspace) not in status and str(review.sessions_root()) not in status and "/tmp" not in status
    review.close_session(s)


def test_idle_workspaces_expire_and_their_session_says_so(engine, monkeypatch):
    """API clients never close a tab: a workspace unused for the idle time is deleted, whoever owns it, and
    its session then asks for a new analysis instead of writing into a deleted folder."""
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    idle, used = review.new_session(public=True), review.new_session(public=True)
    s = review.open_scan(review.examples()[1], idle)
    old = time.time() - 3600
    os.utime(idle.workspace, (old, old))
    os.utime(used.workspace, (old, old))
    review.open_scan(review.examples()[0], used)  # in use: an analysis, then a view, mark it used now
    review.mask_view(used)
    assert review.expire_idle(600) == 1
    assert not idle.workspace.exists() and used.workspace.exists()
    painted = np.zeros(s.scan.shape, bool)
    painted[10:40, 10:40] = True
    for call in (lambda: review.mask_view(s), lambda: review.export_zip(s),
                 lambda: review.save(editing.editor_value(s.scan.display, painted), "benign", "x", s)):
        with pytest.raises(review.ReviewError, match="deleted after 20 minutes without use; analyze the scan again"):
            call()
    assert not idle.workspace.exists()  # the refused save did not bring the folder back
    again = review.open_scan(review.examples()[1], s)  # analysing again opens a new workspace
    assert again.workspace != idle.workspace and again.workspace.is_dir()
    review.close_session(again)
    review.close_session(used)


def test_cine_frames_are_chosen_in_the_review(engine, monkeypatch, tmp_path):
    from tests.inference.test_scan import GRAY, dicom
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    cine = tmp_path / "cine.dcm"
    cine.write_bytes(dicom(np.stack([GRAY, 255 - GRAY, GRAY // 2]), frames=3))
    assert review.frames(str(cine)) == 3 and review.frames(review.examples()[0]) == 1 and review.frames(None) == 1
    with pytest.raises(review.ReviewError, match="choose the frame"):
        review.open_scan(str(cine), None)
    s = review.open_scan(str(cine), None, frame=1.0)  # a slider sends floats
    assert s.scan.frame == 1 and np.array_equal(s.scan.gray, 255 - GRAY)
    review.close_session(s)


def test_analyses_run_side_by_side_and_edits_never_queue_behind_them(tmp_path, monkeypatch):
    """Gradio runs each concurrency group's events in its own lane: analyses of different visitors up to
    ANALYSES at once, and the mask views, edits and saves in another, so a brush stroke never waits for
    someone's analysis; the public state expires with the idle time."""
    import gradio as gr

    from app import ui
    monkeypatch.setenv("SONOMARK_PUBLIC", "1")
    demo = ui.build(tmp_path / "no-data")
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    analysis = fns["analyze"]
    assert analysis.concurrency_limit == ui.ANALYSES == 2
    edits = [f for f in demo.fns.values() if f.concurrency_id == fns["export"].concurrency_id]
    assert len(edits) >= 7 and all(f.concurrency_limit == ui.EDITS for f in edits)
    assert fns["export"].concurrency_id != analysis.concurrency_id
    (state,) = [b for b in demo.blocks.values() if isinstance(b, gr.State) and b.delete_callback is review.close_session]
    assert state.time_to_live == review.idle_seconds() == 1200


def test_views_of_a_very_large_scan_are_drawn_at_display_size(engine, monkeypatch, tmp_path):
    """Work per view change is bounded by what is shown: a 6000 x 4000 scan is analysed and exported at
    full size, and its views are at most VIEW_MAX_SIDE."""
    monkeypatch.setattr(review, "analyzer", lambda: engine)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4000, 6000), dtype=np.uint8)).save(big)
    s = review.open_scan(str(big), None)
    assert s.analysis.mask.shape == (4000, 6000)
    from app import workspace
    for view in (review.scan_view(s), review.mask_view(s, opacity=0.5),
                 review.cam_view(s, "resnet18", review.PREDICTED, "EigenCAM"), workspace.view(s, show_cam=True)):
        assert view.shape == (1067, 1600, 3)
    small = review.open_scan(review.examples()[0], None)  # ordinary scans are shown as they are
    assert review.scan_view(small).shape == small.scan.display.shape
    review.close_session(s)
    review.close_session(small)


def test_a_public_server_keeps_no_onnx_cache_in_the_home_folder_unless_the_operator_names_one(monkeypatch, tmp_path):
    from models.inference import onnx_cache
    monkeypatch.delenv(onnx_cache.ENV, raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("SONOMARK_PUBLIC", "0")
    review.keep_public_writes_in_process()
    assert onnx_cache.cache_dir() is not None  # locally, restarts reuse the graphs
    monkeypatch.setenv("SONOMARK_PUBLIC", "1")
    review.keep_public_writes_in_process()
    assert onnx_cache.cache_dir() is None
    monkeypatch.setenv(onnx_cache.ENV, str(tmp_path))
    review.keep_public_writes_in_process()
    assert onnx_cache.cache_dir() == tmp_path
