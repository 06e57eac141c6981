"""``sonomark adapt`` on two synthetic scanners: a U-Net trained on scanner A (dark lesions) adapts to
scanner B (bright lesions, another gain) from a few exported corrections, improves there, keeps
scanner A, and the site folder serves the analysis."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import weights
from models.annotation import export
from models.data import load_cases
from models.data.records import Case
from models.data.splits import make_split, save_split
from models.data.survey import survey
from models.inference.analysis import Analyzer
from models.inference.scan import read_scan
from models.training import adapt, train


def scanner_scan(rng, bright: bool, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """A 160 x 200 scan: scanner A has gain 120 and dark lesions, scanner B gain 70 and bright ones."""
    img = np.clip(rng.normal(70 if bright else 120, 18, (160, 200)), 0, 255)
    yy, xx = np.mgrid[:160, :200]
    cy, cx, r = rng.integers(50, 110), rng.integers(60, 140), rng.integers(18, 32)
    m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & lesion
    img[m] = np.clip(rng.normal(220 if bright else 20, 10, m.sum()), 0, 255)
    return img.astype(np.uint8), m


def write_scanner_a(root: Path) -> Path:
    """Scanner A in BUSI's layout (enough cases for the 20-fold grouped split)."""
    rng = np.random.default_rng(0)
    for label, n in {"benign": 26, "malignant": 6, "normal": 6}.items():
        (root / label).mkdir(parents=True)
        for k in range(1, n + 1):
            img, m = scanner_scan(rng, bright=False, lesion=label != "normal")
            Image.fromarray(img).save(root / label / f"{label} ({k}).png")
            Image.fromarray(m.astype(np.uint8) * 255).save(root / label / f"{label} ({k})_mask.png")
    return root


def export_scanner_b(folder: Path, scans: Path, n: int) -> list[Path]:
    """``n`` scanner-B scans, corrected (the true mask and label) and saved as the app saves them."""
    rng = np.random.default_rng(1)
    scans.mkdir(parents=True)
    paths = []
    for k in range(n):
        img, m = scanner_scan(rng, bright=True, lesion=True)
        path = scans / f"site b {k}.png"
        Image.fromarray(img).save(path)
        export.save_case(folder, export.Annotation(read_scan(path), "benign", "annotator", m, "dr. b"))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    site_a = write_scanner_a(root / "scanner_a")
    cases = load_cases([site_a])
    split = save_split(make_split(cases, survey(cases, progress=False)), root / "split.json")
    assert train.main(["--models", "unet_lite0", "--data", str(site_a), "--split", str(split), "--runs",
                       str(root / "runs"), "--epochs", "4", "--batch-size", "4", "--lr", "2e-3", "--quiet"]) == 0
    assert weights.ship("unet_lite0", root / "runs", root / "base")
    exports = root / "exports"
    scans_b = export_scanner_b(exports, root / "scans_b", 15)
    return root, site_a, split, exports, scans_b


def test_corrections_from_a_new_scanner_adapt_the_ensemble_without_forgetting_the_old(world):
    root, site_a, split, exports, scans_b = world
    base_files = {p.name: p.read_bytes() for p in (root / "base").iterdir()}
    out = root / "site_b_weights"
    assert adapt.main([str(exports), "--out", str(out), "--weights", str(root / "base"), "--data", str(site_a),
                       "--split", str(split), "--models", "unet_lite0", "--epochs", "6", "--batch-size", "4",
                       "--lr", "2e-3", "--check-base", "10", "--n-boot", "50", "--runs", str(root / "adapt_runs"),
                       "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in (root / "base").iterdir()} == base_files  # base untouched
    report = json.loads((out / "adaptation.json").read_text())
    site, base = report["comparisons"]
    assert site["n_cases"] == report["site_held_out"] >= 4 and report["replayed"] == report["site_train"]
    assert site["after"]["dice_mean"] > site["before"]["dice_mean"] + 0.2, site
    assert base["after"]["dice_mean"] > base["before"]["dice_mean"] - 0.1, base  # scanner A is kept
    d = site["difference"]["dice_mean"]
    assert d["low"] <= d["value"] <= d["high"]
    card = (out / "README.md").read_text()
    assert report["exports"][0]["manifest_sha256"][:12] in card and report["base"]["manifest_sha256"][:12] in card
    assert f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" in card

    manifest = weights.Manifest.read(out)
    assert manifest.ensemble["fitted"]["sources"] == ["sonomark"]  # refitted on the held-out site cases
    assert manifest.models["unet_lite0"]["sha256"] != weights.Manifest.read(root / "base").models["unet_lite0"]["sha256"]
    analysis = Analyzer(out).analyze(read_scan(scans_b[0]))  # the site folder serves the analysis
    assert analysis.model_versions["unet_lite0"] == manifest.models["unet_lite0"]["sha256"][:12]
    # re-running the command resumes: the training is finished, the same cases are held out
    again = adapt.adapt([exports], out, root / "base", [site_a], split, ["unet_lite0"], epochs=6, batch_size=4,
                        lr=2e-3, check_base=0, n_boot=0, runs=root / "adapt_runs", progress=False)
    assert again["held_out_cases"] == report["held_out_cases"]


def test_the_held_out_share_keeps_groups_whole_and_classes_on_both_sides():
    cases = [Case(f"sonomark/c{k}", "sonomark", Path(f"c{k}.png"), (), ["benign", "malignant", "normal"][k % 3],
                  f"sonomark/c{k}") for k in range(30)]
    groups = {c.case_id: f"g{int(c.case_id[10:]) // 2}" for c in cases}  # pairs of near-duplicates
    site = adapt.split_site(cases, groups, 0.3, seed=0)
    train_groups = {groups[c.case_id] for c in site.train}
    assert not train_groups & {groups[c.case_id] for c in site.held_out}
    assert len(site.train) + len(site.held_out) == 30 and 6 <= len(site.held_out) <= 14
    assert {c.label for c in site.held_out} == {"benign", "malignant", "normal"}
    with pytest.raises(ValueError, match="too few"):
        adapt.split_site(cases[:4], groups, 0.3, seed=0)


def test_adapt_refuses_to_write_over_the_base_weights(world, capsys):
    root, site_a, split, exports, _ = world
    assert adapt.main([str(exports), "--out", str(root / "base"), "--weights", str(root / "base"), "--quiet"]) == 1
    assert "new folder" in capsys.readouterr().err


def test_the_app_says_which_folder_lacks_a_manifest(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "app", "--weights", str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and f"{tmp_path / 'manifest.json'} not found" in done.stderr
