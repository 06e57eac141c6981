"""The annotation loop closes: corrected exports of cases the model gets wrong, fed back through
fine-tuning, raise its Dice on those cases (small synthetic data, the real export/reader/training path)."""
import numpy as np
from PIL import Image

from models.annotation import export
from models.data import read_dataset
from models.inference.ensemble import run_model
from models.inference.scan import read_scan
from models.preprocess import decode_cases
from models.training import train
from models.training.metrics import dice_iou
from models.zoo import build_model, get_spec


def synthetic(folder, n, bright, seed):
    """Scans with one lesion each: dark (hypoechoic) or bright; returns (paths, true masks)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, masks = [], []
    for k in range(n):
        img = np.clip(rng.normal(120, 20, (160, 200)), 0, 255)
        cy, cx, r = rng.integers(50, 110), rng.integers(60, 140), rng.integers(18, 32)
        yy, xx = np.mgrid[:160, :200]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[m] = np.clip(rng.normal(230 if bright else 20, 10, m.sum()), 0, 255)
        path = folder / f"{'bright' if bright else 'dark'} {k}.png"
        Image.fromarray(img.astype(np.uint8)).save(path)
        paths.append(path)
        masks.append(m)
    return paths, masks


def dice_on(model, spec, paths, masks):
    size = (spec.input_size, spec.input_size)
    images = np.stack([np.asarray(Image.fromarray(np.asarray(Image.open(p))).resize(size)) for p in paths])
    probs = run_model(model, spec, images)
    return float(np.mean([dice_iou(np.asarray(Image.fromarray((p > 0.5).astype(np.uint8)).resize((200, 160),
                                                                                   Image.NEAREST)) > 0, m)[0]
                          for p, m in zip(probs, masks)]))


def to_export(paths, masks, folder):
    for p, m in zip(paths, masks):
        scan = read_scan(p)
        export.save_case(folder, export.Annotation(scan, "benign", "annotator", m, "loop-test"))
    return read_dataset(folder)


def test_corrections_raise_dice_on_the_cases_the_model_got_wrong(tmp_path):
    spec = get_spec("unet_lite0")
    dark, dark_masks = synthetic(tmp_path / "dark", 12, bright=False, seed=0)
    base = to_export(dark, dark_masks, tmp_path / "base")  # the base model saw dark lesions only
    arrays = decode_cases(list(base.cases), spec.input_size, progress=False)
    cfg = train.RunConfig.for_model(spec, "cpu", epochs=2, batch_size=4, lr=2e-3, seed=0)
    train.train_model(spec, arrays, arrays, cfg, tmp_path / "base_run", progress=False)
    base_weights = tmp_path / "base_run" / "best.pt"

    bright, bright_masks = synthetic(tmp_path / "bright", 8, bright=True, seed=1)
    before = dice_on(build_model("unet_lite0", init=base_weights), spec, bright, bright_masks)

    corrected = to_export(bright, bright_masks, tmp_path / "corrections")  # the annotator's fixes
    assert len(corrected.cases) == 8
    tune = decode_cases(list(corrected.cases), spec.input_size, progress=False)
    cfg = train.RunConfig.for_model(spec, "cpu", epochs=6, batch_size=4, lr=2e-3, seed=0, init=str(base_weights))
    train.train_model(spec, tune, tune, cfg, tmp_path / "tuned", progress=False)
    after = dice_on(build_model("unet_lite0", init=tmp_path / "tuned" / "best.pt"), spec, bright, bright_masks)
    assert after > before + 0.2, (before, after)


def test_the_real_data_loop_script_runs_end_to_end_on_synthetic_data(tmp_path):
    """reports/correction_loop.py, the documented real run, on tiny data in the release layouts."""
    import importlib.util
    import json

    from models.data import load_cases
    from models.data.splits import make_split, save_split
    from models.data.survey import survey
    from tests.conftest import REPO, write_busbra, write_busi

    data = tmp_path / "data"
    write_busi(data / "Dataset_BUSI_with_GT", {"benign": 20, "malignant": 8, "normal": 6})
    write_busbra(data / "BUSBRA", patients=10)
    cases = load_cases([data])
    split = save_split(make_split(cases, survey(cases, progress=False)), tmp_path / "split.json")
    spec = importlib.util.spec_from_file_location("correction_loop", REPO / "reports" / "correction_loop.py")
    loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loop)
    out = tmp_path / "report" / "loop"
    assert loop.main(["--data", str(data), "--split", str(split), "--work", str(tmp_path / "work"), "--n", "4",
                      "--base-epochs", "1", "--tune-epochs", "1", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["corrections"]) == 4 and set(result["val"]) == {"base", "control", "corrected"}
    val = {name: result["val"][name]["busi"]["dice_mean"] for name in ("base", "control", "corrected")}
    md = out.with_suffix(".md").read_text()
    for name, d in val.items():  # the report's table states the JSON's numbers, each inside its interval
        assert d["low"] <= d["value"] <= d["high"]
        assert f"| {name} | {d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}] |" in md
    assert f"{val['corrected']['value'] - val['control']['value']:+.3f} Dice" in md
    manifest = (tmp_path / "work" / "exports" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 4 and all(json.loads(line)["note"] == "reports/correction_loop.py" for line in manifest)
    assert "Corrections minus control on BUSI validation" in out.with_suffix(".md").read_text()
