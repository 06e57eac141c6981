"""``reports/paired_val.py``: the difference between two ensembles on the same validation cases, paired."""
import importlib.util
import json

import pytest

from models.data.paths import REPO

spec = importlib.util.spec_from_file_location("paired_val", REPO / "reports" / "paired_val.py")
paired_val = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paired_val)

ONE_HOT = {"benign": [0.8, 0.1, 0.1], "malignant": [0.1, 0.8, 0.1], "normal": [0.1, 0.1, 0.8]}


def world(tmp_path):
    """A split of 10 BUSI validation cases in 5 groups, a baseline that calls two normal scans benign and a
    candidate that gets every case right."""
    labels = ["benign", "malignant", "normal"] * 3 + ["normal"]
    cases = {f"busi/{k}": {"split": "val", "group": f"g{k // 2}", "label": label} for k, label in enumerate(labels)}
    split = {"fingerprints": {"busi": "f" * 64}, "cases": cases}
    (tmp_path / "split.json").write_text(json.dumps(split))
    for name, wrong in (("base", {"busi/2", "busi/5"}), ("cand", set())):
        probs = {cid: ONE_HOT["benign" if cid in wrong else c["label"]] for cid, c in cases.items()}
        metrics = {"busi": {"split": "val", "fingerprint": "f" * 64, "cases": {c: {"probs": p} for c, p in probs.items()}}}
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics_val.json").write_text(json.dumps(metrics))
    return split


def test_the_candidate_minus_the_baseline_with_paired_intervals(tmp_path, capsys):
    split = world(tmp_path)
    base, cand = (paired_val.read(tmp_path / n, split) for n in ("base", "cand"))
    r = paired_val.compare(base, cand, split, n_boot=200)["busi"]
    assert r["cases"] == 10 and r["changed_calls"] == 2
    point, low, high = r["difference"]["normal_recall"]
    assert point == pytest.approx(0.5) and 0 <= low <= point <= high <= 1
    assert r["difference"]["lesion_recall"] == (0.0, 0.0, 0.0)  # no lesion scan moved, in any draw
    assert r["difference"]["macro_f1"][0] > 0
    same = paired_val.compare(base, base, split, n_boot=50)["busi"]
    assert same["changed_calls"] == 0 and all(d == (0.0, 0.0, 0.0) for d in same["difference"].values())
    assert paired_val.main([str(tmp_path / "base"), str(tmp_path / "cand"), "--split", str(tmp_path / "split.json"),
                            "--boot", "50"]) == 0
    assert "| busi val | 10 | 2 | +" in capsys.readouterr().out


def test_it_refuses_a_file_of_another_split(tmp_path):
    split = world(tmp_path)
    path = tmp_path / "cand" / "metrics_val.json"
    metrics = json.loads(path.read_text())
    metrics["busi"]["split"] = "test"
    path.write_text(json.dumps(metrics))
    with pytest.raises(SystemExit, match="not the committed split's validation data"):
        paired_val.read(tmp_path / "cand", split)
    with pytest.raises(SystemExit, match="not found; run `sonomark evaluate"):
        paired_val.read(tmp_path / "missing", split)
