"""How a scan of any shape becomes a model's square input (``ModelSpec.fit``), and how its maps come back."""
import dataclasses

import numpy as np
import pytest
import torch

from models import zoo
from models.inference.explain import explain
from models.preprocess import FITS, placement, reframe, resize_mask, resize_scan, to_input, to_scan
from models.weights import input_spec


def ellipse(shape, cy, cx, ry, rx):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def height_over_width(mask):
    ys, xs = np.nonzero(mask)
    return (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (128, 128)])
def test_pad_keeps_a_lesions_shape_that_squash_distorts(shape):
    lesion = ellipse(shape, shape[0] // 2, shape[1] // 2, 45, 60)  # wider than tall: 0.75
    padded, squashed = resize_mask(lesion, 96, "pad"), resize_mask(lesion, 96, "squash")
    assert height_over_width(padded) == pytest.approx(0.75, abs=0.05)
    squash_ratio = 0.75 * (96 / shape[0]) / (96 / shape[1])
    assert height_over_width(squashed) == pytest.approx(squash_ratio, abs=0.05)


def test_pad_places_the_scan_at_the_top_centred_on_black():
    gray = np.full((300, 200), 200, np.uint8)
    top, left, height, width = placement(gray.shape, 96, "pad")
    assert (top, height) == (0, 96) and width == 64 and left == 16
    x = resize_scan(gray, 96, "pad")
    assert (x[:, :left] == 0).all() and (x[:, left + width:] == 0).all() and (x[:, left:left + width] == 200).all()
    wide = resize_scan(np.full((100, 300), 50, np.uint8), 96, "pad")  # landscape: black below, none beside
    assert (wide[:32] == 50).all() and (wide[32:] == 0).all()


def test_squash_is_the_plain_resize_it_always_was():
    gray = np.random.default_rng(0).integers(0, 256, (90, 130), dtype=np.uint8)
    import cv2
    assert np.array_equal(resize_scan(gray, 64), cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA))
    assert placement(gray.shape, 64) == (0, 0, 64, 64)


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("shape", [(300, 200), (180, 260)])
def test_a_map_goes_back_onto_the_scan_where_it_came_from(fit, shape):
    lesion = ellipse(shape, 120, 90, 35, 50)
    square = resize_mask(lesion, 160, fit).astype(np.float32)
    back = to_scan(square, shape, fit) > 0.5
    assert back.shape == shape
    assert (back & lesion).sum() / (back | lesion).sum() > 0.9


@pytest.mark.parametrize("fit, to_fit", [("pad", "squash"), ("squash", "pad"), ("squash", "squash")])
def test_a_map_moves_to_another_frame_where_the_scan_lies_in_it(fit, to_fit):
    """Segmenters of different fits and sizes are fused in one frame (``predict_cases``)."""
    shape = (300, 200)
    lesion = ellipse(shape, 120, 90, 35, 50)
    moved = reframe(resize_mask(lesion, 160, fit).astype(np.float32), shape, 96, fit, to_fit)
    expected = resize_mask(lesion, 96, to_fit)
    assert moved.shape == (96, 96)
    assert ((moved > 0.5) & expected).sum() / ((moved > 0.5) | expected).sum() > 0.9
    top, left, height, width = placement(shape, 96, to_fit)
    outside = np.ones((96, 96), bool)
    outside[top:top + height, left:left + width] = False
    assert not moved[outside].any()


def test_an_unknown_fit_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of squash, pad"):
        placement((10, 10), 8, "crop")


def test_the_fit_is_part_of_the_input_the_manifest_records_only_when_it_pads():
    spec = zoo.get_spec("efficientnet_lite0")
    assert "fit" not in input_spec(dataclasses.replace(spec, fit="squash"))
    assert input_spec(dataclasses.replace(spec, fit="pad"))["fit"] == "pad"


def test_a_padding_classifier_reads_and_explains_the_scan_inside_its_black_border():
    spec = dataclasses.replace(zoo.get_spec("resnet18"), fit="pad")
    gray = np.random.default_rng(1).integers(0, 256, (200, 100), dtype=np.uint8)
    x = to_input(gray, spec)
    black = to_input(np.zeros((8, 8), np.uint8), spec)[0, :, :1, :1]
    side = x[0, :, :, :spec.input_size // 4 - 1]  # beside a scan twice as tall as wide
    assert torch.allclose(side, black.expand_as(side))
    torch.manual_seed(0)
    heat = explain(zoo.build_model("resnet18", init=None), spec, gray)
    assert heat.cam.shape == gray.shape and 0 <= heat.cam.min() and heat.cam.max() <= 1


def test_the_engine_gives_a_padding_member_its_own_input_and_places_its_maps_back(tmp_path, monkeypatch):
    from models.inference.analysis import Analyzer
    from tests.inference.test_analysis import png_scan, ship_random

    for name in ("efficientnet_lite0", "unet_lite0"):
        monkeypatch.setitem(zoo.REGISTRY, name, dataclasses.replace(zoo.get_spec(name), fit="pad"))
    analyzer = Analyzer(ship_random(tmp_path, ("efficientnet_lite0", "resnet18", "unet_lite0")))
    scan = png_scan(h=150, w=90)
    inputs = analyzer._inputs(scan.model_view)
    assert len(inputs) == 3  # Lite0 padded, ResNet-18 squashed at 224; the U-Net padded at 160
    padded = inputs[analyzer._input_key("efficientnet_lite0")]
    assert np.array_equal(padded, to_input(scan.model_view, zoo.get_spec("efficientnet_lite0")).numpy())
    a = analyzer.analyze(scan)
    raw = analyzer._raw("unet_lite0", inputs)
    assert a.segmenter_maps["unet_lite0"] == pytest.approx(to_scan(raw, scan.shape, "pad"), abs=1e-5)
    assert analyzer.explain(scan, "efficientnet_lite0").cam.shape == scan.shape


def test_training_decodes_cases_as_the_model_reads_them(tmp_path):
    from models.data import load_cases
    from models.preprocess import decode_for
    from tests.conftest import write_busi

    cases = load_cases([write_busi(tmp_path / "busi")])  # 64 x 48 scans: landscape
    spec = dataclasses.replace(zoo.get_spec("efficientnet_lite0"), input_size=64, fit="pad")
    arrays = decode_for(cases, spec, progress=False)
    assert (arrays.images[:, 48:] == 0).all() and not arrays.masks[:, 48:].any()
    assert arrays.masks.any() and (arrays.images[:, :48] > 0).any()
    squashed = decode_for(cases, dataclasses.replace(spec, fit="squash"), progress=False)
    assert (squashed.images[:, 48:] > 0).any()
