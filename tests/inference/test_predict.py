"""The batch pre-annotation CLI: CSV contract, exact-size masks, bad files, resume, review-queue order."""
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.inference import predict
from models.inference.analysis import Analyzer
from tests.inference.test_analysis import ship_random


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return ship_random(tmp_path_factory.mktemp("p"), ("resnet18", "unet_lite0"))


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(120, 160), (97, 131), (200, 90)]):
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(folder / ("sub" if k else "") / f"scan {k}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / ".hidden.png").write_bytes(b"skipped")
    return folder


def rows(out):
    return list(csv.DictReader(open(out / "predictions.csv")))


def test_csv_contract_and_mask_sizes(tmp_path, inputs, weights_dir):
    out = tmp_path / "out"
    assert predict.main([str(inputs), "--out", str(out), "--weights", str(weights_dir), "--overlays"]) == 0
    got = rows(out)
    assert len(got) == 4
    assert list(got[0])[:7] == ["path", "label", "p_benign", "p_malignant", "p_normal", "uncertainty", "review"]
    assert "mask_path" in got[0]
    broken = [r for r in got if r["path"].endswith("broken.png")]
    assert broken[0]["error"].startswith("not_image") and broken[0]["mask_path"] == ""
    for r in got:
        if r["error"]:
            continue
        mask = np.asarray(Image.open(out / r["mask_path"]))
        assert mask.shape == np.asarray(Image.open(r["path"])).shape
        assert set(np.unique(mask)) <= {0, 255}
        assert (out / r["overlay_path"]).is_file()
        assert abs(sum(float(r[f"p_{c}"]) for c in ("benign", "malignant", "normal")) - 1) < 1e-3


def test_resume_skips_what_is_done(tmp_path, inputs, weights_dir):
    out = tmp_path / "out"
    analyzer = Analyzer(weights_dir)
    files = predict.find_inputs([inputs])
    predict.predict(files[:2], out, analyzer, progress=False)
    first = {r["path"]: r for r in rows(out)}
    calls = []
    original = analyzer.analyze
    analyzer.analyze = lambda scan: calls.append(scan.name) or original(scan)
    predict.predict(files, out, analyzer, progress=False)
    assert len(rows(out)) == len(files)
    assert len(calls) == sum(1 for f in files[2:] if f.name != "broken.png")
    for r in rows(out):
        if r["path"] in first:
            assert r == first[r["path"]]  # earlier rows kept as they were


def test_a_csv_from_an_older_version_is_redone_not_mixed(tmp_path, inputs, weights_dir, capsys):
    out = tmp_path / "out"
    analyzer = Analyzer(weights_dir)
    files = predict.find_inputs([inputs])
    predict.predict(files, out, analyzer, progress=False)
    old = [{k: v for k, v in r.items() if k != "region"} for r in rows(out)]
    with open(out / "predictions.csv", "w", newline="") as fh:  # as a version before the region column wrote it
        w = csv.DictWriter(fh, fieldnames=[c for c in predict.COLUMNS if c != "region"])
        w.writeheader()
        w.writerows(old)
    calls = []
    original = analyzer.analyze
    analyzer.analyze = lambda scan: calls.append(scan.name) or original(scan)
    predict.predict(files, out, analyzer, progress=False)
    assert len(calls) == sum(1 for f in files if f.name != "broken.png") and len(rows(out)) == len(files)
    assert "region" in rows(out)[0] and "older version" in capsys.readouterr().err


def test_sort_by_uncertainty_and_exit_codes(tmp_path, inputs, weights_dir, capsys):
    out = tmp_path / "out"
    assert predict.main([str(inputs), "--out", str(out), "--weights", str(weights_dir), "--sort", "uncertainty"]) == 0
    got = rows(out)
    u = [float(r["uncertainty"]) for r in got if not r["error"]]
    assert u == sorted(u, reverse=True) and got[-1]["error"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"")
    assert predict.main([str(bad), "--out", str(tmp_path / "o2"), "--weights", str(weights_dir)]) == 1
    assert predict.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3"), "--weights", str(weights_dir)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_file_that_breaks_the_analysis_is_its_own_error_row_and_the_run_goes_on(tmp_path, inputs, weights_dir,
                                                                                   monkeypatch, capsys):
    engine = Analyzer(weights_dir)
    real = engine.analyze

    def analyze(scan, *a, **k):
        if scan.name == "scan 0.png":
            raise AttributeError("'NoneType' object has no attribute 'x'")  # any bug, not a ScanError
        return real(scan, *a, **k)

    monkeypatch.setattr(engine, "analyze", analyze)
    out = tmp_path / "out"
    got = predict.predict(predict.find_inputs([inputs]), out, engine, progress=False)
    bad = [r for r in got if r["path"].endswith("scan 0.png")]
    assert len(got) == 4 and bad[0]["error"] == "failed: AttributeError: 'NoneType' object has no attribute 'x'"
    assert sum(not r["error"] for r in got) == 2  # the scans after it were analysed
    assert "scan 0.png: AttributeError" in capsys.readouterr().err
    monkeypatch.setattr(engine, "analyze", real)  # fixed: a rerun retries the failed file only
    again = predict.predict(predict.find_inputs([inputs]), out, engine, progress=False)
    assert [r for r in again if r["path"].endswith("scan 0.png")][0]["error"] == ""


def test_a_screen_capture_row_names_its_region_and_its_mask_covers_the_capture(tmp_path, weights_dir):
    from tests.inference.test_scan_region import framed, speckle
    screen, (t, b, l, r) = framed(speckle(seed=7))
    (tmp_path / "in").mkdir()
    Image.fromarray(screen).save(tmp_path / "in" / "capture.png")
    Image.fromarray(speckle(seed=8)).save(tmp_path / "in" / "scan.png")
    out = tmp_path / "out"
    predict.predict(predict.find_inputs([tmp_path / "in"]), out, Analyzer(weights_dir), progress=False)
    got = {Path(r["path"]).name: r for r in rows(out)}
    assert got["scan.png"]["region"] == ""
    region = got["capture.png"]["region"]
    assert region.endswith("(frame detected)")
    (top, bottom), (left, right) = (map(int, part.split(":")) for part in region.split(" ")[0].split(","))
    assert abs(top - t) <= 3 and abs(left - l) <= 3
    mask = np.asarray(Image.open(out / got["capture.png"]["mask_path"]))
    assert mask.shape == screen.shape and not mask[:top].any() and not mask[:, :left].any()
