"""``reports/recipe_variants.py``: runs of a recipe paired with their twins without it, and the table."""
import importlib.util
import sys

import torch

from models.data.paths import REPO

sys.path.insert(0, str(REPO / "reports"))
spec = importlib.util.spec_from_file_location("recipe_variants", REPO / "reports" / "recipe_variants.py")
recipe_variants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe_variants)


def _run(folder, model, done=True):
    (folder / model).mkdir(parents=True)
    torch.save({"state": {"done": done}}, folder / model / "last.pt")


def test_runs_pair_with_the_finished_twin_of_the_same_source_and_seed(tmp_path, monkeypatch):
    model = "unet_lite0"
    monkeypatch.setattr(recipe_variants, "RUNS", tmp_path / "avg")
    monkeypatch.setattr(recipe_variants, "runs_of", lambda m: tmp_path / "twins" / m)
    for source, seed, twin_done in (("busi", 0, True), ("busi", 1, False), ("busbra", 0, True)):
        _run(recipe_variants.run_dir("ema2", model, source, seed), model)
        _run(tmp_path / "twins" / model / f"{source}-squash-s{seed}", model, done=twin_done)
    _run(recipe_variants.run_dir("lpft", model, "busi", 2), model)  # another recipe's run: not paired with ema2
    _run(tmp_path / "twins" / model / "busi-squash-s2", model)
    _run(recipe_variants.run_dir("ema2", model, "busbra", 1), model, done=False)  # still training
    pairs = recipe_variants.paired_runs("ema2", model)
    assert [(s, k) for s, k, *_ in pairs] == [("busbra", 0), ("busi", 0)]
    assert pairs[1][2] == tmp_path / "twins" / model / "busi-squash-s0"
    assert pairs[1][3] == recipe_variants.run_dir("ema2", model, "busi", 0)
    assert [(s, k) for s, k, *_ in recipe_variants.paired_runs("lpft", model)] == [("busi", 2)]


def test_the_table_pairs_the_recipe_with_its_twin_by_seed():
    values = {("busi", "busbra", "without", "dice_mean"): [0.60, 0.70, 0.65],
              ("busi", "busbra", "with", "dice_mean"): [0.62, 0.72, 0.67]}
    text = recipe_variants.table("ema2", "unet_lite0", values)
    assert "--ema-epochs 2" in text.splitlines()[0]
    row = text.splitlines()[-1]
    assert row.startswith("| busi | busbra | dice_mean | 3 | 0.650 (0.050) | 0.670 (0.050) | +0.020 [+0.020, +0.020] | "
                              "0.620 / 0.600, 0.720 / 0.700, 0.670 / 0.650 |")
