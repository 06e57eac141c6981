"""Editor layers to masks and back, clean-up and GrabCut (the known ImageEditor pitfalls included)."""
import cv2
import numpy as np

from models import editing
from models.metrics import dice_iou


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
