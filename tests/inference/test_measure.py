"""Measurements and mask cleaning on synthetic shapes of known geometry."""
import cv2
import numpy as np
import pytest
from scipy import ndimage

from models.inference.measure import measure
from models.inference.postprocess import clean_mask, fill_holes


def ellipse(ry, rx, size=200, center=None):
    m = np.zeros((size, size), np.uint8)
    cv2.ellipse(m, center or (size // 2, size // 2), (rx, ry), 0, 0, 360, 1, -1)
    return m.astype(bool)


def test_disc():
    m = measure(ellipse(30, 30))
    assert m.unit == "px"
    assert m.area == pytest.approx(np.pi * 30.5 ** 2, rel=0.02)
    assert m.longest_diameter == pytest.approx(61, rel=0.03)
    assert m.perpendicular_diameter == pytest.approx(61, rel=0.03)
    assert m.depth_to_width == pytest.approx(1.0)
    assert m.circularity > 0.95 and m.margin_irregularity < 0.02


def test_ellipse_standing_versus_lying():
    standing, lying = measure(ellipse(40, 20)), measure(ellipse(20, 40))
    assert standing.taller_than_wide and not lying.taller_than_wide
    assert standing.depth_to_width == pytest.approx(81 / 41, rel=0.01)
    assert lying.depth_to_width == pytest.approx(41 / 81, rel=0.01)
    for m in (standing, lying):
        assert m.longest_diameter == pytest.approx(81, rel=0.02)
        assert m.perpendicular_diameter == pytest.approx(41, rel=0.03)
        analytic = 4 * np.pi * np.pi * 40 * 20 / (np.pi * (3 * 60 - np.sqrt((3 * 40 + 20) * (40 + 3 * 20)))) ** 2
        assert m.circularity == pytest.approx(analytic, abs=0.05)
        assert m.margin_irregularity < 0.02


def test_spacing_gives_mm_and_handles_anisotropic_pixels():
    m = measure(ellipse(30, 30), spacing_mm=(0.1, 0.2))  # rows 0.1 mm, columns 0.2 mm
    assert m.unit == "mm"
    assert m.depth == pytest.approx(61 * 0.1) and m.width == pytest.approx(61 * 0.2)
    assert m.area == pytest.approx(np.pi * 30.5 ** 2 * 0.02, rel=0.02)
    assert m.longest_diameter == pytest.approx(61 * 0.2, rel=0.03)
    assert not m.taller_than_wide  # physically twice as wide as deep


def test_irregular_margin_scores_high():
    t = np.linspace(0, 2 * np.pi, 400)
    r = 50 + 15 * np.cos(12 * t)
    pts = np.stack([100 + r * np.cos(t), 100 + r * np.sin(t)], 1).astype(np.int32)
    star = np.zeros((200, 200), np.uint8)
    cv2.fillPoly(star, [pts], 1)
    m = measure(star.astype(bool))
    smooth = measure(ellipse(50, 50))
    assert m.margin_irregularity > 0.3 > smooth.margin_irregularity
    assert m.circularity < 0.5 < smooth.circularity


def test_empty_and_several_components():
    assert measure(np.zeros((50, 50), bool)) is None
    two = ellipse(30, 30) | ellipse(5, 5, center=(20, 20))
    m = measure(two)
    assert m.components == 2 and m.area == pytest.approx(measure(ellipse(30, 30)).area)


def test_clean_mask_fills_holes_and_removes_specks():
    lesion = ellipse(30, 30)
    holed = lesion.copy()
    holed[95:105, 95:105] = False
    noisy = holed.copy()
    noisy[5:7, 5:7] = True  # a 4-pixel speck
    cleaned = clean_mask(noisy)
    assert np.array_equal(cleaned, lesion)
    second = ellipse(25, 25, size=200, center=(40, 150))
    assert np.array_equal(clean_mask(lesion | second), lesion | second)  # a real second lesion stays
    assert not clean_mask(np.zeros((10, 10), bool)).any()


def random_blobs(seed):
    """Blobby masks with holes, touching the border, several components: the shapes a network gives."""
    rng = np.random.default_rng(seed)
    h, w = rng.integers(20, 240, 2)
    noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(1, 8))
    return noise > np.quantile(noise, rng.uniform(0.5, 0.97))


@pytest.mark.parametrize("seed", range(40))
def test_fill_holes_equals_scipy(seed):
    mask = random_blobs(seed)
    assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def pixel_corner_hull_diameter(blob, spacing=(1.0, 1.0)):
    """The definition, by brute force: the greatest distance between corners of any two lesion pixels."""
    ys, xs = np.nonzero(blob)
    corners = np.concatenate([np.stack([xs + ox, ys + oy], 1) for ox in (0, 1) for oy in (0, 1)]).astype(np.float32)
    hull = cv2.convexHull(corners)[:, 0, :] * np.array(spacing[::-1])
    return float(np.linalg.norm(hull[:, None] - hull[None], axis=2).max()), np.ptp(corners[:, 1]), np.ptp(corners[:, 0])


@pytest.mark.parametrize("seed", range(40))
def test_measurements_from_the_outline_equal_those_from_every_pixel(seed):
    mask = clean_mask(random_blobs(seed))
    m = measure(mask, (0.1, 0.07))
    if m is None:
        assert not mask.any()
        return
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    blob = labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])
    longest, depth, width = pixel_corner_hull_diameter(blob, (0.1, 0.07))
    assert m.longest_diameter == pytest.approx(longest, rel=1e-6)
    assert (m.depth, m.width) == pytest.approx((depth * 0.1, width * 0.07))
