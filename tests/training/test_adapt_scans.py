"""``sonomark adapt-scans``: batch-norm statistics re-estimated on a site's unlabelled scans.

A U-Net trained on scanner A (grey 120 with dark lesions) meets scanner C, whose processing maps every grey
level x to 0.3 x + 150: a third of the contrast, on a brighter floor, and the base outlines its lesions
poorly. The first convolution is linear and a batch norm follows it, so statistics measured on scanner C's
scans undo that mapping, without a label."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models import weights
from models.data import load_cases
from models.data.masks import dice_iou
from models.data.splits import make_split, save_split
from models.data.survey import survey
from models.inference.analysis import Analyzer
from models.inference.scan import read_scan
from models.training import adapt_scans, train
from models.zoo import get_spec
from tests.training.test_adapt import scanner_scan, write_scanner_a


def scanner_c(rng, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scanner A's scans through scanner C's grey map, 0.3 x + 150."""
    out = []
    for _ in range(n):
        img, m = scanner_scan(rng, bright=False, lesion=True)
        out.append(((img.astype(np.float32) * 0.3 + 150).astype(np.uint8), m))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt_scans")
    site_a = write_scanner_a(root / "scanner_a")
    cases = load_cases([site_a])
    split = save_split(make_split(cases, survey(cases, progress=False)), root / "split.json")
    assert train.main(["--models", "unet_lite0", "--data", str(site_a), "--split", str(split), "--runs",
                       str(root / "runs"), "--epochs", "4", "--batch-size", "4", "--lr", "2e-3", "--quiet"]) == 0
    assert weights.ship("unet_lite0", root / "runs", root / "base")
    rng = np.random.default_rng(5)
    site = root / "site_c"
    site.mkdir()
    for k, (img, _) in enumerate(scanner_c(rng, 40)):  # the unlabelled scans the site adapts on
        Image.fromarray(img).save(site / f"c{k:02d}.png")
    (site / "notes.png").write_bytes(b"not an image")  # unreadable: listed, not fatal
    return root, site, scanner_c(rng, 12)  # and 12 other scanner-C scans with their truth, to score


def mean_dice(folder, scored) -> float:
    analyzer = Analyzer(folder)
    out = []
    for img, truth in scored:
        analysis = analyzer.analyze(read_scan(_png(img)))
        out.append(dice_iou(analysis.mask, truth)[0])
    return float(np.mean(out))


def _png(img: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_statistics_from_the_sites_scans_undo_its_grey_map_without_a_label(world):
    root, site, scored = world
    base_files = {p.name: p.read_bytes() for p in (root / "base").iterdir()}
    out = root / "site_c_weights"
    assert adapt_scans.main([str(site), "--out", str(out), "--weights", str(root / "base"), "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (root / "base").iterdir()} == base_files  # base untouched
    before, after = mean_dice(root / "base", scored), mean_dice(out, scored)
    assert after > 0.85 and after > before + 0.15, (before, after)  # measured: 0.72 -> 0.95

    manifest = weights.Manifest.read(out)
    manifest.verify("unet_lite0")  # the new file matches its checksum
    stats = manifest.models["unet_lite0"]["site_statistics"]
    report = json.loads((out / "adapt_scans.json").read_text())
    assert stats["scans"] == report["scans"] == 40 and stats["blend"] == adapt_scans.DEFAULT_BLEND
    assert stats["base_sha256"] == weights.Manifest.read(root / "base").models["unet_lite0"]["sha256"]
    assert len(report["skipped"]) == 1 and "notes.png" in report["skipped"][0]
    assert report["scans_sha256"][:12] in (out / "README.md").read_text()
    base_state = weights.Manifest.read(root / "base").load("unet_lite0").state_dict()
    moved = {k for k, v in manifest.load("unet_lite0").state_dict().items() if not torch.equal(v, base_state[k])}
    assert moved and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)  # nothing else changes


def test_adapt_scans_refuses_the_base_folder_and_too_few_scans(world, tmp_path, capsys):
    root, site, _ = world
    assert adapt_scans.main([str(site), "--out", str(root / "base"), "--weights", str(root / "base"), "--quiet"]) == 1
    assert "base or the shipped weights folder" in capsys.readouterr().err
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(site.glob("c*.png"))[:5]:
        (few / p.name).write_bytes(p.read_bytes())
    assert adapt_scans.main([str(few), "--out", str(tmp_path / "out"), "--weights", str(root / "base"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert str(few) in err and "5 readable scans" in err and f"at least {adapt_scans.MIN_SCANS}" in err
    assert adapt_scans.main([str(site), "--out", str(tmp_path / "o2"), "--weights", str(root / "base"),
                             "--blend", "0", "--quiet"]) == 1
    assert "--blend 0.0" in capsys.readouterr().err


@pytest.mark.parametrize("blend", [1.0, 0.5])
def test_reestimate_gives_the_scans_statistics_blended_with_the_base(blend):
    spec = get_spec("efficientnet_lite0")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5))
    bn = model[1]
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(2.0)
    images = np.random.default_rng(0).integers(0, 256, (32, 20, 20), dtype=np.uint8)
    from models.preprocess import normalize
    with torch.no_grad():
        feats = model[0](normalize(torch.from_numpy(images), spec))
    halves = feats.split(16)  # reestimate's batches: two of 16
    mean = torch.stack([h.mean((0, 2, 3)) for h in halves]).mean(0)
    var = torch.stack([h.var((0, 2, 3), unbiased=True) for h in halves]).mean(0)
    conv = model[0].weight.clone()
    assert adapt_scans.reestimate(model, spec, images, blend) == 1
    assert torch.allclose(bn.running_mean, blend * mean + (1 - blend) * 3.0, atol=1e-5)
    assert torch.allclose(bn.running_var, blend * var + (1 - blend) * 2.0, atol=1e-4)
    assert not model.training and not bn.training and bn.momentum == 0.1 and torch.equal(model[0].weight, conv)


def test_a_model_without_batch_norm_is_left_alone():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LayerNorm([4, 18, 18]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = np.zeros((4, 20, 20), np.uint8)
    assert adapt_scans.reestimate(model, get_spec("efficientnet_lite0"), images) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_variances_beyond_fp16_are_rescaled_without_changing_the_output():
    # VGG19's head reads 0-255-scale features: a site's variances can pass fp16's 65504
    bn = torch.nn.BatchNorm1d(3).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([1e5, 7e4, 900.0]))
        bn.running_mean.copy_(torch.tensor([300.0, -20.0, 5.0]))
        bn.weight.copy_(torch.tensor([0.7, -1.2, 2.0]))
    x = torch.randn(8, 3) * 300
    before = bn(x)
    assert adapt_scans.fit_fp16(bn) == 2
    assert torch.allclose(bn(x), before, rtol=1e-4, atol=1e-4)
    assert bn.running_var.max() <= adapt_scans.FP16_SAFE and bn.running_var[2] == 900.0
    assert all(torch.isfinite(v.half()).all() for v in bn.state_dict().values() if v.is_floating_point())
