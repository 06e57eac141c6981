"""A short training run on a synthetic dataset: loss goes down, checkpoints resume, logs are written."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import load_cases
from models.data.images import load_gray
from models.preprocess import decode_cases, normalize, to_input
from models.training import train as T
from models.zoo import get_spec
from tests.conftest import write_busi


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    root = write_busi(tmp_path_factory.mktemp("d") / "busi", {"benign": 8, "malignant": 8, "normal": 8})
    cases = load_cases([root])
    return decode_cases(cases[::2], 224, progress=False), decode_cases(cases[1::2], 224, progress=False)


def config(name, **kw):
    return T.RunConfig.for_model(get_spec(name), "cpu", epochs=kw.pop("epochs", 2), batch_size=4, lr=1e-3, **kw)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "unet_lite0"])
def test_training_runs_logs_and_resumes(tmp_path, arrays, name):
    train, val = arrays
    spec = get_spec(name)
    logs = T.train_model(spec, train, val, config(name, epochs=1), tmp_path, progress=False)
    assert len(logs) == 1 and (tmp_path / "best.pt").is_file() and (tmp_path / "curves.png").is_file()
    # a longer run with other settings must not silently reuse the checkpoint
    with pytest.raises(ValueError, match="--fresh"):
        T.train_model(spec, train, val, config(name, epochs=2), tmp_path, progress=False)
    logs = T.train_model(spec, train, val, config(name, epochs=2), tmp_path, fresh=True, progress=False)
    assert [l.epoch for l in logs] == [1, 2]
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[0]["images_per_s"]) > 0


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, arrays, monkeypatch):
    train, val = arrays
    spec = get_spec("efficientnet_lite0")
    cfg = config("efficientnet_lite0", epochs=2)
    whole = T.train_model(spec, train, val, cfg, tmp_path / "whole", progress=False)
    part = T.train_model(spec, train, val, cfg, tmp_path / "parts", progress=False, stop_after=1)
    assert [l.epoch for l in part] == [1]
    assert not torch.load(tmp_path / "parts" / "last.pt", weights_only=False)["state"]["done"]
    resumed = T.train_model(spec, train, val, cfg, tmp_path / "parts", progress=False)
    assert [l.epoch for l in resumed] == [1, 2]
    assert resumed[-1].train_loss == pytest.approx(whole[-1].train_loss, rel=1e-4)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "parts" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    finished = (tmp_path / "parts" / "last.pt").read_bytes(), (tmp_path / "parts" / "best.pt").read_bytes()
    monkeypatch.setattr(T, "validate", lambda *a, **k: pytest.fail("a finished run trained another epoch"))
    again = T.train_model(spec, train, val, cfg, tmp_path / "parts", progress=False)
    assert [l.epoch for l in again] == [1, 2]  # finished: nothing is retrained, the logs are returned
    assert ((tmp_path / "parts" / "last.pt").read_bytes(), (tmp_path / "parts" / "best.pt").read_bytes()) == finished


def test_the_weight_average_moves_by_one_over_its_epochs_in_steps():
    net = torch.nn.Linear(1, 1, bias=False)
    assert T.weight_average(net, config("unet_lite0"), 5) is None  # not asked for
    with pytest.raises(ValueError, match="--ema-epochs"):
        T.weight_average(net, config("unet_lite0", ema_epochs=0.0), 5)
    average = T.weight_average(net, config("unet_lite0", ema_epochs=2.0), 5)  # decay 1 - 1/10
    with torch.no_grad():
        net.weight.fill_(1.0)
        average.update_parameters(net)  # the first update copies
        net.weight.fill_(3.0)
        average.update_parameters(net)
    assert average.module.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)


def test_a_run_with_a_weight_average_keeps_the_average_and_resumes_it(tmp_path, arrays):
    train, val = arrays
    spec = get_spec("efficientnet_lite0")
    cfg = config("efficientnet_lite0", epochs=2, ema_epochs=1.0, patience=5)
    T.train_model(spec, train, val, cfg, tmp_path / "whole", progress=False)
    T.train_model(spec, train, val, cfg, tmp_path / "parts", progress=False, stop_after=1)
    first = torch.load(tmp_path / "parts" / "last.pt", weights_only=False)
    best = torch.load(tmp_path / "parts" / "best.pt", weights_only=False)  # epoch 1: the first is always best
    kept = {k.removeprefix("module."): v for k, v in first["average"].items() if k.startswith("module.")}
    assert best["epoch"] == 1 and best["model"].keys() == first["model"].keys() == kept.keys()
    assert all(torch.equal(best["model"][k], kept[k]) for k in kept)  # best.pt holds the average...
    assert not all(torch.equal(first["model"][k], kept[k]) for k in kept)  # ...not the last step's weights
    T.train_model(spec, train, val, cfg, tmp_path / "parts", progress=False)
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    parts = torch.load(tmp_path / "parts" / "last.pt", weights_only=False)
    assert all(torch.allclose(whole["average"][k].float(), parts["average"][k].float(), atol=1e-5)
               for k in whole["average"])  # the average resumes with the run


def test_the_linear_probe_fits_the_head_on_the_frozen_trunk(arrays):
    train, _ = arrays
    cfg = config("efficientnet_lite0", linear_probe=True)
    net = T.build_model("efficientnet_lite0", "default")
    trunk = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("classifier.")}
    accuracy = T.linear_probe(net, get_spec("efficientnet_lite0"), train, cfg)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in trunk.items())  # the trunk is untouched
    assert net.classifier.weight.abs().sum() > 0  # the zero head is fitted
    logits = T.run_model(net, get_spec("efficientnet_lite0"), train.images)
    assert np.mean(logits.argmax(1) == train.labels) == pytest.approx(accuracy)  # the head the probe scored
    assert accuracy > 0.5  # 12 synthetic scans of 3 classes


def test_the_linear_probe_leaves_an_absent_class_without_a_say(arrays):
    train, _ = arrays
    two = train.labels != 2
    keep = lambda xs: tuple(x for x, k in zip(xs, two) if k)  # noqa: E731
    sub = T.CaseArrays(keep(train.case_ids), keep(train.sources), keep(train.groups), train.labels[two],
                       train.images[two], train.masks[two])  # benign and malignant only, as BUS-BRA
    net = T.build_model("efficientnet_lite0", "default")
    T.linear_probe(net, get_spec("efficientnet_lite0"), sub, config("efficientnet_lite0", linear_probe=True))
    logits = T.run_model(net, get_spec("efficientnet_lite0"), train.images)
    assert (logits.argmax(1) != 2).all() and not net.classifier.weight[2].detach().any()


def test_the_linear_probe_needs_an_imagenet_classifier(arrays):
    train, _ = arrays
    with pytest.raises(ValueError, match="offline ImageNet"):
        T.linear_probe(T.build_model("resnet18", None), get_spec("resnet18"), train,
                       config("resnet18", linear_probe=True))
    with pytest.raises(ValueError, match="--init default"):
        T.linear_probe(T.build_model("efficientnet_lite0", None), get_spec("efficientnet_lite0"), train,
                       config("efficientnet_lite0", linear_probe=True, init="none"))
    with pytest.raises(ValueError, match="head"):
        T.linear_probe(T.build_model("unet_lite0", None), get_spec("unet_lite0"), train,
                       config("unet_lite0", linear_probe=True))


def test_class_weights_balance_the_classes():
    w = T.class_weights(np.array([0, 0, 0, 0, 1]))
    assert w[0] * 2 == pytest.approx(w[1]) and w[2] == 0  # 1/sqrt(4) vs 1/sqrt(1)
    assert float(w.sum()) == pytest.approx(2)


def test_balanced_sampling_draws_each_dataset_equally_and_repeatably():
    sources = ["busbra"] * 900 + ["busi"] * 100
    draw = list(T.source_sampler(sources, torch.Generator().manual_seed(3)))
    assert len(draw) == len(sources)
    share = np.mean([sources[i] == "busi" for i in draw])
    assert 0.45 < share < 0.55, share  # 0.10 when drawn uniformly
    assert draw == list(T.source_sampler(sources, torch.Generator().manual_seed(3)))


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default():
    cfg = T.asdict(config("unet_lite0"))
    older = {k: v for k, v in cfg.items() if k != "balance_sources"}
    assert T._with_defaults(older) == cfg
    assert T._with_defaults({**older, "balance_sources": True}) != cfg


def test_seg_loss_is_low_for_a_right_mask():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good = T.seg_loss((target * 2 - 1) * 10, target)
    bad = T.seg_loss((1 - target * 2) * 10, target)
    assert good < 0.05 < bad


def test_augmentation_never_flips_vertically(arrays):
    """The skin line (top rows) stays at the top: bright top band, dark bottom."""
    train, _ = arrays
    data = T.AugmentedCases(train, 224, train=True)
    data.arrays.images[0][:] = 0
    data.arrays.images[0][:40] = 255
    torch.manual_seed(0)
    for _ in range(20):
        image, mask, *_ = data[0]
        assert image[0, :20].float().mean() > image[0, -20:].float().mean()


def test_to_input_matches_training_preprocessing(tmp_path):
    """What the analysis feeds a model (to_input on the decoded scan) is, value for value, what training,
    calibration and evaluation feed it (decode_cases, the un-augmented dataset, normalize)."""
    rng = np.random.default_rng(0)
    for label, (h, w) in {"benign": (300, 437), "malignant": (512, 380), "normal": (97, 130)}.items():
        (tmp_path / "busi" / label).mkdir(parents=True)
        # larger and smaller than every input size, in both directions: resampling filters differ there
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(tmp_path / "busi" / label / f"{label} (1).png")
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "busi" / label / f"{label} (1)_mask.png")
    cases = load_cases([tmp_path / "busi"])
    for name in ("efficientnet_lite0", "resnet18", "unet_lite0"):
        spec = get_spec(name)
        arrays = decode_cases(cases, spec.input_size, progress=False)
        seen_in_training = normalize(torch.stack([T.AugmentedCases(arrays, spec.input_size, train=False)[k][0]
                                                  for k in range(len(cases))]), spec)
        seen_in_evaluation = normalize(torch.from_numpy(arrays.images), spec)
        at_inference = torch.cat([to_input(load_gray(c.image_path), spec) for c in cases])
        assert at_inference.shape == (len(cases), 3, spec.input_size, spec.input_size)
        torch.testing.assert_close(at_inference, seen_in_training, rtol=0, atol=1e-6)
        torch.testing.assert_close(at_inference, seen_in_evaluation, rtol=0, atol=1e-6)