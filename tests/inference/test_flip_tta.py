"""``reports/flip_tta.py``: flip averaging mirrors scans left-right (measured, not adopted)."""
import importlib.util

import numpy as np
import torch
from torch import nn

from models.data.paths import REPO

spec = importlib.util.spec_from_file_location("flip_tta", REPO / "reports" / "flip_tta.py")
flip_tta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flip_tta)


class HalfMeans(nn.Module):
    """Logits: the mean of the left half, of the right half, and of the top half of the first channel."""

    def forward(self, x):
        x = x[:, 0]
        w, h = x.shape[-1] // 2, x.shape[-2] // 2
        return torch.stack([x[..., :w].mean((1, 2)), x[..., w:].mean((1, 2)), x[:, :h].mean((1, 2))], 1)


def test_flip_averaging_mirrors_left_right_and_keeps_the_skin_line_on_top():
    images = np.zeros((2, 224, 224), np.uint8)
    images[:, :100, :112] = 255  # bright upper left
    plain = flip_tta.logits(HalfMeans(), "efficientnet_lite0", images, flip=False)
    flipped = flip_tta.logits(HalfMeans(), "efficientnet_lite0", images, flip=True)
    assert plain[0, 0] > plain[0, 1] + 0.5  # left brighter than right without the mirror
    np.testing.assert_allclose(flipped[:, 0], flipped[:, 1], atol=1e-5)  # the mirror's mean: both halves alike
    np.testing.assert_allclose(flipped[:, 2], plain[:, 2], atol=1e-5)  # top and bottom never swap
