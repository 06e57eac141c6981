"""Editor layers to masks and back, clean-up and GrabCut (the known ImageEditor pitfalls included)."""
import cv2
import numpy as np

from models.annotation import editing
from models.training.metrics import dice_iou


def disc(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_layer_round_trip_is_exact():
    mask = disc((90, 120), 60, 45, 20)
    value = editing.editor_value(np.zeros((90, 120, 3), np.uint8), mask)
    assert np.array_equal(editing.mask_from_editor(value, (90, 120)), mask)


def test_antialiased_strokes_do_not_grow_the_mask():
    layer = np.zeros((90, 120, 4), np.uint8)
    cv2.circle(layer, (60, 45), 20, (0, 220, 90, 255), -1, lineType=cv2.LINE_AA)  # soft edge
    fringe = (layer[..., 3] > 0) & (layer[..., 3] <= 127)
    assert fringe.any()
    got = editing.mask_from_editor({"layers": [layer]}, (90, 120))
    assert not (got & fringe).any()
    assert dice_iou(got, disc((90, 120), 60, 45, 20))[0] > 0.95  # cv2 and the analytic disc differ by ~1 px


def test_scans_sit_centred_on_the_canvas_and_come_back_exactly():
    for shape in [(450, 577), (719, 1048), (353, 274), (90, 120)]:  # BUSI, BUSI widest, BUS-BRA, tiny
        mask = disc(shape, shape[1] // 3, shape[0] // 2, min(shape) // 5)
        value = editing.editor_value(np.zeros((*shape, 3), np.uint8), mask)
        assert value["background"].shape == value["layers"][0].shape == (768, 1056, 4)
        assert np.array_equal(editing.mask_from_editor(value, shape), mask)


def test_a_stroke_on_the_canvas_lands_on_the_same_scan_pixels():
    shape = (450, 577)
    f = editing.frame_for(shape)
    assert (f.scale, f.x0, f.y0) == (1.0, (1056 - 577) // 2, (768 - 450) // 2)
    layer = np.zeros((768, 1056, 4), np.uint8)
    layer[f.y0 + 100:f.y0 + 120, f.x0 + 200:f.x0 + 260, 3] = 255
    got = editing.mask_from_editor({"layers": [layer]}, shape)
    assert got[100:120, 200:260].all() and got.sum() == 20 * 60


def test_oversized_scans_are_scaled_down_to_fit():
    shape = (900, 1400)
    f = editing.frame_for(shape)
    assert f.scale < 1 and f.width <= 1056 and f.height <= 768
    mask = disc(shape, 700, 450, 200)
    back = editing.mask_from_editor(editing.editor_value(np.zeros((*shape, 3), np.uint8), mask), shape)
    assert dice_iou(back, mask)[0] > 0.99


def test_canvas_of_another_size_is_resized_with_nearest_neighbour():
    mask = disc((90, 120), 60, 45, 20)
    big = cv2.resize(editing.mask_layer(mask), (240, 180), interpolation=cv2.INTER_NEAREST)
    got = editing.mask_from_editor({"layers": [big]}, (90, 120))
    assert got.shape == (90, 120) and got.dtype == bool
    assert dice_iou(got, mask)[0] > 0.97


def test_empty_missing_and_erased_layers():
    assert not editing.mask_from_editor({"layers": []}, (10, 10)).any()
    assert not editing.mask_from_editor({"layers": [None]}, (10, 10)).any()
    assert not editing.mask_from_editor(None, (10, 10)).any()
    erased = editing.mask_layer(np.ones((10, 10), bool))
    erased[..., 3] = 0  # the eraser clears alpha, colour may remain
    assert not editing.mask_from_editor({"layers": [erased]}, (10, 10)).any()
    two = [editing.mask_layer(disc((40, 40), 10, 10, 5)), editing.mask_layer(disc((40, 40), 30, 30, 5))]
    assert editing.mask_from_editor({"layers": two}, (40, 40)).sum() == 2 * disc((40, 40), 10, 10, 5).sum()


def test_smooth_removes_specks_and_notches():
    mask = disc((100, 100), 50, 50, 25)
    ragged = mask.copy()
    ragged[48:52, 25:40] = False  # a notch from a sloppy eraser
    ragged[5:7, 5:7] = True  # a stray dab
    smooth = editing.smooth_mask(ragged, radius=3)
    assert not smooth[5:7, 5:7].any()
    assert dice_iou(smooth, mask)[0] > dice_iou(ragged, mask)[0]


def test_grabcut_snaps_a_rough_mask_to_the_lesion():
    rng = np.random.default_rng(0)
    gray = np.clip(rng.normal(170, 12, (120, 160)), 0, 255)
    lesion = disc((120, 160), 80, 60, 28)
    gray[lesion] = np.clip(rng.normal(50, 12, lesion.sum()), 0, 255)  # hypoechoic lesion
    rough = disc((120, 160), 84, 57, 36)  # too big and off-centre, as a quick brush would be
    refined = editing.grabcut_refine(gray.astype(np.uint8), rough)
    assert dice_iou(refined, lesion)[0] > 0.9 > dice_iou(rough, lesion)[0]
    assert not editing.grabcut_refine(gray.astype(np.uint8), np.zeros_like(rough)).any()


def test_layers_that_do_not_fit_the_scan_are_refused_not_stretched():
    import pytest
    tiny = np.zeros((2, 2, 4), np.uint8)
    tiny[0, 0, 3] = 255  # one painted pixel: stretched, it was a quarter of the scan
    with pytest.raises(editing.LayerError, match="the mask layer is 2x2 pixels, but the scan is 120x90"):
        editing.mask_from_editor({"layers": [tiny]}, (90, 120))
    grey = np.full((90, 120), 200, np.uint8)  # a greyscale layer has no alpha to read paint from
    with pytest.raises(editing.LayerError, match="must be RGBA"):
        editing.mask_from_editor({"layers": [grey]}, (90, 120))
    opaque = np.full((90, 120, 4), 255, np.uint8)  # an RGB picture converted to RGBA: alpha everywhere
    with pytest.raises(editing.LayerError, match="painted everywhere"):
        editing.mask_from_editor({"layers": [opaque]}, (90, 120))
    other_shape = editing.mask_layer(disc((90, 90), 45, 45, 20))
    with pytest.raises(editing.LayerError, match="90x90 pixels"):
        editing.mask_from_editor({"layers": [other_shape]}, (90, 120))
