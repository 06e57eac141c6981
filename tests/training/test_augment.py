"""Scanner-shift augmentation: intensity only, seeded per sample, the skin line kept on top."""
import numpy as np
import pytest
import torch

from models.data import load_cases
from models.preprocess import decode_cases
from models.training import train as T
from models.training.augment import ScannerShift
from models.weights import training_command
from tests.conftest import write_busi


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = write_busi(tmp_path_factory.mktemp("d") / "busi", {"benign": 3, "malignant": 2, "normal": 1})
    return decode_cases(load_cases([root]), 96, progress=False)


def test_it_changes_intensities_only_and_keeps_the_format():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 64, 64), dtype=np.uint8))
    torch.manual_seed(0)
    outs = [ScannerShift(p=1.0)(x) for _ in range(8)]
    assert all(o.dtype == torch.uint8 and o.shape == x.shape for o in outs)
    assert all(not torch.equal(o, x) for o in outs) and len({o.float().mean().item() for o in outs}) == 8
    assert torch.equal(ScannerShift(p=0.0)(x), x)


def test_depth_gain_changes_brightness_with_depth_not_across():
    shift = ScannerShift(p=0.0)
    shift.p = 1.0  # only the depth gradient below: the other steps are drawn too, so switch them off
    flat = torch.full((1, 64, 64), 128, dtype=torch.uint8)
    shift.gamma = shift.gain = 0.0
    shift.speckle, shift.blur, shift.scale = (0.0, 0.0), (0.1, 0.1), (1.0, 1.0)
    torch.manual_seed(3)
    outs = [shift(flat)[0].float() for _ in range(10)]
    assert max(abs(float(o.mean(1)[0] - o.mean(1)[-1])) for o in outs) > 20  # up to +-20% from top to bottom
    assert all(float(o.mean(0).max() - o.mean(0).min()) < 2 for o in outs)
    assert all(bool((torch.diff(o.mean(1)) >= 0).all() or (torch.diff(o.mean(1)) <= 0).all()) for o in outs)


def test_scanner_augmentation_keeps_the_geometry_and_mask_of_the_standard_one(arrays):
    standard = T.AugmentedCases(arrays, 96, train=True)
    scanner = T.AugmentedCases(arrays, 96, train=True, augment="scanner")
    changed = 0
    for k in range(len(arrays)):
        a, b = standard[(k, 1000 + k)], scanner[(k, 1000 + k)]
        assert torch.equal(a[1], b[1])  # the same crop, flip and rotation: masks equal
        assert torch.equal(b[0], scanner[(k, 1000 + k)][0])  # seeded per sample
        changed += not torch.equal(a[0], b[0])
    assert changed >= len(arrays) - 1
    assert torch.equal(T.AugmentedCases(arrays, 96, train=False, augment="scanner")[0][0],
                       T.AugmentedCases(arrays, 96, train=False)[0][0])  # validation scans never augmented


def test_unknown_augmentation_is_a_clear_error_and_the_command_records_it(arrays):
    with pytest.raises(ValueError, match="choose one of standard, scanner"):
        T.AugmentedCases(arrays, 96, train=True, augment="heavy")
    assert training_command("efficientnet_lite0", {"epochs": 12, "augment": "scanner"}).endswith("--augment scanner")
    assert "--augment" not in training_command("efficientnet_lite0", {"epochs": 12, "augment": "standard"})


def test_clahe_spreads_a_low_contrast_scan_and_is_drawn_only_for_scanner_clahe(arrays):
    dull = torch.from_numpy(np.random.default_rng(1).integers(100, 130, (1, 64, 64), dtype=np.uint8))
    shift = ScannerShift(p=0.0, clahe=1.0)
    torch.manual_seed(0)
    out = shift(dull)
    assert out.dtype == torch.uint8 and out.shape == dull.shape
    assert float(out.float().std()) > 1.5 * float(dull.float().std())  # local contrast enhanced
    assert torch.equal(ScannerShift(p=0.0)(dull), dull)  # no CLAHE unless asked for
    assert ScannerShift.named("standard") is None and ScannerShift.named("scanner").clahe == 0
    assert ScannerShift.named("scanner-clahe").clahe == 0.5
    data = T.AugmentedCases(arrays, 96, train=True, augment="scanner-clahe")
    plain = T.AugmentedCases(arrays, 96, train=True, augment="scanner")
    assert any(not torch.equal(data[(k, 7 + k)][0], plain[(k, 7 + k)][0]) for k in range(len(arrays)))
    assert torch.equal(data[(0, 7)][1], plain[(0, 7)][1])  # intensity only: the mask is the same
