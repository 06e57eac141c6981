"""``train_model`` on tiny models with neither BatchNorm nor dropout, as one process or under torchrun.

``python tests/training/ddp_worker.py DATA RUN_DIR`` (or under ``torchrun --nproc_per_node 2``) trains a
classifier and a segmenter into ``RUN_DIR/<model>``.
Without per-rank BatchNorm statistics and dropout masks, a data-parallel step is the single-process
step up to the order of floating-point sums, so the two runs' weights must agree closely; the test
in ``test_distributed.py`` compares them.
"""
import sys
from pathlib import Path

from torch import nn

from models.data import load_cases
from models.preprocess import decode_cases
from models.training import distributed
from models.training.train import RunConfig, train_model
from models.zoo import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, register

SPECS = (
    register(ModelSpec(
        name="tiny_test_cnn", task="classify", arch="two convolutions and a linear head (test only)", input_size=32,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, cam_layer="2", init="random",
        builder=lambda: nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)))),
    # the segmentation loss's batch Dice must run over the global batch, not each process's share
    register(ModelSpec(
        name="tiny_test_segmenter", task="segment", arch="two full-resolution convolutions (test only)",
        input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD, cam_layer="0", init="random",
        builder=lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)))),
)


def main(data: Path, run_dir: Path) -> None:
    ranks = distributed.init("cpu")
    try:
        cases = load_cases([data])
        for spec in SPECS:
            train = decode_cases(cases[::2], spec.input_size, progress=False)
            val = decode_cases(cases[1::2], spec.input_size, progress=False)
            config = RunConfig.for_model(spec, "cpu", epochs=3, batch_size=4, lr=3e-3)
            train_model(spec, train, val, config, run_dir / spec.name, progress=False, ranks=ranks)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
