"""The imaging region inside a screen capture (``models.field_of_view``): found in frames, never in cropped scans,
read by the analysis, from DICOM headers and in training's decode."""
import importlib.util
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from models.data.paths import REPO
from models.data.records import Case
from models.field_of_view import Region, find_region
from models.inference.analysis import Analyzer
from models.inference.scan import read_scan
from models.preprocess import decode_cases, read_case
from models.zoo import get_spec

from tests.inference.test_analysis import ship_random
from tests.inference.test_scan import dicom

spec = importlib.util.spec_from_file_location("scan_region", REPO / "reports" / "scan_region.py")
scan_region = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scan_region)


def speckle(h=220, w=300, seed=0, dark_rows=None) -> np.ndarray:
    """A scan-like image: bright speckle near the skin fading with depth; ``dark_rows`` as black as a frame."""
    rng = np.random.default_rng(seed)
    depth = np.linspace(1.0, 0.35, h)[:, None]
    img = np.clip(rng.rayleigh(45, (h, w)) * depth + 10, 0, 255).astype(np.uint8)
    if dark_rows is not None:
        img[dark_rows[0]:dark_rows[1]] = 0
    return img


def framed(gray, top=40, left=90, level=0, text=True):
    """``gray`` on a flat screen with text, a logo and depth ticks beside it."""
    h, w = gray.shape
    screen = np.full((h + top + 60, w + left + 80), level, np.uint8)
    screen[top:top + h, left:left + w] = gray
    if text:
        for k, line in enumerate(("GAIN 54", "DR 60", "L12-5", "MI 1.1")):
            cv2.putText(screen, line, (4, top + 20 * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
        screen[4:16, -50:-6] = 150
        screen[top:top + h:30, left + w + 3:left + w + 9] = 255
    return screen, (top, top + h, left, left + w)


def test_a_scan_cropped_to_the_tissue_is_read_whole():
    assert find_region(speckle()) is None
    # a far field as black as a frame along the bottom edge, and a fan's black corners, are not a frame
    assert find_region(speckle(dark_rows=(150, 220))) is None
    fan = speckle()
    yy, xx = np.mgrid[:220, :300]
    fan[np.abs(xx - 150) > 60 + yy * 0.5] = 0
    assert find_region(fan) is None


@pytest.mark.parametrize("level", [0, 24])
def test_the_region_inside_a_frame_is_the_scan(level):
    screen, (t, b, l, r) = framed(speckle(), level=level)
    region = find_region(screen)
    assert region is not None and region.source == "frame detected"
    assert abs(region.top - t) <= 3 and abs(region.bottom - b) <= 3
    assert abs(region.left - l) <= 3 and abs(region.right - r) <= 3  # text, logo and ticks left out


def test_a_heavily_compressed_capture_still_has_its_frame_found():
    """JPEG at quality 30 rings around the frame's text, close to the edges: the edges are judged filtered."""
    screen, (t, b, l, r) = framed(speckle(), top=30, left=80)
    for k, line in enumerate(("PWR 100%", "SMP", "RIGHT 10:00")):  # text running along the top and left edges
        cv2.putText(screen, line, (1 + 120 * k, 9), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1)
        cv2.putText(screen, line, (1, 60 + 40 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.3, 255, 1)
    ok, data = cv2.imencode(".jpg", screen, [cv2.IMWRITE_JPEG_QUALITY, 30])
    region = find_region(cv2.imdecode(data, cv2.IMREAD_GRAYSCALE))
    assert region is not None and abs(region.top - t) <= 4 and abs(region.left - l) <= 4


def test_a_dark_band_across_the_scan_does_not_end_the_region():
    """A large cyst or a shadow across the scan: the tissue below it is still read."""
    screen, (t, b, l, r) = framed(speckle(dark_rows=(90, 150)))
    region = find_region(screen)
    assert region is not None and abs(region.bottom - b) <= 3


def test_text_under_the_scan_stays_out_and_a_dark_band_near_the_top_does_not_cut_the_scan():
    screen, (t, b, l, r) = framed(speckle(), text=False)
    cv2.putText(screen, "RIGHT BREAST 10:00 3CM FN", (l + 10, b + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)
    region = find_region(screen)
    assert abs(region.bottom - b) <= 3 and abs(region.top - t) <= 3
    screen, (t, b, l, r) = framed(speckle(dark_rows=(20, 90)), text=False)
    region = find_region(screen)
    assert abs(region.top - t) <= 3 and abs(region.bottom - b) <= 3


def test_a_thin_frame_is_left_alone():
    screen, _ = framed(speckle(), top=3, left=4, text=False)
    assert find_region(screen[:-58, :-78]) is None  # 1-2% borders: not worth a crop


def test_region_crops_and_pastes_back():
    region = Region(2, 6, 3, 8, "frame detected")
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    part = region.crop(image)
    assert part.shape == region.shape == (4, 5)
    back = region.paste(part, image.shape)
    assert np.array_equal(back[2:6, 3:8], part) and back.sum() == part.sum()
    with pytest.raises(ValueError, match="do not fit"):
        region.paste(image, (20, 20))


def png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_read_scan_finds_the_frame_and_says_so():
    screen, (t, b, l, r) = framed(speckle())
    scan = read_scan(png(screen), name="capture.png")
    assert scan.region is not None and scan.model_view.shape == scan.region.shape
    assert "left out" in scan.region.describe(scan.shape)
    plain = read_scan(png(speckle()), name="scan.png")
    assert plain.region is None and plain.model_view is plain.gray


def test_a_dicom_ultrasound_region_is_the_region():
    """The header's region wins over the pixels, its maxima inclusive; a header region that is the whole image
    leaves the frame to be found in the pixels."""
    screen, (t, b, l, r) = framed(speckle(), text=False)
    data = dicom(screen, region=True)  # the helper's region is the whole image
    found = read_scan(data).region
    assert found.source == "frame detected" and (found.top, found.left) == (t, l)
    from pydicom import dcmread
    ds = dcmread(io.BytesIO(data))
    r = ds.SequenceOfUltrasoundRegions[0]
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = 100, 50, 349, 249
    buf = io.BytesIO()
    ds.save_as(buf)
    region = read_scan(buf.getvalue()).region
    assert (region.top, region.bottom, region.left, region.right) == (50, 250, 100, 350)
    assert region.source == "DICOM ultrasound region"


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    return Analyzer(ship_random(tmp_path_factory.mktemp("r")))


def test_the_analysis_reads_the_region_and_maps_back_to_the_whole_capture(analyzer):
    screen, _ = framed(speckle(seed=2))
    capture = read_scan(png(screen), name="capture.png")
    alone = read_scan(png(capture.region.crop(screen)), name="scan.png")
    a, b = analyzer.analyze(capture), analyzer.analyze(alone)
    assert a.region == capture.region and b.region is None
    assert a.probabilities == pytest.approx(b.probabilities)
    assert a.mask.shape == capture.shape and np.array_equal(capture.region.crop(a.mask), b.mask)
    outside = ~capture.region.inside(capture.shape)
    assert not a.mask[outside].any() and not a.lesion_probability[outside].any()
    assert all(m.shape == capture.shape and not m[outside].any() for m in a.segmenter_maps.values())
    heat = analyzer.explain(capture, "resnet18")
    assert heat.cam.shape == capture.shape and not heat.cam[outside].any()
    assert np.allclose(capture.region.crop(heat.cam), analyzer.explain(alone, "resnet18").cam, atol=1e-5)


def test_specks_are_judged_against_the_scan_not_the_capture(analyzer, monkeypatch):
    """A small lesion the analysis keeps on the scan alone is kept in its capture: the mask is cleaned at the
    region's size (0.05% of a capture twice the scan's area would drop it)."""
    screen, _ = framed(speckle(seed=2))
    capture = read_scan(png(screen), name="capture.png")
    alone = read_scan(png(capture.region.crop(screen)), name="scan.png")
    raw = Analyzer._raw

    def small_lesion(self, name, inputs):
        out = raw(self, name, inputs)
        if get_spec(name).task != "segment":
            return out
        blob, c, side = np.zeros_like(out), out.shape[0] // 2, round(0.028 * out.shape[0])  # 0.08% of the map
        blob[c:c + side, c:c + side] = 1.0
        return blob
    monkeypatch.setattr(Analyzer, "_raw", small_lesion)
    a, b = analyzer.analyze(capture), analyzer.analyze(alone)
    assert b.mask.any() and np.array_equal(capture.region.crop(a.mask), b.mask)
    assert b.mask.sum() < 0.0005 * capture.shape[0] * capture.shape[1]


def test_a_dicom_region_with_impossible_bounds_leaves_the_frame_to_the_pixels():
    from pydicom import dcmread
    from pydicom.dataelem import DataElement
    screen, (t, b, l, r) = framed(speckle(), text=False)
    ds = dcmread(io.BytesIO(dicom(screen, region=True)))
    ds.SequenceOfUltrasoundRegions[0]["RegionLocationMaxX1"] = DataElement(0x0018601C, "FD", float("inf"))
    buf = io.BytesIO()
    ds.save_as(buf)
    region = read_scan(buf.getvalue(), name="odd.dcm").region
    assert region is not None and region.source == "frame detected" and region.top == t


def test_training_decodes_a_framed_case_as_the_analysis_reads_it(tmp_path):
    screen, (t, b, l, r) = framed(speckle(seed=4))
    truth = np.zeros(screen.shape, np.uint8)
    truth[t + 60:t + 120, l + 100:l + 180] = 255
    Image.fromarray(screen).save(tmp_path / "capture.png")
    Image.fromarray(truth).save(tmp_path / "capture_mask.png")
    case = Case("x/capture", "x", tmp_path / "capture.png", (tmp_path / "capture_mask.png",), "benign", "g")
    arrays = decode_cases([case], 64, progress=False)
    region = find_region(screen)
    expected = cv2.resize(region.crop(screen), (64, 64), interpolation=cv2.INTER_AREA)
    assert np.array_equal(arrays.images[0], expected)
    assert arrays.masks[0].mean() == pytest.approx((60 * 80) / (region.shape[0] * region.shape[1]), abs=0.02)
    gray, mask = read_case(case)  # what evaluation scores the maps against
    assert gray.shape == mask.shape == region.shape and mask.sum() == 60 * 80


def test_the_report_puts_the_scan_where_it_says():
    gray = speckle(seed=5)
    capture, (t, b, l, r) = scan_region.screen_capture(gray, np.random.default_rng(0))
    assert np.abs(capture[t:b, l:r].astype(int) - gray).mean() < 5  # JPEG at quality 90, on pure speckle
    region = find_region(capture)
    assert scan_region.iou((t, b, l, r), region) > 0.95
