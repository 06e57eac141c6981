"""The workspace's parts without a browser: lesions with undo/redo, several lesions in the export and COCO,
pixel spacing typed or from the ruler, the canvas drawing."""
import json

import numpy as np
import pytest
from PIL import Image

from models.annotation import canvas, editing, export, spacing
from models.field_of_view import Region
from models.annotation.lesions import MAX_HISTORY, LesionMasks
from models.annotation.prompts import Click
from tests.annotation.test_export import disc, make_scan


def test_lesions_undo_redo_and_several_lesions():
    shape = (60, 80)
    s = LesionMasks.from_mask(disc(shape, 20, 30, 8) | disc(shape, 60, 30, 8), split=True)
    assert len(s.lesions) == 2 and s.union.sum() == (disc(shape, 20, 30, 8) | disc(shape, 60, 30, 8)).sum()
    s.select(1)
    s.set_active(disc(shape, 60, 30, 4))
    assert s.lesions[1].sum() < s.lesions[0].sum()
    s.new_lesion()
    s.set_active(disc(shape, 40, 50, 3))
    assert len(s.lesions) == 3 and s.active == 2 and s.labels().max() == 3
    assert s.undo() and len(s.lesions) == 2
    assert s.redo() and len(s.lesions) == 3
    s.select(0)
    s.remove_active()
    assert len(s.lesions) == 2 and not s.lesions[0][30, 20]
    s.clear()
    assert not s.lesions and s.undo() and len(s.lesions) == 2
    assert not LesionMasks((4, 4)).undo() and not LesionMasks((4, 4)).redo()
    s.set_active(np.zeros(shape, bool))  # an emptied lesion is dropped, not kept as a blank instance
    assert all(m.any() for m in s.lesions)


def test_lesions_never_overlap_and_an_emptied_one_leaves_no_stale_index():
    shape = (60, 80)
    s = LesionMasks.from_mask(disc(shape, 20, 30, 10))
    s.new_lesion()
    s.set_active(disc(shape, 30, 30, 10))  # drawn over the first lesion: it takes only the free pixels
    assert len(s.lesions) == 2 and not (s.lesions[0] & s.lesions[1]).any()
    assert np.array_equal(s.lesions[0], disc(shape, 20, 30, 10))
    assert np.array_equal(s.union, disc(shape, 20, 30, 10) | disc(shape, 30, 30, 10))
    s.select(0)
    s.set_active(np.zeros(shape, bool))  # emptied: dropped, and the other lesion is untouched
    assert len(s.lesions) == 1 and s.lesions[0][30, 38]
    s.replace([disc(shape, 20, 30, 10), disc(shape, 25, 30, 10)])  # brush layers that overlap
    assert not (s.lesions[0] & s.lesions[1]).any()


def test_a_change_forgets_the_redo_and_history_is_bounded():
    s = LesionMasks((10, 10))
    for k in range(MAX_HISTORY + 10):
        m = np.zeros((10, 10), bool)
        m.flat[k % 100] = True
        s.set_active(m)
    assert len(s.undo_stack) == MAX_HISTORY
    s.undo()
    s.set_active(np.ones((10, 10), bool))
    assert not s.redo_stack


def test_a_prompt_is_kept_until_the_lesion_changes_another_way():
    s = LesionMasks((10, 10))
    s.box, s.clicks = (1, 1, 5, 5), [Click(2, 2)]
    s.set_active(np.eye(10, dtype=bool), keep_prompt=True)
    assert s.box is not None and s.clicks
    s.replace([np.eye(10, dtype=bool)[::-1]])  # e.g. the brush
    assert s.box is None and not s.clicks


def test_several_lesions_are_separate_instances_in_the_export_and_coco(tmp_path):
    scan = make_scan()
    a, b = disc(scan.shape, 20, 30, 8), disc(scan.shape, 60, 30, 6)
    saved = export.save_case(tmp_path, export.Annotation(scan, "benign", "annotator", a | b, "dr. a",
                                                         lesions=(a, b)))
    assert saved.entry["lesions"] == 2
    labels = np.asarray(Image.open(tmp_path / saved.entry["instances"]))
    assert np.array_equal(labels == 1, a) and np.array_equal(labels == 2, b)
    coco = json.loads(export.write_coco(tmp_path).read_text())
    assert [round(x["area"]) for x in coco["annotations"]] == [int(a.sum()), int(b.sum())]
    assert len({x["image_id"] for x in coco["annotations"]}) == 1
    with pytest.raises(ValueError, match="do not add up"):
        export.Annotation(scan, "benign", "annotator", a, "dr. a", lesions=(a, b))


def test_the_editor_has_one_layer_per_lesion():
    scan = make_scan()
    a, b = disc(scan.shape, 20, 30, 8), disc(scan.shape, 60, 30, 6)
    value = editing.editor_value(scan.display, [a, b])
    assert len(value["layers"]) == 2
    back = editing.masks_from_editor(value, scan.shape)
    assert np.array_equal(back[0], a) and np.array_equal(back[1], b)
    assert len(editing.editor_value(scan.display, [])["layers"]) == 1  # an empty layer to paint on


def test_spacing_from_the_ruler_typed_and_remembered(tmp_path):
    assert spacing.from_ruler((10, 10), (10, 110), 10.0) == pytest.approx(0.1)
    with pytest.raises(spacing.SpacingError, match="further apart"):
        spacing.from_ruler((10, 10), (11, 11), 10.0)
    with pytest.raises(spacing.SpacingError, match="distance"):
        spacing.from_ruler((10, 10), (10, 110), 0)
    with pytest.raises(spacing.SpacingError, match="plausible"):
        spacing.checked(50.0)
    presets = spacing.Presets(tmp_path / "presets.json")
    name = presets.set("  Logiq E9,\n4 cm ", 0.08, spacing.TYPED)
    assert name == "Logiq E9, 4 cm" and spacing.Presets(tmp_path / "presets.json").get(name)["mm_per_pixel"] == 0.08
    assert presets.get("Logiq E9,\t4 cm") is not None and presets.get("") is None
    with pytest.raises(spacing.SpacingError, match="name the scanner preset"):
        presets.set(" ", 0.08, spacing.TYPED)
    scan = spacing.with_spacing(make_scan(), 0.08, spacing.RULER, name)
    assert scan.spacing_mm == (0.08, 0.08) and "ruler" in scan.spacing_source and name in scan.spacing_source
    saved = export.save_case(tmp_path / "x", export.Annotation(scan, "benign", "annotator",
                                                               disc(scan.shape, 20, 30, 8), "dr. a"))
    assert saved.entry["pixel_spacing_mm"] == [0.08, 0.08] and "ruler" in saved.entry["pixel_spacing_source"]


def test_the_canvas_shows_each_lesion_in_its_colour_and_the_prompt():
    scan = make_scan(shape=(120, 160))
    s = LesionMasks.from_mask(disc(scan.shape, 40, 60, 15) | disc(scan.shape, 120, 60, 15), split=True)
    s.box, s.clicks = (20.0, 40.0, 60.0, 80.0), [Click(120, 60, False)]
    out = canvas.draw(np.zeros_like(scan.display), s, fill=True, opacity=1.0, ruler=[(5, 5), (5, 100)])
    assert out.shape == scan.display.shape
    assert tuple(out[60, 30]) == canvas.lesion_colour(0) and tuple(out[60, 130]) == canvas.lesion_colour(1)
    def near(pixel, rgb):  # lines are antialiased
        return np.abs(pixel.astype(int) - rgb).max() < 40
    assert near(out[60, 120], canvas.REMOVE_RGB) and near(out[40, 40], canvas.BOX_RGB)
    assert near(out[50, 5], canvas.RULER_RGB)


def test_the_canvas_outlines_the_region_the_models_read():
    scan = make_scan(shape=(120, 160))
    s = LesionMasks.from_mask(np.zeros(scan.shape, bool))
    region = Region(10, 100, 20, 140, "frame detected")
    plain = canvas.draw(np.zeros_like(scan.display), s)
    out = canvas.draw(np.zeros_like(scan.display), s, region=region)
    assert not plain.any()
    assert tuple(out[10, 80]) == tuple(out[99, 80]) == tuple(out[50, 20]) == tuple(out[50, 139]) == canvas.REGION_RGB
    assert not out[50, 80].any() and not out[5, 80].any()  # inside and outside stay as they were
    half = canvas.draw(np.zeros((60, 80, 3), np.uint8), s, region=region)  # a view at half size
    assert tuple(half[5, 40]) == canvas.REGION_RGB and tuple(half[49, 40]) == canvas.REGION_RGB
