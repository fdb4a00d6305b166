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
) -> EpochStats:
    """Train over ``batches`` until they end or ``stop_iteration`` steps are done.

    ``on_batch(steps_this_epoch, mean_loss, top1)`` is called after every step on CPU
    (every 20 steps on an accelerator, to avoid a device sync per step). A non-finite
    loss raises :class:`UsageError` (the learning rate is too high for this run).
    """
    model.train()
    start = time.perf_counter()
    sync_every = 1 if device.type == "cpu" else 20
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
            mean = loss_sum.item() / seen
            if not math.isfinite(mean):
                raise UsageError(
                    f"the training loss became {mean} at iteration {iteration}; lower the learning rate (--lr)"
                )
            if on_batch is not None:
                on_batch(steps, mean, correct.item() / seen)
    if seen == 0:
        return EpochStats(float("nan"), float("nan"), 0, 0, time.perf_counter() - start)
    mean = loss_sum.item() / seen
    if not math.isfinite(mean):
        raise UsageError(f"the training loss became {mean} at iteration {iteration}; lower the learning rate (--lr)")
    return EpochStats(mean, correct.item() / seen, seen, steps, time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Any], device: torch.device, *, channels_last: bool = False
) -> EpochStats:
    """Mean cross-entropy and top-1 accuracy of ``model`` (eval mode) over ``batches``."""
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
    if seen == 0:
        return EpochStats(float("nan"), float("nan"), 0, 0, time.perf_counter() - start)
    return EpochStats(loss_sum.item() / seen, correct.item() / seen, seen, steps, time.perf_counter() - start)


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


def make_loader(ds: Any, batch_size: int, num_workers: int, device: torch.device, *,
                shuffle: bool, seed: int = 0) -> Any:
    """A DataLoader whose order depends only on ``seed`` (a fresh generator per call).

    Training loaders (``shuffle=True``) drop an incomplete last batch when the data holds
    more than one batch, so BatchNorm never sees a batch of one; memory is pinned for CUDA.
    """
    from torch.utils.data import DataLoader

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(ds) > batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=seed_worker if num_workers else None,
        generator=generator,
    )
