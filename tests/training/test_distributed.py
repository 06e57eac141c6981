"""``sonomark train`` under torchrun: two gloo processes on this machine's CPU.

- Each epoch's samples are shared out once between the ranks, in step with the single-process
  batches, and each sample is augmented the same on whichever rank draws it.
- A paused and resumed 2-process run equals an uninterrupted one, bit for bit.
- Stated tolerance: on a model without BatchNorm and dropout, the 2-process weights equal the
  single-process weights within rtol 1e-4 / atol 1e-5 (floating-point sum order only). With
  BatchNorm and dropout they cannot match: each rank normalises its half batch by its own
  statistics (SyncBatchNorm is GPU-only) and draws its own dropout masks. Measured on ResNet-18
  after 2 short epochs from scratch (measured once, not asserted), the 2-process update differed
  from the single-process one by 0.67 of its norm, about as much as a single-process run in
  another sample order (0.72).
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.data import load_cases
from models.data.splits import load_verified, make_split, save_split
from models.data.survey import survey
from models.preprocess import decode_cases
from models.training import distributed as D
from models.training import train as T
from models.zoo import get_spec
from tests.conftest import REPO, write_busbra, write_busi

MODEL = "resnet18"  # no offline ImageNet weights: starts from the seed's random init in every run


def test_every_sample_of_an_epoch_goes_to_exactly_one_rank_in_step_with_the_global_batches():
    cfg = T.RunConfig.for_model(get_spec(MODEL), "cpu", epochs=1, batch_size=6, lr=1e-3, balance_sources=True)
    arrays = type("A", (), {"sources": ["busi"] * 7 + ["busbra"] * 20, "__len__": lambda self: 27})()
    whole = T.epoch_batches(arrays, cfg, epoch=3)
    shares = [T.epoch_batches(arrays, cfg, epoch=3, ranks=D.Ranks(r, 3)) for r in range(3)]
    assert [len(s) for s in shares] == [len(whole)] * 3 == [4] * 3  # 27 -> 4 full batches of 6
    for step, batch in enumerate(whole):
        assert sum((s[step] for s in shares), []) == batch  # the ranks' slices put together are the step
        assert all(len(s[step]) == 2 for s in shares)
    assert T.epoch_batches(arrays, cfg, epoch=3) == whole  # seed and epoch decide, nothing else
    assert T.epoch_batches(arrays, cfg, epoch=4) != whole
    with pytest.raises(ValueError, match="multiple of the 4 processes"):
        D.check_batch_size(6, D.Ranks(0, 4))
    with pytest.raises(ValueError, match="at least 8"):  # one sample per process: BatchNorm cannot train
        D.check_batch_size(4, D.Ranks(0, 4))
    with pytest.raises(ValueError, match="at least 3"):
        D.rank_slice([1, 2], D.Ranks(0, 3))


def test_a_sample_is_augmented_the_same_whichever_rank_draws_it(tmp_path):
    root = write_busi(tmp_path / "busi", {"benign": 2, "malignant": 1, "normal": 1})
    data = T.AugmentedCases(decode_cases(load_cases([root]), 96, progress=False), 96, train=True)
    a, b = data[(1, 1234)], (torch.rand(5), data[(1, 1234)])[1]  # other draws in between do not matter
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], data[(1, 99)][0])


def test_without_torchrun_it_is_one_process():
    assert D.from_environment() == D.SINGLE and not D.SINGLE.distributed
    assert D.from_main({"x": 1}, D.SINGLE) == {"x": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    busi = write_busi(root / "busi", {"benign": 20, "malignant": 8, "normal": 6})
    busbra = write_busbra(root / "busbra", patients=8)
    cases = load_cases([busi, busbra])
    split = save_split(make_split(cases, survey(cases, progress=False)), root / "split.json")
    return root, [str(busi), str(busbra)], str(split)


def _launch(processes: int, *args: str) -> None:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
                if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([*launcher, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _train(world, runs, processes: int, *extra: str) -> None:
    root, data, split = world
    _launch(processes, "-m", "models", "train", "--models", MODEL, "--data", *data, "--split", split,
            "--runs", str(runs), "--epochs", "2", "--batch-size", "4", "--lr", "3e-3", "--quiet", *extra)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "last.pt", weights_only=False)["model"]
    return {k: v.float() for k, v in state.items() if v.is_floating_point()}


def test_without_batchnorm_and_dropout_two_processes_train_the_single_process_weights(tmp_path):
    data = write_busi(tmp_path / "busi", {"benign": 10, "malignant": 7, "normal": 7})
    worker = str(REPO / "tests" / "training" / "ddp_worker.py")
    _launch(1, worker, str(data), str(tmp_path / "single"))
    _launch(2, worker, str(data), str(tmp_path / "ddp"))
    for model in ("tiny_test_cnn", "tiny_test_segmenter"):
        single, ddp = _weights(tmp_path / "single" / model), _weights(tmp_path / "ddp" / model)
        assert all(torch.allclose(single[k], ddp[k], rtol=1e-4, atol=1e-5) for k in single), model
        log = list(csv.DictReader(open(tmp_path / "ddp" / model / "log.csv")))
        assert [int(r["samples"]) for r in log] == [12] * 3  # 12 training cases, 3 steps of 4, 2 per rank
        # the loss is the global batch's (AdamW would hide a constant factor on the gradients; the log does not)
        single_log = list(csv.DictReader(open(tmp_path / "single" / model / "log.csv")))
        assert [float(r["train_loss"]) for r in log] == pytest.approx(
            [float(r["train_loss"]) for r in single_log], rel=1e-4), model


@pytest.mark.timeout(900)
def test_two_process_training_covers_the_epoch_and_resumes_exactly(world, tmp_path):
    """The real command under torchrun, ResNet-18 with BatchNorm and dropout."""
    _train(world, tmp_path / "ddp", 2)
    _train(world, tmp_path / "paused", 2, "--max-minutes", "0.0001")  # pauses after epoch 1
    paused_log = list(csv.DictReader(open(tmp_path / "paused" / MODEL / "log.csv")))
    assert [r["epoch"] for r in paused_log] == ["1"]
    _train(world, tmp_path / "paused", 2)  # the same command resumes

    root, data, split = world
    split_, cases = load_verified([Path(d) for d in data], Path(split), progress=False)
    n_train = len(split_.select(cases, "train"))
    log = list(csv.DictReader(open(tmp_path / "ddp" / MODEL / "log.csv")))
    assert [int(r["samples"]) for r in log] == [n_train - n_train % 4] * 2  # every full batch once per epoch

    ddp, paused = _weights(tmp_path / "ddp" / MODEL), _weights(tmp_path / "paused" / MODEL)
    assert all(torch.equal(ddp[k], paused[k]) for k in ddp), "a resumed 2-process run differs from an uninterrupted one"

