"""Repair the VGG19 U-Nets of round 1 for fp16. Their center's first batch norm, and in one run the first decoder
block's, kept a running variance beyond fp16's 65504, which the fp16 best.pt turned into inf (every mask then came
out empty). The registry's unet_vgg19 now scales the input of those two convolutions (VGG19_UNET_CENTER_SCALE,
VGG19_UNET_BLOCK_SCALE; their keys move under ``block``). This loads a round-1 best.pt into it; for each of the two
batch norms, in network order, a finite stored mean and variance are scaled by the same factor (exact), and an inf
one is recomputed exactly over the run's own training scans (the original files, decoded as training decodes them,
no augmentation). Every other tensor is the trained one. Writes a best.pt that `sonomark ship` reads.

    python reports/gpu/bn_statistics.py runs/gpu1/r1/vA runs/gpu1-fixed/vA
"""
import sys
from pathlib import Path

import torch

from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.preprocess import decode_cases, normalize
from models.zoo import build_model, get_spec

NAME = "unet_vgg19"
WRAPPED = ("decoder.center.", "decoder.blocks.0.conv1.")  # their input is scaled now (models/zoo.py)


def population_statistics(model, conv, images, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) variance per channel of ``conv``'s output over ``images``, the model in eval mode."""
    total = squares = None
    count, seen = 0, []
    hook = conv.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        for start in range(0, len(images), 32):
            seen.clear()
            model(normalize(torch.from_numpy(images[start:start + 32]), spec))
            x = seen[0].double().transpose(0, 1).reshape(seen[0].shape[1], -1)
            total = x.sum(1) if total is None else total + x.sum(1)
            squares = (x * x).sum(1) if squares is None else squares + (x * x).sum(1)
            count += x.shape[1]
    hook.remove()
    mean = total / count
    return mean.float(), ((squares / count - mean * mean) * count / (count - 1)).float()


def main(src: Path, dst: Path) -> None:
    ck = torch.load(src / NAME / "best.pt", map_location="cpu", weights_only=False)
    state = {}
    for k, v in ck["model"].items():
        for prefix in WRAPPED:
            if k.startswith(prefix):
                k = prefix + "block." + k[len(prefix):]
        state[k] = v.float()
    spec = get_spec(NAME)
    model = build_model(NAME, init=None)
    model.load_state_dict(state)
    model.eval()
    images = None
    for wrapper in (model.decoder.center, model.decoder.blocks[0].conv1):
        conv, bn = (wrapper.block[0][0], wrapper.block[0][1]) if wrapper is model.decoder.center else \
            (wrapper.block[0], wrapper.block[1])
        if torch.isfinite(bn.running_var).all() and torch.isfinite(bn.running_mean).all():
            bn.running_mean.mul_(wrapper.scale)
            bn.running_var.mul_(wrapper.scale ** 2)
            how = "scaled"
        else:
            if images is None:
                split, cases = load_verified([DEFAULT_DATA_DIR], DEFAULT_SPLIT, progress=False)
                train = [c for c in split.select(cases, "train") if c.source in ck["config"]["data"]]
                images = decode_cases(train, spec.input_size, split.groups, progress=False).images
            mean, var = population_statistics(model, conv, images, spec)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            how = f"recomputed over {len(images)} training scans"
        print(f"{dst}: {type(wrapper.block).__name__} batch norm {how}; variance max {bn.running_var.max():.4g}")
    half = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    bad = [k for k, v in half.items() if not torch.isfinite(v.float()).all()]
    assert not bad, f"still outside fp16: {bad}"
    (dst / NAME).mkdir(parents=True, exist_ok=True)
    torch.save({**ck, "model": model.state_dict()}, dst / NAME / "best.pt")
    for f in ("config.json", "log.csv", "curves.png"):
        (dst / NAME / f).write_bytes((src / NAME / f).read_bytes())


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
