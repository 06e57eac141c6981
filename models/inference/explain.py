"""Grad-CAM explanations of the classifiers (pytorch-grad-cam), computed on demand.

The CAM hooks the registry's ``cam_layer`` of each model; the heatmap comes back at the scan's
size, in [0, 1], for the predicted class or a chosen one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from models.preprocess import to_input, to_scan
from models.zoo import ModelSpec

# Gradient-based or one-pass methods only: ScoreCAM/AblationCAM cost a forward pass per channel.
CAM_METHODS = {"Grad-CAM": GradCAM, "Grad-CAM++": GradCAMPlusPlus, "EigenCAM": EigenCAM,
               "HiResCAM": HiResCAM, "LayerCAM": LayerCAM}


@dataclass(frozen=True)
class Heatmap:
    model: str
    method: str
    target_class: str
    cam: np.ndarray  # (H, W) float32 in [0, 1], the scan's size


def explain(model: nn.Module, spec: ModelSpec, gray: np.ndarray, target_class: str | None = None,
            method: str = "Grad-CAM") -> Heatmap:
    """The ``method`` heatmap of ``model`` on the scan for ``target_class`` (default: predicted)."""
    if spec.task != "classify":
        raise ValueError(f"{spec.name} is a {spec.task} model; Grad-CAM explains the classifiers")
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    if target_class is not None and target_class not in spec.classes:
        raise ValueError(f"class {target_class!r} is not one of {spec.classes}")
    x = to_input(gray, spec)
    with torch.enable_grad():  # hooks need gradients even when the caller runs under no_grad
        if target_class is None:
            with torch.no_grad():
                target_class = spec.classes[int(model.eval()(x).argmax(1))]
        idx = spec.classes.index(target_class)
        with CAM_METHODS[method](model=model, target_layers=[model.get_submodule(spec.cam_layer)]) as cam:
            grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(idx)])[0]
    grayscale = np.nan_to_num(grayscale.astype(np.float32))
    full = to_scan(grayscale, gray.shape[:2], spec.fit)
    return Heatmap(spec.name, method, target_class, np.clip(full, 0, 1))


def heatmap_overlay(display_rgb: np.ndarray, cam: np.ndarray, opacity: float = 0.5,
                    inside: np.ndarray | None = None) -> np.ndarray:
    """The heatmap blended over the scan (RGB uint8); with ``inside`` (bool, the view's size), only there: a screen
    capture's frame, which the models did not read, keeps its own pixels."""
    base = display_rgb.astype(np.float32) / 255.0
    out = show_cam_on_image(base, cam, use_rgb=True, image_weight=1.0 - opacity)
    if inside is not None:
        out[~inside] = display_rgb[..., :3][~inside]
    return out
