"""Training: ``sonomark train --models NAME... | --all [--data DIR...]``.

Trains registered models on the committed split's train cases, validating every epoch on its
validation cases (the test split is never read here). Per model, ``runs/<name>/`` receives
``last.pt`` (resumable: model, optimizer, schedule, RNG, early-stopping state), ``best.pt`` (the
best validation epoch), ``log.csv`` and ``curves.png``. Re-running the same command resumes an
interrupted run; ``--fresh`` starts over.

Under ``torchrun --nproc_per_node N`` the same command trains data-parallel (see ``distributed``):
``--batch-size`` stays the global batch, rank 0 alone writes, and a run resumes on any number of
processes.

Ultrasound augmentation: random resized crops, small rotations and shifts, left-right flips and
brightness/contrast jitter. No vertical flips: the skin line is always at the top of a scan.
``--augment scanner`` adds scanner-shift changes of intensity (``models.training.augment``).

``--ema-epochs H`` validates and keeps an exponential moving average of the weights (and of the batch-norm
statistics) instead of the last step's: each step moves the average by 1/(H x steps per epoch), so it spans about
the last H epochs (``torch.optim.swa_utils.AveragedModel``).

``--linear-probe`` first fits a classifier's head on its frozen ImageNet trunk's features (logistic regression), then
fine-tunes everything (LP-FT), so that the trunk's features are not distorted by gradients from an untrained head
(see ``linear_probe``).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from models.data.masks import dice_iou
from models.data.paths import REPO
from models.data.records import CLASSES, Case
from models.data.sources import DEFAULT_DATA_DIR
from models.data.splits import DEFAULT_SPLIT, load_verified
from models.inference.ensemble import run_model, softmax
from models.preprocess import CaseArrays, decode_for, normalize
from models.training import distil, distributed
from models.training.augment import AUGMENTATIONS, ScannerShift
from models.training.distil import teacher_id
from models.training.erased_normals import DECOY, ERASED, ErasureRecipe, with_erased_normals
from models.training.distributed import SINGLE, Ranks
from models.training.metrics import classification_metrics
from models.weights import WEIGHTS_DIR, Manifest, sha256_file
from models.zoo import REGISTRY, ModelSpec, build_model, get_spec

# Checkpoints live outside git; SONOMARK_RUNS may put them outside the work tree so that they
# survive a fresh checkout.
DEFAULT_RUNS = Path(os.environ.get("SONOMARK_RUNS", REPO / "runs"))


@dataclass(frozen=True)
class RunConfig:
    model: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    seed: int = 0
    device: str = "cpu"
    bf16: bool = False
    init: str | None = "default"
    limit: int | None = None  # at most this many cases per split (smoke tests)
    balance_sources: bool = False  # draw each dataset equally often per epoch (see source_sampler)
    data: tuple[str, ...] = ()
    split_fingerprints: dict[str, str] = field(default_factory=dict)
    # distillation: the teachers' weights (models.training.distil.teacher_id) and the share of the
    # loss their soft targets take, the labels' loss (cross-entropy, or BCE + Dice for a segmenter) the rest
    distil: str | None = None
    distil_weight: float = 0.5
    augment: str = "standard"  # or "scanner", "scanner-clahe": also models.training.augment.ScannerShift
    erased_normals: float = 0.0  # share of lesion scans also trained on erased, as normal (models.training.erased_normals)
    erased_from: tuple[str, ...] = ()  # the datasets whose lesion scans are erased; () for all
    ema_epochs: float | None = None  # average the weights over about this many last epochs (see weight_average)
    linear_probe: bool = False  # fit the head on the frozen ImageNet trunk before fine-tuning (LP-FT)

    @classmethod
    def for_model(cls, spec: ModelSpec, device: str, **overrides) -> RunConfig:
        d = spec.train
        base = dict(model=spec.name, epochs=d.epochs, batch_size=d.batch_size, lr=d.lr, weight_decay=d.weight_decay,
                    patience=d.patience, device=device, bf16=device == "cuda" or d.bf16_on_cpu)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def weight_average(net: nn.Module, config: RunConfig, steps_per_epoch: int) -> AveragedModel | None:
    """The moving average of ``net``'s weights and buffers that ``config.ema_epochs`` asks for, or None.

    The decay per step is 1 - 1/(ema_epochs x steps_per_epoch): the average's memory is about ``ema_epochs`` epochs
    whatever the dataset's size. Buffers (batch-norm statistics) are averaged too, so the average needs no
    extra pass over the data to be used.
    """
    if config.ema_epochs is None:
        return None
    if config.ema_epochs <= 0:
        raise ValueError(f"{config.model}: --ema-epochs {config.ema_epochs}: give a positive number of epochs "
                         "(2 averages about the last two)")
    decay = 1.0 - 1.0 / max(config.ema_epochs * steps_per_epoch, 1.0)
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class _PooledFeatures(nn.Module):
    """A timm classifier's input to its head: the pooled features of its trunk."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


def linear_probe(net: nn.Module, spec: ModelSpec, train: CaseArrays, config: RunConfig) -> float:
    """Set a timm classifier's head to the logistic regression of the training labels on its frozen trunk's pooled
    features (the scans un-augmented, classes balanced); returns the probe's training accuracy. The L2 penalty is
    chosen by 5-fold cross-validation on the training cases: unpenalised, a thousand-odd features separate a few
    hundred scans exactly, and the over-confident head's first gradients would distort the trunk, what LP-FT avoids.

    A class absent from the training cases (BUS-BRA has no normal scans) gets a zero weight and a bias 10 below the
    others': the probe gives it no say, and fine-tuning may still learn it.
    """
    from sklearn.linear_model import LogisticRegressionCV
    if spec.task == "segment" or not hasattr(net, "forward_head"):
        raise ValueError(f"{config.model}: --linear-probe fits a timm classifier's head, and this model has none; "
                         "train it without --linear-probe")
    if config.init != "default" or spec.offline_init is None:
        raise ValueError(f"{config.model}: --linear-probe keeps an ImageNet trunk from being distorted; it needs a "
                         f"model started from its offline ImageNet weights (--init default), not {config.init!r}")
    counts = np.bincount(train.labels)
    if counts[counts > 0].min() < 2:
        raise ValueError(f"{config.model}: --linear-probe needs at least 2 training scans of each class present "
                         f"(counts {dict(zip(CLASSES, counts.tolist()))}); add scans or train without --linear-probe")
    features = run_model(_PooledFeatures(net), spec, train.images, config.batch_size, config.device, config.bf16)
    fit = LogisticRegressionCV(Cs=np.logspace(-4, 0, 9), cv=int(min(5, counts[counts > 0].min())),
                               class_weight="balanced", scoring="neg_log_loss",
                               l1_ratios=(0.0,), use_legacy_attributes=False, max_iter=3000).fit(features, train.labels)
    coef, bias = fit.coef_, fit.intercept_
    if len(fit.classes_) == 2:  # sklearn's one vector for two classes, as two logits with the same difference
        coef, bias = np.concatenate([-coef, coef]) / 2, np.concatenate([-bias, bias]) / 2
    head = net.get_classifier()
    weight = np.zeros(tuple(head.weight.shape), np.float32)
    offset = np.full(len(weight), bias.min() - 10.0, np.float32)
    weight[fit.classes_], offset[fit.classes_] = coef, bias
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(offset))
    return float(np.mean(fit.predict(features) == train.labels))


def _with_defaults(saved: dict) -> dict:
    """A checkpoint's settings, plus the defaults of settings added to ``RunConfig`` since it was written."""
    return {**{f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}, **saved}


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    score: float  # what early stopping maximises: mean over datasets of macro-F1 or lesion Dice
    per_source: dict[str, float]
    lr: float
    seconds: float
    images_per_s: float
    samples: int = 0  # trained on this epoch, over all processes (0 in logs written before it was kept)


def pick_device(name: str = "auto") -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class AugmentedCases(Dataset):
    """Scans (and masks) from ``CaseArrays`` with ultrasound-safe augmentation.

    ``soft_maps`` ``(len(arrays), S, S)``, a segmenter's distillation targets: each is warped with its scan and
    returned as the mask's second channel (float), the label's mask the first.
    """

    def __init__(self, arrays: CaseArrays, size: int, train: bool, augment: str = "standard",
                 soft_maps: np.ndarray | None = None):
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
        if soft_maps is not None and soft_maps.shape != arrays.masks.shape:
            raise ValueError(f"soft maps of shape {soft_maps.shape} do not match the masks' {arrays.masks.shape}")
        self.arrays = arrays
        self.soft_maps = soft_maps
        self.shift = ScannerShift.named(augment) if train else None
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05)),
            v2.ColorJitter(brightness=0.25, contrast=0.25),
        ]) if train else v2.Identity()

    def __len__(self) -> int:
        return len(self.arrays)

    def _augment(self, image: tv_tensors.Image, mask: tv_tensors.Mask) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(image, mask)
        if self.shift is not None:
            image = tv_tensors.Image(self.shift(image.as_subclass(torch.Tensor)))
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]):
        """Case ``key``, or ``(case, seed)``: augmented from its own seed, whatever process draws it."""
        k, seed = key if isinstance(key, tuple) else (key, None)
        image = tv_tensors.Image(torch.from_numpy(self.arrays.images[k])[None])
        mask = torch.from_numpy(self.arrays.masks[k])[None].to(torch.uint8)
        if self.soft_maps is not None:
            mask = torch.cat([mask.float(), torch.from_numpy(self.soft_maps[k])[None].float()])
        mask = tv_tensors.Mask(mask)
        if seed is None:
            image, mask = self._augment(image, mask)
        else:
            with torch.random.fork_rng(devices=[]):
                # the CPU generator alone (torch.manual_seed would also reseed the GPUs' dropout generator)
                torch.default_generator.manual_seed(seed)
                image, mask = self._augment(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), int(self.arrays.labels[k]), k


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Square-root inverse-frequency weights (mean 1 over the classes present).

    Plain inverse frequency weighs BUSI's few normal scans 6:1 and, measured on validation,
    pushes decisions towards "normal" (macro-F1 0.50 after two epochs); the square root balances
    the classes without that.
    """
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    w = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0.0)
    w = w * (counts > 0).sum() / w.sum()
    return torch.tensor(w, dtype=torch.float32)


def source_sampler(sources: Sequence[str], generator: torch.Generator) -> WeightedRandomSampler:
    """An epoch's draw (with replacement, as many as there are cases) in which every dataset is
    equally likely, whatever its size.

    Early stopping and the validation score weigh the datasets equally (mean over sources), while
    the train split holds about 2 BUS-BRA scans per BUSI scan (1,127 to 532); this makes training
    weigh them the same way.
    """
    names, index = np.unique(np.asarray(sources), return_inverse=True)
    counts = np.bincount(index, minlength=len(names))
    return WeightedRandomSampler(torch.from_numpy(1.0 / counts[index]), num_samples=len(sources),
                                 replacement=True, generator=generator)


def epoch_batches(train: CaseArrays, config: RunConfig, epoch: int, ranks: Ranks = SINGLE) -> list[list[tuple[int, int]]]:
    """This process's batches of ``(case, augmentation seed)`` for one epoch.

    The epoch's order (shuffled, or source-balanced) and every sample's augmentation seed depend
    only on the run's seed and the epoch; each process takes its share of every global batch.
    """
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    draw = (source_sampler(train.sources, generator) if config.balance_sources
            else RandomSampler(range(len(train)), generator=generator))
    order = list(draw)
    seeds = torch.randint(0, 2**62, (len(order),), generator=generator).tolist()
    batches = distributed.global_batches(list(zip(order, seeds)), config.batch_size,
                                         drop_last=len(train) > config.batch_size)
    return [distributed.rank_slice(b, ranks) for b in batches]


def seg_loss(logits: torch.Tensor, target: torch.Tensor, ranks: Ranks = SINGLE) -> torch.Tensor:
    """BCE plus soft Dice over the batch (Dice alone is unstable on empty normal masks).

    Under DDP the Dice sums run over the whole global batch; BCE is a mean over equal shares.
    """
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter, total = distributed.summed_with_grad(torch.stack([(prob * target).sum(), prob.sum() + target.sum()]), ranks)
    dice = 1 - (2 * inter + 1) / (total + 1)
    return bce + dice


def _autocast(config: RunConfig):
    return torch.autocast(device_type=config.device, dtype=torch.bfloat16, enabled=config.bf16)


def predict_arrays(model: nn.Module, spec: ModelSpec, arrays: CaseArrays, config: RunConfig) -> np.ndarray:
    """Class probabilities ``(N, classes)`` or lesion probabilities ``(N, S, S)``, no augmentation."""
    out = run_model(model, spec, arrays.images, config.batch_size, config.device, config.bf16)
    return out if spec.task == "segment" else softmax(out)


def validate(model: nn.Module, spec: ModelSpec, val: CaseArrays, config: RunConfig,
             weights: torch.Tensor) -> tuple[float, float, dict[str, float]]:
    """(validation loss, score, per-source score) on the validation arrays."""
    probs = predict_arrays(model, spec, val, config)
    sources = sorted(set(val.sources))
    per_source: dict[str, float] = {}
    if spec.task != "segment":
        p = torch.from_numpy(probs).clamp_min(1e-7)
        loss = float(F.nll_loss(p.log(), torch.from_numpy(val.labels), weight=weights))
        for s in sources:
            idx = [k for k, src in enumerate(val.sources) if src == s]
            m = classification_metrics([CLASSES[val.labels[k]] for k in idx], probs[idx], n_boot=0)
            per_source[f"{s}_macro_f1"] = m.scores["macro_f1"].value
            if "malignant_auc" in m.scores:
                per_source[f"{s}_malignant_auc"] = m.scores["malignant_auc"].value
        score = float(np.mean([v for k, v in per_source.items() if k.endswith("macro_f1")]))
    else:
        loss = float(np.mean([F.binary_cross_entropy(torch.from_numpy(probs[k]), torch.from_numpy(val.masks[k]).float())
                              for k in range(len(val))]))
        for s in sources:
            d = [dice_iou(probs[k] > 0.5, val.masks[k])[0] for k, src in enumerate(val.sources)
                 if src == s and val.masks[k].any()]
            if d:
                per_source[f"{s}_dice"] = float(np.mean(d))
        score = float(np.mean(list(per_source.values()))) if per_source else 0.0
    return loss, score, per_source


def _run_identity(config: RunConfig, train: CaseArrays, val: CaseArrays) -> str:
    """What every process of a run must share: its settings (a weights file by checksum, as paths differ
    between machines) and its cases."""
    settings = asdict(config)
    if settings["init"] and Path(settings["init"]).is_file():
        settings["init"] = sha256_file(Path(settings["init"]))
    text = json.dumps([settings, train.case_ids, val.case_ids], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_curves(logs: Sequence[EpochLog], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [l.epoch for l in logs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(ep, [l.train_loss for l in logs], label="train loss")
    a.plot(ep, [l.val_loss for l in logs], label="validation loss")
    a.set_xlabel("epoch")
    a.legend()
    for key in sorted(logs[-1].per_source):
        b.plot(ep, [l.per_source.get(key, math.nan) for l in logs], label=key)
    b.plot(ep, [l.score for l in logs], "k--", label="score (early stopping)")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train_model(spec: ModelSpec, train: CaseArrays, val: CaseArrays, config: RunConfig, run_dir: Path,
                fresh: bool = False, progress: bool = True, stop_after: int | None = None,
                deadline: float | None = None, ranks: Ranks = SINGLE, soft: np.ndarray | None = None) -> list[EpochLog]:
    """Train (or resume) one model; returns every epoch's log. ``best.pt`` holds the best weights.

    ``soft``: the teachers' targets when ``config.distil`` names them (``models.training.distil.soft_targets``):
    probabilities ``(len(train), classes)`` for a classifier, lesion maps ``(len(train), S, S)`` for a segmenter.

    ``stop_after`` (an epoch) and ``deadline`` (a ``time.time()``) end this call early after a
    whole epoch, leaving a checkpoint that the same call resumes, e.g. to train in chunks.
    A resumed run gives the same weights as an uninterrupted one: every epoch's shuffle depends
    only on the seed and the epoch, and the RNG states travel in the checkpoint.

    With ``ranks`` of several processes (torchrun), each trains on its share of every batch, and
    rank 0 alone validates and writes; the others follow its decisions.
    """
    distributed.check_batch_size(config.batch_size, ranks)
    if (soft is None) != (config.distil is None) or (soft is not None and len(soft) != len(train)):
        raise ValueError(f"{config.model}: distillation needs one soft target per training case "
                         f"(config.distil {config.distil!r}, {0 if soft is None else len(soft)} targets, "
                         f"{len(train)} cases)")
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    seed_everything(config.seed)
    # channels_last: a CPU training step ran 1.2-2.1x faster for the U-Net and EfficientNet-Lite0/1, and
    # 0.92-1.11x for the other four (benchmarks/results/train_speed.json).
    net = build_model(spec.name, config.init)
    net = distributed.sync_batchnorm(net, config.device, ranks).to(config.device, memory_format=torch.channels_last)
    model = net
    if ranks.distributed:
        distributed.agree(_run_identity(config, train, val), "settings or data", ranks)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    average = weight_average(net, config, math.ceil(len(train) / config.batch_size))
    kept = net if average is None else average.module  # the weights that are validated and saved
    # OneCycleLR divides by (pct_start * steps - 1): exactly 10 steps at 0.1 raised ZeroDivisionError
    warmup = 0.1 if max(steps, 1) != 10 else 0.15
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=warmup)
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "logs": [], "done": False}
    ckpt, mismatch = None, None
    if ranks.main and last.exists() and not fresh:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        if _with_defaults(ckpt["config"]) != asdict(config):
            mismatch = (f"{last}: made with other settings ({ckpt['config']}); use --fresh to start over, "
                        "or repeat the original command to resume")
    ckpt, mismatch = distributed.from_main((None, mismatch) if mismatch else (ckpt, None), ranks)
    if mismatch:  # raised on every rank, so that none waits for the others
        raise ValueError(mismatch)
    if ckpt is None and config.linear_probe:
        accuracy = linear_probe(net, spec, train, config)
        if ranks.main:
            print(f"{spec.name}: head fitted on the frozen trunk (training accuracy {accuracy:.3f}); fine-tuning")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if average is not None:
            average.load_state_dict(ckpt["average"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        np.random.set_state(ckpt["rng"]["numpy"])
        random.setstate(ckpt["rng"]["python"])
        if ranks.main:
            print(f"{spec.name}: resuming after epoch {state['epoch']} (best {state['best_score']:.4f} "
                  f"at epoch {state['best_epoch']})")
    logs = [EpochLog(**l) for l in state["logs"]]
    if state["done"]:
        if ranks.main:
            print(f"{spec.name}: already finished in {run_dir}; --fresh to train again")
        return logs
    # Wrapped after loading, so that every rank starts from the checkpoint; DDP then keeps them equal.
    model = distributed.wrap(net, config.device, ranks)
    weights = class_weights(train.labels).to(config.device)
    data = AugmentedCases(train, spec.input_size, train=True, augment=config.augment,
                          soft_maps=soft if spec.task == "segment" else None)
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        # Dropout draws from the global generator: seeded per epoch (and rank), a resumed run repeats them.
        torch.manual_seed((config.seed * 100_003 + epoch) * 1_000 + ranks.rank)
        loader = DataLoader(data, batch_sampler=epoch_batches(train, config, epoch, ranks))
        model.train()
        t0, seen, total = time.time(), 0, 0.0
        bar = tqdm(loader, desc=f"{spec.name} epoch {epoch}/{config.epochs}", unit="batch",
                   disable=not (progress and ranks.main))
        for image, mask, label, index in bar:
            x = normalize(image.to(config.device), spec).contiguous(memory_format=torch.channels_last)
            with _autocast(config):
                out = model(x).float()
            if spec.task != "segment":
                # The class-weighted mean over the whole global batch: DDP averages the ranks' gradients,
                # so each rank divides its weighted sum by the global weight total over the processes.
                y = label.to(config.device)
                total_weight = distributed.batch_total(weights[y].sum(), ranks) / ranks.world_size
                loss = F.cross_entropy(out, y, weight=weights, reduction="sum") / total_weight
                if soft is not None:  # cross-entropy to the teachers' probabilities, a mean over the global batch
                    target = torch.from_numpy(soft[index.numpy()]).to(config.device)
                    count = distributed.batch_total(torch.tensor(float(len(y)), device=config.device), ranks)
                    taught = -(target * F.log_softmax(out, 1)).sum() / (count / ranks.world_size)
                    loss = (1 - config.distil_weight) * loss + config.distil_weight * taught
            elif soft is not None:  # the mask's second channel: the teachers' map, warped with the scan
                mask = mask.to(config.device)
                loss = ((1 - config.distil_weight) * seg_loss(out, mask[:, :1], ranks)
                        + config.distil_weight * seg_loss(out, mask[:, 1:], ranks))
            else:
                loss = seg_loss(out, mask.to(config.device), ranks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            if average is not None:
                average.update_parameters(net)
            seen += len(image)
            total += loss.item() * len(image)
            bar.set_postfix(loss=f"{total / seen:.4f}")
        train_time = time.time() - t0
        total, seen = distributed.sum_over_ranks([total, seen], ranks, config.device)
        result = validate(kept, spec, val, config, weights.cpu()) if ranks.main else None
        val_loss, score, per_source = distributed.from_main(result, ranks)
        log = EpochLog(epoch, total / max(seen, 1), val_loss, score, per_source, sched.get_last_lr()[0],
                       time.time() - t0, seen / max(train_time, 1e-9), int(seen))
        logs.append(log)
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        state.update(epoch=epoch, logs=[asdict(l) for l in logs],
                     done=epoch == config.epochs or state["bad_epochs"] >= config.patience)
        pause = distributed.from_main(epoch == stop_after or (deadline is not None and time.time() > deadline), ranks)
        if not ranks.main:
            if state["done"] or pause:
                break
            continue
        if improved:
            _save_atomic({"model": kept.state_dict(), "epoch": epoch, "score": score, "config": asdict(config)}, best)
        _save_atomic({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                      **({} if average is None else {"average": average.state_dict()}),
                      "state": state, "config": asdict(config),
                      "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
                     last)
        _write_log(logs, run_dir / "log.csv")
        if epoch % 5 == 0 or state["done"] or pause or epoch == 1:  # a plot costs ~0.5 s: short epochs add up
            write_curves(logs, run_dir / "curves.png", f"{spec.name} ({spec.arch})")
        print(f"{spec.name} epoch {epoch}: train loss {log.train_loss:.4f}, val loss {val_loss:.4f}, "
              f"score {score:.4f} {'(best)' if improved else ''} "
              + " ".join(f"{k}={v:.3f}" for k, v in per_source.items()) + f", {log.images_per_s:.1f} img/s"
              + (f" on {ranks.world_size} processes" if ranks.distributed else ""))
        if state["done"]:
            if state["bad_epochs"] >= config.patience:
                print(f"{spec.name}: early stop, no improvement for {config.patience} epochs")
            break
        if pause:
            print(f"{spec.name}: paused after epoch {epoch}; run the same command again to resume")
            break
    return logs


def _write_log(logs: Sequence[EpochLog], path: Path) -> None:
    keys = sorted({k for l in logs for k in l.per_source})
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "train_loss", "val_loss", "score", *keys, "lr", "seconds", "images_per_s", "samples"])
        for l in logs:
            w.writerow([l.epoch, f"{l.train_loss:.5f}", f"{l.val_loss:.5f}", f"{l.score:.5f}",
                        *[f"{l.per_source.get(k, math.nan):.5f}" for k in keys], f"{l.lr:.3g}", f"{l.seconds:.1f}",
                        f"{l.images_per_s:.2f}", l.samples])


def split_arrays(cases: Sequence[Case], split, spec: ModelSpec, limit: int | None,
                 progress: bool) -> tuple[CaseArrays, CaseArrays]:
    out = []
    for name in ("train", "val"):
        chosen = split.select(cases, name)
        if spec.task == "grade":  # a grader reads lesions: benign or malignant cases
            chosen = [c for c in chosen if c.label != "normal"]
        if limit:
            chosen = chosen[:limit]
        out.append(decode_for(chosen, spec, split.groups, progress=progress))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="sonomark train", description=__doc__.split("\n\n")[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--models", nargs="+", choices=list(REGISTRY), metavar="NAME",
                       help=f"registered models: {', '.join(REGISTRY)}")
    which.add_argument("--all", action="store_true", help="every registered model, one after another")
    ap.add_argument("--data", nargs="+", type=Path, default=[DEFAULT_DATA_DIR], help="dataset folders (default: %(default)s)")
    ap.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="checkpoint folder (default: %(default)s)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--patience", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", default="default",
                    help='"default" (offline ImageNet where a package ships it), "none", "shipped" (fine-tune '
                         'from --weights, checksum verified), a local weights file, or "hub:ID"')
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR,
                    help="the shipped weights folder that --init shipped starts from (default: %(default)s)")
    ap.add_argument("--distil", action="store_true",
                    help="also learn from the other members of the model's task shipped in --weights: their fused "
                         "calibrated probabilities (classifiers) or lesion maps (segmenters) "
                         "(models/training/distil.py)")
    ap.add_argument("--distil-weight", type=float, help="the soft targets' share of the loss (default 0.5)")
    ap.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                    help='"standard" (default); "scanner": also gamma, depth gain, speckle, blur and resolution '
                         'changes; "scanner-clahe": those and CLAHE (models/training/augment.py)')
    ap.add_argument("--balance-sources", action="store_true",
                    help="draw each dataset equally often per epoch, as the validation score weighs them")
    ap.add_argument("--erased-normals", type=float, metavar="SHARE",
                    help="also train on this share of the lesion scans with the lesion erased, labelled normal, and "
                         "as many decoys (models/training/erased_normals.py)")
    ap.add_argument("--erased-from", nargs="+", metavar="DATASET",
                    help="with --erased-normals: erase the lesion scans of these datasets only, e.g. busbra, the one "
                         "without normal scans (default: all)")
    ap.add_argument("--ema-epochs", type=float, metavar="H",
                    help="validate and keep a moving average of the weights over about the last H epochs "
                         "(see weight_average)")
    ap.add_argument("--linear-probe", action="store_true",
                    help="fit a classifier's head on its frozen ImageNet trunk first, then fine-tune (LP-FT)")
    ap.add_argument("--limit", type=int, help="use at most this many cases per split (smoke tests)")
    ap.add_argument("--fresh", action="store_true", help="discard an existing checkpoint and start over")
    ap.add_argument("--max-minutes", type=float, help="pause (resumably) after the epoch that passes this time")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    ranks = distributed.init(device)
    try:
        return _train_all(args, device, ranks)
    finally:
        distributed.shutdown()


def _train_all(args: argparse.Namespace, device: str, ranks: Ranks) -> int:
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else None
    quiet = args.quiet or not ranks.main
    split, cases = load_verified(args.data, args.split, progress=not quiet)
    for name in (list(REGISTRY) if args.all else args.models):
        spec = get_spec(name)
        # the shipped weights may have read scans otherwise (another fit): fine-tuning them is how they change
        init = str(Manifest.read(args.weights).verify(name, check_input=False)) if args.init == "shipped" else args.init
        teachers = Manifest.read(args.weights) if args.distil else None
        if args.erased_from and not args.erased_normals:
            raise SystemExit(f"--erased-from {' '.join(args.erased_from)}: it chooses where --erased-normals erases; "
                             "give --erased-normals SHARE too")
        if args.erased_normals and teachers:
            raise SystemExit(f"{name}: --erased-normals and --distil cannot be combined (the copies have no soft "
                             "targets); choose one")
        if teachers:
            try:
                distil.teachers(teachers, name)
            except ValueError as error:
                raise SystemExit(f"{name}: {error}") from None
        config = RunConfig.for_model(spec, device, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                     patience=args.patience, seed=args.seed, limit=args.limit,
                                     balance_sources=args.balance_sources or None, augment=args.augment,
                                     erased_normals=args.erased_normals, ema_epochs=args.ema_epochs,
                                     linear_probe=args.linear_probe or None,
                                     erased_from=tuple(sorted(args.erased_from)) if args.erased_from else None,
                                     init=init, distil=teacher_id(teachers) if teachers else None,
                                     distil_weight=args.distil_weight if teachers else None,
                                     data=tuple(sorted({c.source for c in cases})),
                                     split_fingerprints=split.fingerprints)
        train, val = split_arrays(cases, split, spec, args.limit, progress=not quiet)
        if config.erased_normals:
            scans = len(train)
            try:
                recipe = ErasureRecipe(config.erased_normals, seed=config.seed, sources=tuple(config.erased_from))
                train = with_erased_normals(train, recipe)
            except ValueError as error:
                raise SystemExit(f"{name}: {error}") from None
            if ranks.main:
                added = train.case_ids[scans:]
                print(f"{name}: {sum(c.endswith(ERASED) for c in added)} lesion scans erased as normal, "
                      f"{sum(c.endswith(DECOY) for c in added)} decoys")
        soft = None
        if teachers:
            if ranks.main:
                print(f"{name}: soft targets from {', '.join(distil.teachers(teachers, name))} ({teacher_id(teachers)})")
            # the cases split_arrays chose, in its order
            soft = distil.soft_targets(teachers, name, split.select(cases, "train")[:args.limit], split.groups,
                                       progress=not quiet)
        run_dir = args.runs / name
        if ranks.main:
            print(f"{name}: {len(train)} train / {len(val)} validation cases at {spec.input_size} px ({spec.fit}) "
                  f"on {device}"
                  f"{' with bf16 autocast' if config.bf16 else ''}"
                  f"{f', {ranks.world_size} processes' if ranks.distributed else ''}")
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=1) + "\n")
        train_model(spec, train, val, config, run_dir, fresh=args.fresh, progress=not quiet, deadline=deadline,
                    ranks=ranks, soft=soft)
        if distributed.from_main(deadline is not None and time.time() > deadline, ranks):
            break
    return 0

