"""Data-parallel training under ``torchrun``: the process group, each rank's share of an epoch, and
the few decisions the ranks must take together.

``sonomark train`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); without
it, it is one process and nothing here changes what it does. With it:

- every epoch has one global order of samples (shuffled, or source-balanced, from the seed and the
  epoch, as in a single process), cut into global batches of ``--batch-size``; each rank trains on
  its slice of every global batch, so the ranks see each sample of the epoch once between them and
  an optimizer step averages the same samples as the single-process step;
- every sample's augmentation is seeded by its place in that order, so it does not depend on which
  rank draws it;
- DistributedDataParallel averages the gradients (NCCL on GPUs, gloo on CPUs);
- rank 0 alone writes checkpoints, logs and curves; a resumed run reads rank 0's checkpoint and
  hands it to the other ranks, so resuming needs ``--runs`` on rank 0's machine only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the job: rank ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def from_environment() -> Ranks:
    """The ranks torchrun (or any launcher setting the same variables) gave this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    try:
        return Ranks(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))
    except KeyError as e:
        raise RuntimeError(f"WORLD_SIZE={world} but {e.args[0]} is not set; start distributed training "
                           "with `torchrun --nproc_per_node N -m models train ...`") from None


def init(device: str) -> Ranks:
    """Join the process group torchrun describes (NCCL for ``cuda``, gloo for ``cpu``)."""
    ranks = from_environment()
    if ranks.distributed and not dist.is_initialized():
        if device == "cuda":
            # "cuda" in the run's settings then means this rank's own GPU (the modulo serves launchers that
            # show each process only its own GPU).
            torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return ranks


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def global_batches(order: Sequence[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    """An epoch's order cut into optimizer steps, as a single process's DataLoader would cut it."""
    order = list(order)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    return [order[k:k + batch_size] for k in range(0, stop, batch_size)]


def rank_slice(batch: Sequence, ranks: Ranks) -> list:
    """This rank's contiguous share of one global batch (the ranks' shares partition it)."""
    n, w = len(batch), ranks.world_size
    if n < w:
        raise ValueError(f"a batch of {n} cannot be shared by {w} processes; use a --batch-size of at least {w}")
    bounds = [n * r // w for r in range(w + 1)]
    return list(batch[bounds[ranks.rank]:bounds[ranks.rank + 1]])


def check_batch_size(batch_size: int, ranks: Ranks) -> None:
    """Equal shares keep each step the average over the whole global batch, as in one process; BatchNorm
    (DeepLabV3+'s pooling branch above all) cannot train on one sample per process."""
    if batch_size % ranks.world_size or (ranks.distributed and batch_size < 2 * ranks.world_size):
        raise ValueError(f"--batch-size {batch_size} is the global batch and must be a multiple of the "
                         f"{ranks.world_size} processes, at least {2 * ranks.world_size} (each trains on "
                         "batch-size / processes, and BatchNorm needs 2 samples or more)")


def sync_batchnorm(model: nn.Module, device: str, ranks: Ranks) -> nn.Module:
    """BatchNorm over the whole global batch on GPUs (SyncBatchNorm; it does not run on CPUs, where each
    process normalises its own share). The state dict keeps its keys, so checkpoints stay compatible."""
    if ranks.distributed and device == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module, device: str, ranks: Ranks) -> nn.Module:
    """The model DistributedDataParallel-wrapped when there are several ranks, else itself."""
    if not ranks.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device == "cuda"
                                               else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sum_over_ranks(values: Sequence[float], ranks: Ranks, device: str) -> list[float]:
    """Element-wise sums of per-rank numbers (losses, sample counts) over all ranks."""
    if not ranks.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def batch_total(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """A per-rank tensor summed over the ranks, outside autograd (e.g. a loss's normaliser)."""
    if not ranks.distributed:
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def summed_with_grad(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """A per-rank tensor summed over the ranks, with gradients flowing back to every rank's share
    (for a loss term over the whole global batch, such as the batch Dice)."""
    if not ranks.distributed:
        return value
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(value)


def agree(value: Any, what: str, ranks: Ranks) -> None:
    """Raise on every rank alike unless all ranks hold the same ``value`` (settings, data)."""
    if not ranks.distributed:
        return
    values: list = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        raise RuntimeError(f"processes {differ} have other {what} than rank 0; start every process with the same "
                           "command, datasets and weights")


def from_main(obj: Any, ranks: Ranks) -> Any:
    """Rank 0's ``obj`` on every rank: decisions (stop, pause) and a resumed checkpoint are rank 0's."""
    if not ranks.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
