"""Re-estimating only the first share of each member's batch-norm layers (in network order): does a shallow
re-estimation keep the cross-site gain of ``sonomark adapt-scans`` without its class-mix hazard?
(``reports/adapt_scans.md``, second part.)

    python reports/adapt_scans_depth.py efficientnet_lite0   # then unet_lite0; about 6 minutes each

Per share: the BUSI-trained member (``runs/shape-without-busbra``) adapted on 200 scans of BUS-BRA's train
split, scored on BUS-BRA's validation split; and the shipped member adapted on a mostly normal sample of
BUSI's train split (its 91 normal scans and 22 lesion scans), scored on BUSI's validation split. Classifier
rows are ``reports/erased_normals.py``'s (the member alone, its argmax, uncalibrated); segmenter rows its Dice,
empty masks and false lesions (threshold 0.5, cleaned).
"""
import sys, copy
from pathlib import Path
import numpy as np, torch
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO)); sys.path.insert(0, str(REPO / "reports"))
from erased_normals import load, row, seg_row, NORMAL
from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.inference.ensemble import run_model, softmax
from models.preprocess import decode_cases
from models.training.adapt_scans import reestimate, batchnorm_layers
from models.zoo import get_spec
from models.weights import Manifest
torch.set_num_threads(2)
model = sys.argv[1]
spec = get_spec(model)
d = DEFAULT_DATA_DIR
split, cases = load_verified([d / "Dataset_BUSI_with_GT", d / "BUSBRA"], DEFAULT_SPLIT, progress=False)
sel = lambda s, n: [c for c in split.select(cases, n) if c.source == s]
dec = lambda cs: decode_cases(cs, spec.input_size, split.groups, progress=False)
rng = np.random.default_rng(0)
bb_train = sel("busbra", "train"); bb_adapt = dec([bb_train[k] for k in sorted(rng.choice(len(bb_train), 200, replace=False))]).images
busi_train = sel("busi", "train")
normals = [c for c in busi_train if c.label == "normal"]; lesions = [c for c in busi_train if c.label != "normal"]
mix = dec(normals + [lesions[k] for k in sorted(np.random.default_rng(0).choice(len(lesions), len(normals) // 4, replace=False))]).images
bb_val, busi_val = dec(sel("busbra", "val")), dec(sel("busi", "val"))

def partial(net, images, share):
    net = copy.deepcopy(net)
    layers = batchnorm_layers(net)
    keep = int(round(share * len(layers)))
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers[keep:]]
    reestimate(net, spec, images, 1.0)
    for m, (mu, var) in zip(layers[keep:], saved):
        m.running_mean.copy_(mu); m.running_var.copy_(var)
    return net.eval(), keep, len(layers)

cross = load(model, REPO / "runs" / "shape-without-busbra")
home = Manifest.read(REPO / "weights").load(model)
for share in (0.0, 0.1, 0.25, 0.5, 1.0):
    a, keep, n = partial(cross, bb_adapt, share) if share else (cross, 0, 0)
    h, _, _ = partial(home, mix, share) if share else (home, 0, 0)
    label = f"first {keep}/{n} BN" if share else "none"
    if spec.task == "segment":
        print(seg_row(label + " (BUSI-trained)", "busbra val", run_model(a, spec, bb_val.images), bb_val), flush=True)
        print(seg_row(label + " (shipped, mostly-normal stats)", "busi val", run_model(h, spec, busi_val.images), busi_val), flush=True)
    else:
        p = softmax(run_model(a, spec, bb_val.images))
        print(row(label + " (BUSI-trained)", "busbra val", p, bb_val.labels, 0.5), flush=True)
        p = softmax(run_model(h, spec, busi_val.images))
        print(row(label + " (shipped, mostly-normal stats)", "busi val", p, busi_val.labels, 0.5), flush=True)
