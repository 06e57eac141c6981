"""Scanner-shift augmentation: what changes between ultrasound machines and presets, applied to training scans.

``sonomark train --augment scanner`` adds to the geometric augmentation, each with probability ``p``:

- gamma (a preset's log-compression curve) and overall gain;
- a depth-gain gradient (time-gain compensation set otherwise: brighter or darker with depth);
- speckle, as multiplicative noise;
- blur, or a lower resolution (another transducer's frequency and the scanner's smoothing).

``--augment scanner-clahe`` also applies, first and with probability ``clahe``, contrast-limited adaptive
histogram equalisation (OpenCV's CLAHE, an 8 x 8 grid, clip limit drawn from ``clip``): the local contrast
enhancement some scanners and viewers apply, which others do not.

Intensity only: masks are untouched. Every draw comes from torch's global generator, which the training
dataset seeds per sample, so an augmented scan is the same whichever process draws it.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

AUGMENTATIONS = ("standard", "scanner", "scanner-clahe")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class ScannerShift:
    """Random scanner-like changes to a ``(1, S, S)`` uint8 scan."""

    def __init__(self, p: float = 0.5, gamma: float = 0.4, gain: float = 0.15, depth_gain: float = 0.4,
                 speckle: tuple[float, float] = (0.05, 0.2), blur: tuple[float, float] = (0.5, 1.5),
                 scale: tuple[float, float] = (0.35, 0.8), clahe: float = 0.0, clip: tuple[float, float] = (1.0, 4.0)):
        self.p, self.gamma, self.gain, self.depth_gain = p, gamma, gain, depth_gain
        self.speckle, self.blur, self.scale = speckle, blur, scale
        self.clahe, self.clip = clahe, clip

    @classmethod
    def named(cls, augment: str) -> ScannerShift | None:
        """The shift that ``--augment`` names; None for the standard (geometric and jitter) augmentation."""
        return {"standard": None, "scanner": cls(), "scanner-clahe": cls(clahe=0.5)}[augment]

    def _happens(self) -> bool:
        return float(torch.rand(())) < self.p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.clahe and float(torch.rand(())) < self.clahe:
            equalise = cv2.createCLAHE(clipLimit=_uniform(*self.clip), tileGridSize=(8, 8))
            image = torch.from_numpy(equalise.apply(np.ascontiguousarray(image[0].numpy()))[None])
        x = image.float() / 255
        size = x.shape[-2:]
        if self._happens():
            x = x.clamp(0, 1) ** math.exp(_uniform(-self.gamma, self.gamma)) * (1 + _uniform(-self.gain, self.gain))
        if self._happens():  # gain that changes linearly from the skin line (top) to the deepest row
            depth = torch.linspace(-0.5, 0.5, size[0]).view(1, -1, 1)
            x = x * (1 + _uniform(-self.depth_gain, self.depth_gain) * depth)
        if self._happens():
            x = x * (1 + _uniform(*self.speckle) * torch.randn_like(x))
        if self._happens():
            if float(torch.rand(())) < 0.5:
                x = TF.gaussian_blur(x, kernel_size=7, sigma=_uniform(*self.blur))
            else:
                factor = _uniform(*self.scale)
                small = [max(8, round(s * factor)) for s in size]
                x = F.interpolate(F.interpolate(x[None], size=small, mode="area"), size=list(size),
                                  mode="bilinear", align_corners=False)[0]
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)
