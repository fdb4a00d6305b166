"""A training run set up and ready for its first step: :func:`setup_run` -> (:class:`Run`, :class:`Progress`).

Setting up reads the plan (:mod:`edgeres.training.plan`), opens the data and checks its
classes against the init/resume checkpoint, builds the model (with its starting weights),
the optimizer and the loaders, and on resume restores the optimizer, the counters and the
RNG states. Everything after that is fixed for the run (:class:`Run`, frozen); the loop
changes only the counters (:class:`Progress`) and the model/optimizer objects in place.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from edgeres.errors import UsageError
from edgeres.recipes import TrainConfig
from edgeres.training.options import LogFn, TrainOptions
from edgeres.training.plan import Plan, make_plan
from edgeres.training.progress import EpochBars
from edgeres.training.setup import InitWeights, ResumeState, Splits, check_class_names, open_splits
from edgeres.training.state import EpochRecord, OutputPaths, output_paths, restore_rng


@dataclass(frozen=True)
class Run:
    """Everything fixed once the run is set up (the model and optimizer objects change in place)."""

    model_name: str
    data: str
    opts: TrainOptions
    plan: Plan
    info: Any  # edgeres.training.dist.DistInfo
    dev: Any  # torch.device
    paths: OutputPaths
    bars: EpochBars
    emit: LogFn
    splits: Splits
    preprocessing: Any  # the plan's, with the data's class names
    net: Any  # what trains: the DDP wrapper or the model itself
    module: Any  # what is saved and evaluated
    optimizer: Any
    criterion: Any
    sampler: Any
    val_loader: Any
    workers: int
    rank_batch: int
    channels_last: bool
    iters_per_epoch: int
    total_iters: int
    total_epochs: int
    run_meta: dict[str, Any]  # recipe, config, data, init, resumed_from, world_size
    trainable_params: int
    total_params: int
    head_replaced: bool

    @property
    def cfg(self) -> TrainConfig:
        return self.plan.cfg

    def train_batches(self) -> Any:
        """This epoch's loader over the training split (the sampler holds the epoch)."""
        from edgeres.training.loop import make_loader

        return make_loader(self.splits.train, self.rank_batch, self.workers, self.dev, shuffle=False,
                           sampler=self.sampler)


@dataclass
class Progress:
    """Where the run stands; restored from ``last.pt`` on resume."""

    epoch: int = 0
    iteration: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    epochs_run: int = 0  # in this call
    plot: bool = True  # off after a note that the curves cannot be drawn


@dataclass(frozen=True)
class _Model:
    net: Any
    module: Any
    optimizer: Any
    channels_last: bool
    trainable_params: int
    total_params: int
    head_replaced: bool


def setup_run(model_name: str, data: str, out: str | os.PathLike, opts: TrainOptions, dev: Any,
              info: Any) -> tuple[Run, Progress]:
    """Plan, data, model, optimizer and loaders of a run; on resume, its restored progress."""
    import torch

    from edgeres.training.loop import Shard, default_workers, make_loader, train_sampler

    paths = output_paths(out)
    bars = EpochBars(enabled=opts.progress and info.is_main)
    emit: LogFn = (opts.log or bars.print) if info.is_main else (lambda _line: None)
    plan = make_plan(model_name, opts)
    cfg = plan.cfg
    if cfg.batch_size % info.world_size:
        raise UsageError(f"batch size {cfg.batch_size} does not split over {info.world_size} processes "
                         f"(it is the global batch); pass a multiple of {info.world_size}")
    rank_batch = cfg.batch_size // info.world_size
    splits = _open_data(plan, data, opts)
    pre = plan.preprocessing.with_classes(splits.class_names)
    m = _build_model(model_name, plan, opts, len(splits.class_names), dev, info, emit)

    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(dev)
    sampler = train_sampler(splits.train, cfg.seed, info.rank, info.world_size)
    val_set = Shard(splits.val, info.rank, info.world_size) if info.distributed else splits.val
    val_loader = make_loader(val_set, rank_batch, workers, dev, shuffle=False)
    ipe = len(make_loader(splits.train, rank_batch, 0, dev, shuffle=False, sampler=sampler))
    total_iters, total_epochs = cfg.total_iterations(ipe), cfg.total_epochs(ipe)
    prog = Progress(plot=opts.plot)
    if plan.saved is not None:
        prog = _restore(plan.saved, m.optimizer, cfg, paths.best.exists(), splits.fingerprint, ipe, emit)
        prog.plot = opts.plot
        if prog.iteration >= total_iters:
            raise UsageError(f"{opts.resume} already finished its {total_epochs} epochs ({prog.iteration} steps); "
                             "pass a larger --epochs (or --iterations) to train on")

    data_meta = {"spec": str(data), "fingerprint": splits.fingerprint, "train_images": len(splits.train),
                 "val_images": len(splits.val), "val_split": splits.val_source}
    run_meta = {"recipe": plan.recipe, "config": cfg.to_dict(), "data": data_meta,
                "init": str(opts.init) if opts.init else None,
                "resumed_from": str(opts.resume) if opts.resume else None, "world_size": info.world_size}
    run = Run(model_name, data, opts, plan, info, dev, paths, bars, emit, splits, pre, m.net, m.module,
              m.optimizer, torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), sampler, val_loader,
              workers, rank_batch, m.channels_last, ipe, total_iters, total_epochs, run_meta, m.trainable_params,
              m.total_params, m.head_replaced)
    ranks = f" x {info.world_size} processes ({rank_batch} per process)" if info.distributed else ""
    emit(f"training {model_name} on {data} ({len(splits.train)} train / {len(splits.val)} val images, "
         f"{len(splits.class_names)} classes; val = {splits.val_source}), recipe {plan.recipe}: {total_epochs} "
         f"epochs of {ipe} steps, batch {cfg.batch_size}{ranks}, {dev}, {workers} loader workers")
    return run, prog


def _open_data(plan: Plan, data: str, opts: TrainOptions) -> Splits:
    """The run's splits, their classes checked against the resume/init checkpoint and ``num_classes``."""
    cfg = plan.cfg
    splits = open_splits(data, plan.preprocessing.with_classes(()), augment=cfg.augment,
                         val_fraction=cfg.val_fraction, seed=cfg.seed, limit=opts.limit)
    names = splits.class_names
    if plan.saved is not None:
        check_class_names(plan.saved.preprocessing.class_names, names, f"checkpoint {opts.resume}",
                          "resume on the same data, or start a new run with --init")
    start = plan.start
    if start is not None and start.class_names and len(start.class_names) == len(names) and not opts.replace_head:
        check_class_names(start.class_names, names, f"checkpoint {opts.init}",
                          "pass --replace-head to train a new classifier for these classes")
    if opts.num_classes is not None and opts.num_classes != len(names):
        raise UsageError(f"num_classes={opts.num_classes} but the data has {len(names)} classes; "
                         "leave num_classes out (the data decides)")
    return splits


def _build_model(model_name: str, plan: Plan, opts: TrainOptions, num_classes: int, dev: Any, info: Any,
                 emit: LogFn) -> _Model:
    """The seeded model with its starting weights, moved to ``dev`` and wrapped for DDP, and its optimizer."""
    import numpy as np
    import torch

    from edgeres.models import create_model
    from edgeres.models.weights import apply_state_dict
    from edgeres.training.dist import wrap_model
    from edgeres.training.finetune import count_parameters, freeze_backbone

    cfg = plan.cfg
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = create_model(model_name, num_classes=num_classes, **plan.model_kwargs)
    head_replaced = False
    if plan.saved is not None:
        apply_state_dict(model, plan.saved.state_dict, source=str(opts.resume))
    elif plan.start is not None:
        head_replaced = _load_start_weights(model, plan.start, opts.replace_head, num_classes, emit)
    if cfg.freeze_backbone:
        n_train, n_total = freeze_backbone(model)
        emit(f"frozen backbone: training {n_train:,} of {n_total:,} parameters (the fc head only)")
    else:
        n_train, n_total = count_parameters(model)
    use_cl = (dev.type == "cpu") if opts.channels_last is None else bool(opts.channels_last)
    model.to(dev, memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    net = wrap_model(model, dev, info)  # DDP (SyncBatchNorm on CUDA) or the model itself
    module = getattr(net, "module", net)  # what is saved and evaluated
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=cfg.lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    return _Model(net, module, optimizer, use_cl, n_train, n_total, head_replaced)


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
             iters_per_epoch: int, emit: LogFn) -> Progress:
    ts = saved.train_state
    try:
        optimizer.load_state_dict(ts["optimizer"])
    except ValueError:
        raise UsageError(f"{saved.path} was trained with freeze_backbone={not cfg.freeze_backbone}; "
                         "resume without changing --freeze-backbone") from None
    for group in optimizer.param_groups:  # explicit overrides win over the saved hyper-parameters
        group.update(momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    prog = Progress(int(ts["epoch"]), int(ts["iteration"]),
                    history=[EpochRecord.from_dict(r) for r in ts.get("history", [])])
    if best_exists:  # else the best checkpoint goes to a new place: restart the comparison there
        prog.best_top1, prog.best_epoch = float(ts.get("best_val_top1", -1.0)), int(ts.get("best_epoch", 0))
    restore_rng(ts.get("rng", {}))
    if int(ts.get("iters_per_epoch", iters_per_epoch)) != iters_per_epoch:
        emit(f"note: {iters_per_epoch} steps per epoch now, {ts['iters_per_epoch']} before (data or batch size changed)")
    if saved.meta.get("data", {}).get("fingerprint") not in (None, "", fingerprint):
        emit("note: the training data differ from those the run started on")
    return prog
