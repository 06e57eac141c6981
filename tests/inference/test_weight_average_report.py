"""``reports/weight_average.py``: runs with a moving average paired with their twins without, and the table."""
import importlib.util
import sys

import torch

from models.data.paths import REPO

sys.path.insert(0, str(REPO / "reports"))
spec = importlib.util.spec_from_file_location("weight_average", REPO / "reports" / "weight_average.py")
weight_average = importlib.util.module_from_spec(spec)
spec.loader.exec_module(weight_average)


def _run(folder, model, done=True):
    (folder / model).mkdir(parents=True)
    torch.save({"state": {"done": done}}, folder / model / "last.pt")


def test_runs_pair_with_the_finished_twin_of_the_same_source_and_seed(tmp_path, monkeypatch):
    model = "unet_lite0"
    monkeypatch.setattr(weight_average, "RUNS", tmp_path / "avg")
    monkeypatch.setattr(weight_average, "runs_of", lambda m: tmp_path / "twins" / m)
    for source, seed, twin_done in (("busi", 0, True), ("busi", 1, False), ("busbra", 0, True)):
        _run(weight_average.run_dir(model, source, seed), model)
        _run(tmp_path / "twins" / model / f"{source}-squash-s{seed}", model, done=twin_done)
    _run(weight_average.run_dir(model, "busbra", 1), model, done=False)  # still training
    pairs = weight_average.paired_runs(model)
    assert [(s, k) for s, k, *_ in pairs] == [("busbra", 0), ("busi", 0)]
    assert pairs[1][2] == tmp_path / "twins" / model / "busi-squash-s0"
    assert pairs[1][3] == weight_average.run_dir(model, "busi", 0)


def test_the_table_pairs_the_average_with_the_last_step_by_seed():
    values = {("busi", "busbra", "last", "dice_mean"): [0.60, 0.70, 0.65],
              ("busi", "busbra", "average", "dice_mean"): [0.62, 0.72, 0.67]}
    row = weight_average.table("unet_lite0", values).splitlines()[-1]
    assert row.startswith("| busi | busbra | dice_mean | 3 | 0.650 (0.050) | 0.670 (0.050) | +0.020 [+0.020, +0.020]")
