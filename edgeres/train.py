"""Train a zoo ResNet on a data set: ``edgeres train``.

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
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgeres.errors import UsageError
from edgeres.preprocessing import Preprocessing
from edgeres.recipes import TrainConfig, lr_at, resolve_config
from edgeres.training.progress import EpochBars
from edgeres.training.setup import (
    InitWeights,
    ResumeState,
    check_class_names,
    open_splits,
    read_init,
    read_resume,
    resolve_device,
)
from edgeres.training.state import (
    EpochRecord,
    capture_rng,
    output_paths,
    restore_rng,
    write_curves,
    write_history,
)

__all__ = ["EpochRecord", "TrainResult", "resolve_device", "train"]

LogFn = Callable[[str], None]


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


@dataclass
class _Plan:
    """The run's configuration before any data is read."""

    cfg: TrainConfig
    recipe: str
    model_kwargs: dict[str, Any]
    preprocessing: Preprocessing  # input size / resize / mean / std; class names come from the data
    saved: ResumeState | None = None
    start: InitWeights | None = None


@dataclass
class _Progress:
    """Where the run stands; restored from ``last.pt`` on resume."""

    epoch: int = 0
    iteration: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)


def _overrides(explicit: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(explicit)
    for key, value in dict(overrides or {}).items():
        if given.get(key) is not None and value is not None and value != given[key]:
            raise UsageError(f"{key} is given twice ({given[key]!r} and {value!r} in overrides); pass it once")
        if value is not None or key not in given:
            given[key] = value
    return given


def _plan(model_name: str, recipe: str | None, given: dict[str, Any], model_kwargs: Mapping[str, Any] | None,
          init: Any, resume: Any) -> _Plan:
    from edgeres.models import get_model_info

    info = get_model_info(model_name)
    if init is not None and resume is not None:
        raise UsageError("pass either --init (new run from weights) or --resume (continue a run), not both")
    if resume is not None:
        if recipe is not None:
            raise UsageError("--resume continues with the run's saved recipe; drop --recipe (override single options instead)")
        saved = read_resume(resume, model_name)
        if model_kwargs is not None and dict(model_kwargs) != saved.model_kwargs:
            raise UsageError(f"{resume} was trained with model options {saved.model_kwargs}, not {dict(model_kwargs)}; drop them")
        cfg = resolve_config(TrainConfig.from_dict(saved.train_state["config"], source=str(resume)), **given)
        return _Plan(cfg, str(saved.train_state.get("recipe", "?")), saved.model_kwargs, saved.preprocessing, saved=saved)
    plan = _Plan(resolve_config(recipe or "quick", **given), recipe or "quick", dict(model_kwargs or {}),
                 info.default_preprocessing())
    if init is not None:
        plan.start = read_init(init, model_name)
        if model_kwargs is None and plan.start.model_kwargs is not None:
            plan.model_kwargs = plan.start.model_kwargs
        if plan.start.preprocessing is not None:
            plan.preprocessing = plan.start.preprocessing
    return plan


def _load_start_weights(model: Any, start: InitWeights, replace_head: bool, num_classes: int, emit: LogFn) -> bool:
    from edgeres.models.weights import HEAD_PREFIX, apply_state_dict

    state = start.state_dict
    if replace_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    report = apply_state_dict(model, state, source=str(start.path), replace_head=True)
    note = (f"; new classifier head for {num_classes} classes (the file's has {report.file_num_classes or 'none'})"
            if report.head_replaced else "")
    emit(f"init: loaded {report.loaded} tensors from {start.path}{note}")
    return bool(report.head_replaced)


def _restore(saved: ResumeState, optimizer: Any, cfg: TrainConfig, best_exists: bool, fingerprint: str,
             iters_per_epoch: int, emit: LogFn) -> _Progress:
    ts = saved.train_state
    try:
        optimizer.load_state_dict(ts["optimizer"])
    except ValueError:
        raise UsageError(f"{saved.path} was trained with freeze_backbone={not cfg.freeze_backbone}; "
                         "resume without changing --freeze-backbone") from None
    for group in optimizer.param_groups:  # explicit overrides win over the saved hyper-parameters
        group.update(momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    prog = _Progress(int(ts["epoch"]), int(ts["iteration"]),
                     history=[EpochRecord.from_dict(r) for r in ts.get("history", [])])
    if best_exists:  # else the best checkpoint goes to a new place: restart the comparison there
        prog.best_top1, prog.best_epoch = float(ts.get("best_val_top1", -1.0)), int(ts.get("best_epoch", 0))
    restore_rng(ts.get("rng", {}))
    if int(ts.get("iters_per_epoch", iters_per_epoch)) != iters_per_epoch:
        emit(f"note: {iters_per_epoch} steps per epoch now, {ts['iters_per_epoch']} before (data or batch size changed)")
    if saved.meta.get("data", {}).get("fingerprint") not in (None, "", fingerprint):
        emit("note: the training data differ from those the run started on")
    return prog


def _stats(loss: float, top1: float) -> str:
    return f"loss {loss:.4f}  acc {100 * top1:5.1f}%"


def _on_batch(bar: Any, on_step: Callable[[int, float, float], None] | None, iteration: int, n: int,
              loss: float, top1: float) -> None:
    bar.update(n, _stats(loss, top1))
    if on_step is not None:
        on_step(iteration, loss, top1)


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
    on_step: Callable[[int, float, float], None] | None = None,
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
    with its saved recipe (explicit overrides still apply). ``limit`` caps the images
    per split (quick trials). ``channels_last`` (default: on for CPU, where it measured
    faster for ResNet-20 training) sets the memory format of weights and inputs.
    ``plot`` draws the training curves next to the history after every epoch. ``log``
    receives one line per epoch and notes (default: printed to stderr when
    ``progress``); ``on_epoch_end`` is called with each :class:`EpochRecord` after its
    checkpoints are written (on every rank of a distributed run; ``log`` and all
    output only on rank 0). ``on_step(iteration, loss, top1)`` receives the running
    means of the current epoch whenever the loop syncs (every step on one CPU process).
    """
    from edgeres.training.dist import distributed_device, get_dist_info, start, stop

    info = get_dist_info()
    dev = resolve_device(distributed_device(device, info))
    created = start(info, dev)
    try:
        return _train(model_name, data, out, dict(
            recipe=recipe, epochs=epochs, iterations=iterations, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, seed=seed, num_workers=num_workers, freeze_backbone=freeze_backbone,
            overrides=overrides, num_classes=num_classes, model_kwargs=model_kwargs, init=init,
            replace_head=replace_head, resume=resume, limit=limit, channels_last=channels_last,
            progress=progress, plot=plot, log=log, on_epoch_end=on_epoch_end, on_step=on_step), dev, info)
    finally:
        stop(created)


def _train(model_name: str, data: str, out: str | os.PathLike, a: dict[str, Any], dev: Any, info: Any) -> TrainResult:
    import numpy as np
    import torch

    from edgeres.checkpoint import save_checkpoint
    from edgeres.models import create_model
    from edgeres.models.weights import apply_state_dict
    from edgeres.training.dist import barrier, broadcast_buffers, wrap_model
    from edgeres.training.finetune import count_parameters, freeze_backbone
    from edgeres.training.loop import (
        Shard,
        default_workers,
        evaluate,
        make_loader,
        train_epoch,
        train_sampler,
    )

    t_start = time.perf_counter()
    init, resume, log = a["init"], a["resume"], a["log"]
    main = info.is_main
    paths = output_paths(out)
    bars = EpochBars(enabled=a["progress"] and main)
    emit: LogFn = (log or bars.print) if main else (lambda _line: None)
    given = _overrides({k: a[k] for k in ("epochs", "iterations", "batch_size", "lr", "weight_decay", "seed",
                                          "num_workers", "freeze_backbone")}, a["overrides"])
    plan = _plan(model_name, a["recipe"], given, a["model_kwargs"], init, resume)
    cfg = plan.cfg
    if cfg.batch_size % info.world_size:
        raise UsageError(f"batch size {cfg.batch_size} does not split over {info.world_size} processes "
                         f"(it is the global batch); pass a multiple of {info.world_size}")
    rank_batch = cfg.batch_size // info.world_size

    splits = open_splits(data, plan.preprocessing.with_classes(()), augment=cfg.augment,
                         val_fraction=cfg.val_fraction, seed=cfg.seed, limit=a["limit"])
    names = splits.class_names
    if plan.saved is not None:
        check_class_names(plan.saved.preprocessing.class_names, names, f"checkpoint {resume}",
                          "resume on the same data, or start a new run with --init")
    start_w = plan.start
    if start_w is not None and start_w.class_names and len(start_w.class_names) == len(names) \
            and not a["replace_head"]:
        check_class_names(start_w.class_names, names, f"checkpoint {init}",
                          "pass --replace-head to train a new classifier for these classes")
    if a["num_classes"] is not None and a["num_classes"] != len(names):
        raise UsageError(f"--num-classes {a['num_classes']} but the data has {len(names)} classes; drop --num-classes")
    pre = plan.preprocessing.with_classes(names)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = create_model(model_name, num_classes=len(names), **plan.model_kwargs)
    head_replaced = False
    if plan.saved is not None:
        apply_state_dict(model, plan.saved.state_dict, source=str(resume))
    elif start_w is not None:
        head_replaced = _load_start_weights(model, start_w, a["replace_head"], len(names), emit)
    if cfg.freeze_backbone:
        n_train, n_total = freeze_backbone(model)
        emit(f"frozen backbone: training {n_train:,} of {n_total:,} parameters (the fc head only)")
    else:
        n_train, n_total = count_parameters(model)
    use_cl = (dev.type == "cpu") if a["channels_last"] is None else bool(a["channels_last"])
    model.to(dev, memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    net = wrap_model(model, dev, info)  # DDP (SyncBatchNorm on CUDA) or the model itself
    module = getattr(net, "module", net)  # what is saved and evaluated
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(dev)
    sampler = train_sampler(splits.train, cfg.seed, info.rank, info.world_size)
    val_set = Shard(splits.val, info.rank, info.world_size) if info.distributed else splits.val
    val_loader = make_loader(val_set, rank_batch, workers, dev, shuffle=False)

    ipe = len(make_loader(splits.train, rank_batch, 0, dev, shuffle=False, sampler=sampler))
    total_iters, total_epochs = cfg.total_iterations(ipe), cfg.total_epochs(ipe)
    prog = _Progress()
    if plan.saved is not None:
        prog = _restore(plan.saved, optimizer, cfg, paths.best.exists(), splits.fingerprint, ipe, emit)
        if prog.iteration >= total_iters:
            raise UsageError(f"{resume} already finished its {total_epochs} epochs ({prog.iteration} steps); "
                             "pass a larger --epochs (or --iterations) to train on")

    data_meta = {"spec": str(data), "fingerprint": splits.fingerprint, "train_images": len(splits.train),
                 "val_images": len(splits.val), "val_split": splits.val_source}
    run_meta = {"recipe": plan.recipe, "config": cfg.to_dict(), "data": data_meta,
                "init": str(init) if init else None, "resumed_from": str(resume) if resume else None,
                "world_size": info.world_size}
    header = {"model": model_name, "model_kwargs": plan.model_kwargs, **run_meta}
    ranks = f" x {info.world_size} processes ({rank_batch} per process)" if info.distributed else ""
    emit(f"training {model_name} on {data} ({len(splits.train)} train / {len(splits.val)} val images, "
         f"{len(names)} classes; val = {splits.val_source}), recipe {plan.recipe}: {total_epochs} epochs "
         f"of {ipe} steps, batch {cfg.batch_size}{ranks}, {dev}, {workers} loader workers")

    epochs_run = 0
    plot_ok = a["plot"]
    while prog.iteration < total_iters:
        splits.set_epoch(prog.epoch)
        sampler.set_epoch(prog.epoch)
        first_lr = lr_at(cfg, prog.iteration, ipe)
        step0 = prog.iteration
        with bars.epoch(f"epoch {prog.epoch + 1}/{total_epochs}", min(ipe, total_iters - prog.iteration)) as bar:
            stats = train_epoch(
                net, make_loader(splits.train, rank_batch, workers, dev, shuffle=False, sampler=sampler),
                optimizer, criterion, lr_fn=lambda it: lr_at(cfg, it, ipe), start_iteration=prog.iteration,
                stop_iteration=total_iters, device=dev, channels_last=use_cl,
                on_batch=lambda n, loss, acc, bar=bar, step0=step0: _on_batch(bar, a["on_step"], step0 + n, n, loss,
                                                                               acc),
                distributed=info.distributed, frozen_bn=cfg.freeze_backbone,
            )
            broadcast_buffers(module)  # every rank evaluates (and rank 0 saves) the same BN statistics
            val = evaluate(module, val_loader, dev, channels_last=use_cl, distributed=info.distributed)
            bar.finish(stats.steps, f"{_stats(stats.loss, stats.top1)}  val {100 * val.top1:5.1f}%")
        prog.epoch += 1
        prog.iteration += stats.steps
        epochs_run += 1
        record = EpochRecord(prog.epoch, prog.iteration, first_lr, stats.loss, stats.top1, val.loss, val.top1,
                             stats.seconds + val.seconds, stats.images / max(stats.seconds, 1e-9))
        prog.history.append(record)
        meta = {**run_meta, "epoch": prog.epoch, "iteration": prog.iteration, "val_top1": val.top1,
                "val_loss": val.loss, "train_loss": stats.loss}
        improved = val.top1 > prog.best_top1
        if improved:
            prog.best_top1, prog.best_epoch = val.top1, prog.epoch
        if main:
            if improved:
                save_checkpoint(paths.best, module, model_name, pre, model_kwargs=plan.model_kwargs, meta=meta)
            train_state = {"optimizer": optimizer.state_dict(), "epoch": prog.epoch, "iteration": prog.iteration,
                           "iters_per_epoch": ipe, "best_val_top1": prog.best_top1, "best_epoch": prog.best_epoch,
                           "history": [r.to_dict() for r in prog.history], "config": cfg.to_dict(),
                           "recipe": plan.recipe, "rng": capture_rng()}
            save_checkpoint(paths.last, module, model_name, pre, model_kwargs=plan.model_kwargs, meta=meta,
                            train_state=train_state)
            write_history(paths, header, prog.history)
            if plot_ok:
                note = write_curves(paths, prog.history, title=f"{model_name} on {data} ({plan.recipe})")
                if note is not None:
                    emit(note)
                    plot_ok = False
            if log is not None:
                log(f"epoch {prog.epoch}/{total_epochs}  lr {first_lr:.4g}  train {_stats(stats.loss, stats.top1)}  "
                    f"val loss {val.loss:.4f}  val acc {100 * val.top1:.1f}%  {record.seconds:.1f} s")
        if a["on_epoch_end"] is not None:
            a["on_epoch_end"](record)

    barrier()  # rank 0's files are complete when train() returns on any rank
    curves = paths.curves_png if plot_ok and paths.curves_png.is_file() else None
    emit(f"best val top-1 {100 * prog.best_top1:.2f}% (epoch {prog.best_epoch}) -> {paths.best}; "
         f"resumable state -> {paths.last}" + (f"; curves -> {curves}" if curves else ""))
    return TrainResult(paths.best, paths.last, paths.history_json, prog.best_top1, prog.best_epoch,
                       prog.history[-1].val_top1, epochs_run, prog.epoch, prog.iteration,
                       time.perf_counter() - t_start, cfg, names, prog.history, n_train, n_total, head_replaced,
                       info.world_size, curves)
