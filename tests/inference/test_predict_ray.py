"""Archive pre-annotation on a local Ray cluster (2 workers, started by the run): the same CSV and masks as
the local engine, a bad file's row, and a resumed run that redoes nothing."""
import numpy as np
import pytest
from PIL import Image

from models.inference.analysis import Analyzer
from models.inference.predict import predict, read_rows
from tests.inference.test_analysis import ship_random

pytest.importorskip("ray", reason="ray not installed (pip install -r requirements.txt)")


def test_ray_engine_gives_the_local_runs_rows_and_masks(tmp_path):
    from models.inference.predict_ray import predict_ray
    weights = ship_random(tmp_path / "w", ("resnet18", "unet_lite0"))
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(5):
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (80, 100 + 10 * k), dtype=np.uint8)).save(
            scans / f"s{k}.png")
    (scans / "broken.png").write_bytes(b"not a png")
    inputs = sorted(scans.iterdir())
    local = predict(inputs, tmp_path / "local", Analyzer(weights), progress=False)
    remote = predict_ray(inputs, tmp_path / "ray", weights, workers=2, progress=False)
    assert [r["path"] for r in remote] == [r["path"] for r in local]
    for a, b in zip(local, remote):
        assert a["label"] == b["label"] and bool(a["error"]) == bool(b["error"])
        for c in ("p_benign", "p_malignant", "p_normal", "uncertainty"):
            assert float(a[c] or 0) == pytest.approx(float(b[c] or 0), abs=1e-3)
        if not a["error"]:
            ma = np.asarray(Image.open(tmp_path / "local" / a["mask_path"]))
            mb = np.asarray(Image.open(tmp_path / "ray" / b["mask_path"]))
            assert ma.shape == mb.shape and (ma != mb).mean() < 0.01
    assert "not_image" in next(r for r in remote if r["path"].endswith("broken.png"))["error"]
    # resumed without the unreadable file: every row is kept as it is, and nothing is left to run, so no
    # cluster is started (the local engine's tests retry a failed file; both engines read the CSV the same way)
    import ray
    good = [p for p in inputs if p.name != "broken.png"]
    again = predict_ray(good, tmp_path / "ray", weights, workers=2, progress=False)
    assert not ray.is_initialized()
    assert again == [r for r in remote if not r["error"]] == read_rows(tmp_path / "ray" / "predictions.csv")


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from models.inference import predict as predict_module
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    weights = ship_random(tmp_path / "w", ("resnet18",))
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "a.png")
    code = predict_module.main([str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--engine", "ray",
                                "--weights", str(weights)])
    assert code == 2 and "pip install -r requirements-cluster.txt" in capsys.readouterr().err
