"""Train a zoo ResNet on a data set: :func:`train` (``edgeres train``).

SGD with momentum, the learning-rate schedule of a recipe
(:mod:`edgeres.recipes`), val top-1 after every epoch. Outputs (see
:func:`edgeres.training.state.output_paths`): ``--out runs/r20.pt`` writes the best
checkpoint (highest val top-1) to ``runs/r20.pt``, the resumable one (weights,
optimizer, step count, RNG states) to ``runs/r20.last.pt`` and the per-epoch log to
``runs/r20.history.json`` / ``.csv``; a ``--out`` without ``.pt`` is a directory
receiving ``best.pt``, ``last.pt``, ``history.json`` and ``history.csv``.

Runs are deterministic given the seed (on the same machine and thread count), and
``resume=<last.pt>`` continues exactly where the run stopped: a run interrupted after
epoch k and resumed gives the same losses as one that never stopped.

Distributed: launched by ``torchrun --nproc-per-node W -m edgeres train ...`` (or
``edgeres train --nproc W``), every process runs :func:`train`; the model is wrapped in
DistributedDataParallel (NCCL on CUDA with SyncBatchNorm, gloo on CPU), the recipe's
``batch_size`` is the GLOBAL batch (each rank takes ``batch_size / W`` images of a
step, so the LR schedule and the number of steps per epoch do not depend on W), a
DistributedSampler shards each epoch's permutation, loss and top-1 are summed over
ranks, validation is sharded and summed, and only rank 0 prints and writes files.

The run is set up once (:func:`_setup`: plan, data, model, optimizer, loaders) into a
frozen :class:`~edgeres.training.session.Run`; the loop then mutates only its
:class:`~edgeres.training.session.Progress`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgeres.recipes import TrainConfig, lr_at
from edgeres.training.options import LogFn, StepFn, TrainOptions
from edgeres.training.session import Progress, Run, setup_run
from edgeres.training.setup import resolve_device
from edgeres.training.state import EpochRecord, capture_rng, write_curves, write_history

__all__ = ["EpochRecord", "TrainOptions", "TrainResult", "resolve_device", "train"]


@dataclass
class TrainResult:
    """What :func:`train` did. ``epochs_run`` counts this call; ``epoch`` the whole run so far."""

    best_checkpoint: Path
    last_checkpoint: Path
    history_path: Path
    best_val_top1: float
    best_epoch: int
    last_val_top1: float
    epochs_run: int
    epoch: int
    iterations: int
    seconds: float
    config: TrainConfig
    class_names: tuple[str, ...]
    history: list[EpochRecord] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    head_replaced: bool = False
    world_size: int = 1
    curves_png: Path | None = None


def train(
    model_name: str,
    data: str,
    out: str | os.PathLike,
    *,
    recipe: str | None = None,
    epochs: int | None = None,
    iterations: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    seed: int | None = None,
    num_workers: int | None = None,
    freeze_backbone: bool | None = None,
    overrides: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    init: str | os.PathLike | None = None,
    replace_head: bool = False,
    resume: str | os.PathLike | None = None,
    limit: int | None = None,
    device: str = "cpu",
    channels_last: bool | None = None,
    progress: bool = True,
    plot: bool = True,
    log: LogFn | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    on_step: StepFn | None = None,
) -> TrainResult:
    """Train zoo model ``model_name`` on ``data`` and write checkpoints under ``out``.

    ``recipe`` (default ``'quick'``) names a built-in recipe or a ``.toml`` file;
    ``epochs`` ... ``freeze_backbone`` and ``overrides`` (any :class:`TrainConfig` field)
    replace single recipe values, ``None`` keeping them; ``batch_size`` is the global
    batch (split over the ranks of a torchrun job). ``init`` starts from an edgeres,
    torchvision or timm checkpoint; its classifier is replaced when its class count
    differs from the data's (or always with ``replace_head=True``), and an edgeres
    checkpoint with as many classes but other names is refused. ``freeze_backbone``
    trains only the head. ``resume`` continues an interrupted run from its ``last.pt``
    with its saved recipe (explicit overrides still apply); a ``recipe`` given with it
    must configure the run as it started (re-running the starting command with
    ``resume`` added), else it is refused naming the fields that differ. ``limit`` caps
    the images per split (quick trials). ``channels_last`` (default: on for CPU, where
    it measured faster for ResNet-20 training) sets the memory format of weights and
    inputs. ``plot`` draws the training curves next to the history after every epoch.
    ``log`` receives one line per epoch and notes (default: printed to stderr when
    ``progress``); ``on_epoch_end`` is called with each :class:`EpochRecord` after its
    checkpoints are written (on every rank of a distributed run; ``log`` and all
    output only on rank 0). ``on_step(iteration, loss, top1)`` receives the running
    means of the current epoch whenever the loop syncs (every step on one CPU process).
    """
    from edgeres.training.dist import distributed_device, get_dist_info, start, stop

    opts = TrainOptions(
        recipe=recipe, epochs=epochs, iterations=iterations, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed, num_workers=num_workers, freeze_backbone=freeze_backbone,
        overrides=overrides, num_classes=num_classes, model_kwargs=model_kwargs, init=init,
        replace_head=replace_head, resume=resume, limit=limit, channels_last=channels_last,
        progress=progress, plot=plot, log=log, on_epoch_end=on_epoch_end, on_step=on_step)
    info = get_dist_info()
    dev = resolve_device(distributed_device(device, info))
    created = start(info, dev)
    try:
        return _train(model_name, data, out, opts, dev, info)
    finally:
        stop(created)


def _stats(loss: float, top1: float) -> str:
    return f"loss {loss:.4f}  acc {100 * top1:5.1f}%"


def _train(model_name: str, data: str, out: str | os.PathLike, opts: TrainOptions, dev: Any,
           info: Any) -> TrainResult:
    from edgeres.training.dist import barrier

    t_start = time.perf_counter()
    run, prog = setup_run(model_name, data, out, opts, dev, info)
    while prog.iteration < run.total_iters:
        record = _run_epoch(run, prog)
        if opts.on_epoch_end is not None:
            opts.on_epoch_end(record)
    barrier()  # rank 0's files are complete when train() returns on any rank
    paths = run.paths
    curves = paths.curves_png if prog.plot and paths.curves_png.is_file() else None
    run.emit(f"best val top-1 {100 * prog.best_top1:.2f}% (epoch {prog.best_epoch}) -> {paths.best}; "
             f"resumable state -> {paths.last}" + (f"; curves -> {curves}" if curves else ""))
    return TrainResult(paths.best, paths.last, paths.history_json, prog.best_top1, prog.best_epoch,
                       prog.history[-1].val_top1, prog.epochs_run, prog.epoch, prog.iteration,
                       time.perf_counter() - t_start, run.cfg, run.splits.class_names, prog.history,
                       run.trainable_params, run.total_params, run.head_replaced, info.world_size, curves)


def _run_epoch(run: Run, prog: Progress) -> EpochRecord:
    """Train one epoch, evaluate, write the checkpoints and history (rank 0); returns the epoch's record."""
    from edgeres.training.dist import broadcast_buffers
    from edgeres.training.loop import evaluate, train_epoch

    cfg, ipe = run.cfg, run.iters_per_epoch
    run.splits.set_epoch(prog.epoch)
    run.sampler.set_epoch(prog.epoch)
    first_lr = lr_at(cfg, prog.iteration, ipe)
    step0 = prog.iteration
    on_step = run.opts.on_step

    with run.bars.epoch(f"epoch {prog.epoch + 1}/{run.total_epochs}",
                        min(ipe, run.total_iters - prog.iteration)) as bar:
        def on_batch(n: int, loss: float, acc: float) -> None:
            bar.update(n, _stats(loss, acc))
            if on_step is not None:
                on_step(step0 + n, loss, acc)

        stats = train_epoch(
            run.net, run.train_batches(), run.optimizer, run.criterion, lr_fn=lambda it: lr_at(cfg, it, ipe),
            start_iteration=prog.iteration, stop_iteration=run.total_iters, device=run.dev,
            channels_last=run.channels_last, on_batch=on_batch, distributed=run.info.distributed,
            frozen_bn=cfg.freeze_backbone,
        )
        broadcast_buffers(run.module)  # every rank evaluates (and rank 0 saves) the same BN statistics
        val = evaluate(run.module, run.val_loader, run.dev, channels_last=run.channels_last,
                       distributed=run.info.distributed)
        bar.finish(stats.steps, f"{_stats(stats.loss, stats.top1)}  val {100 * val.top1:5.1f}%")
    prog.epoch += 1
    prog.iteration += stats.steps
    prog.epochs_run += 1
    record = EpochRecord(prog.epoch, prog.iteration, first_lr, stats.loss, stats.top1, val.loss, val.top1,
                         stats.seconds + val.seconds, stats.images / max(stats.seconds, 1e-9))
    prog.history.append(record)
    improved = val.top1 > prog.best_top1
    if improved:
        prog.best_top1, prog.best_epoch = val.top1, prog.epoch
    if run.info.is_main:
        _write_epoch(run, prog, record, improved)
    return record


def _write_epoch(run: Run, prog: Progress, record: EpochRecord, improved: bool) -> None:
    """Rank 0 after each epoch: best and last checkpoints, the history files, the curves, the log line."""
    from edgeres.checkpoint import save_checkpoint

    plan = run.plan
    meta = {**run.run_meta, "epoch": prog.epoch, "iteration": prog.iteration, "val_top1": record.val_top1,
            "val_loss": record.val_loss, "train_loss": record.train_loss}
    save = dict(model_kwargs=plan.model_kwargs, meta=meta)
    if improved:
        save_checkpoint(run.paths.best, run.module, run.model_name, run.preprocessing, **save)
    train_state = {"optimizer": run.optimizer.state_dict(), "epoch": prog.epoch, "iteration": prog.iteration,
                   "iters_per_epoch": run.iters_per_epoch, "best_val_top1": prog.best_top1,
                   "best_epoch": prog.best_epoch, "history": [r.to_dict() for r in prog.history],
                   "config": run.cfg.to_dict(), "recipe": plan.recipe, "rng": capture_rng()}
    save_checkpoint(run.paths.last, run.module, run.model_name, run.preprocessing, train_state=train_state, **save)
    header = {"model": run.model_name, "model_kwargs": plan.model_kwargs, **run.run_meta}
    write_history(run.paths, header, prog.history)
    if prog.plot:
        note = write_curves(run.paths, prog.history, title=f"{run.model_name} on {run.data} ({plan.recipe})")
        if note is not None:
            run.emit(note)
            prog.plot = False
    log = run.opts.log
    if log is not None:
        log(f"epoch {prog.epoch}/{run.total_epochs}  lr {record.lr:.4g}  "
            f"train {_stats(record.train_loss, record.train_top1)}  val loss {record.val_loss:.4f}  "
            f"val acc {100 * record.val_top1:.1f}%  {record.seconds:.1f} s")
