"""One training epoch and one evaluation pass, free of files and printing.

The learning rate is set before every optimizer step from ``lr_fn(iteration)``
(:func:`edgeres.recipes.lr_at`), so the step count is the whole schedule state.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from edgeres.errors import UsageError
from edgeres.training.dist import all_reduce_sum


@dataclass(frozen=True)
class EpochStats:
    """Per-image means over what one pass saw."""

    loss: float
    top1: float
    images: int
    steps: int
    seconds: float


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = batch
    non_blocking = device.type == "cuda"
    images = images.to(device, non_blocking=non_blocking)
    labels = labels.to(device, non_blocking=non_blocking)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels


def train_epoch(
    model: nn.Module,
    batches: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    lr_fn: Callable[[int], float],
    start_iteration: int,
    stop_iteration: int,
    device: torch.device,
    channels_last: bool = False,
    on_batch: Callable[[int, float, float], None] | None = None,
    distributed: bool = False,
    frozen_bn: bool = False,
) -> EpochStats:
    """Train over ``batches`` until they end or ``stop_iteration`` steps are done.

    ``on_batch(steps_this_epoch, mean_loss, top1)`` is called after every step on CPU
    (every 20 steps on an accelerator or in a distributed run, to avoid a sync per
    step). A non-finite loss raises :class:`UsageError` (the learning rate is too high
    for this run). ``distributed``: the running and final statistics are summed over all
    ranks (every rank then sees, and stops on, the same numbers). ``frozen_bn`` keeps
    BatchNorm layers whose parameters are all frozen in eval mode (running statistics
    fixed: a frozen backbone stays frozen).
    """
    model.train()
    if frozen_bn:
        _freeze_bn_stats(model)
    start = time.perf_counter()
    sync_every = 1 if device.type == "cpu" and not distributed else 20
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = steps = 0
    iteration = start_iteration
    for batch in batches:
        if iteration >= stop_iteration:
            break
        lr = lr_fn(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, labels = _to_device(batch, device, channels_last)
        logits = model(images)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = int(labels.shape[0])
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += n
        steps += 1
        iteration += 1
        if steps % sync_every == 0 or iteration >= stop_iteration:
            mean, top1, _ = _totals(loss_sum, correct, seen, distributed)
            if not math.isfinite(mean):
                raise UsageError(
                    f"the training loss became {mean} at iteration {iteration}; lower the learning rate (--lr)"
                )
            if on_batch is not None:
                on_batch(steps, mean, top1)
    mean, top1, total = _totals(loss_sum, correct, seen, distributed)
    if total == 0:
        return EpochStats(float("nan"), float("nan"), 0, 0, time.perf_counter() - start)
    if not math.isfinite(mean):
        raise UsageError(f"the training loss became {mean} at iteration {iteration}; lower the learning rate (--lr)")
    return EpochStats(mean, top1, total, steps, time.perf_counter() - start)


def _totals(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, distributed: bool) -> tuple[float, float, int]:
    """(mean loss, top-1, images) of this rank, or of all ranks together when ``distributed``."""
    sums = torch.stack([loss_sum.double(), correct.double(),
                        torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)])
    if distributed:
        all_reduce_sum(sums)
    loss, hits, n = sums.tolist()
    if n == 0:
        return float("nan"), float("nan"), 0
    return loss / n, hits / n, round(n)


def _freeze_bn_stats(model: nn.Module) -> None:
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            module.eval()


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Any], device: torch.device, *, channels_last: bool = False,
    distributed: bool = False,
) -> EpochStats:
    """Mean cross-entropy and top-1 accuracy of ``model`` (eval mode) over ``batches``.

    ``distributed``: each rank saw its own shard of the images; the sums are added over
    ranks, so every rank returns the statistics of the whole set.
    """
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = steps = 0
    for batch in batches:
        images, labels = _to_device(batch, device, channels_last)
        logits = model(images)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
        correct += (logits.argmax(1) == labels).sum()
        seen += int(labels.shape[0])
        steps += 1
    mean, top1, total = _totals(loss_sum, correct, seen, distributed)
    if total == 0:
        return EpochStats(float("nan"), float("nan"), 0, 0, time.perf_counter() - start)
    return EpochStats(mean, top1, total, steps, time.perf_counter() - start)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from the worker's torch seed."""
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def default_workers(device: torch.device) -> int:
    """DataLoader processes when the recipe leaves it open: 0 on CPU, up to 8 for an accelerator."""
    import os

    if device.type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def train_sampler(ds: Any, seed: int, rank: int = 0, world_size: int = 1) -> Any:
    """The training order: a :class:`~torch.utils.data.DistributedSampler` (shuffled, tail
    dropped so every rank gets as many images), also for one process.

    Its permutation depends only on ``seed`` and the epoch (``set_epoch``), and rank ``r``
    takes positions ``r, r + W, ...``: with a per-rank batch of ``B / W`` the ranks' step-k
    batches together are exactly the images of step k of a one-process run with batch ``B``.
    """
    from torch.utils.data import DistributedSampler

    return DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=int(seed), drop_last=True)


class Shard(torch.utils.data.Dataset):
    """Every ``world_size``-th item of ``ds`` from ``rank`` on (no padding: shards add up to ``ds``)."""

    def __init__(self, ds: Any, rank: int, world_size: int) -> None:
        self.ds, self.indices = ds, range(rank, len(ds), world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.ds[self.indices[i]]


def make_loader(ds: Any, batch_size: int, num_workers: int, device: torch.device, *,
                shuffle: bool, seed: int = 0, sampler: Any = None) -> Any:
    """A DataLoader whose order depends only on ``seed`` (a fresh generator per call), or on ``sampler``.

    Training loaders (``shuffle=True`` or a ``sampler``) drop an incomplete last batch when the
    data holds more than one batch, so BatchNorm never sees a batch of one; memory is pinned for CUDA.
    """
    from torch.utils.data import DataLoader

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    training = shuffle or sampler is not None
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        drop_last=training and len(sampler if sampler is not None else ds) > batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker if num_workers else None,
        generator=generator,
    )
