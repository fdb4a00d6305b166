"""Process groups for DistributedDataParallel training under ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per device and
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`get_dist_info` reads them without importing torch.distributed; a run without
them is a single process. :func:`start` joins the process group (NCCL for CUDA,
gloo for CPU); the other helpers are no-ops in a single process, so the trainer
calls them unconditionally.

Conventions of a distributed run (see :func:`edgeres.training.train`): ``batch_size`` is
the *global* batch, split evenly over the ranks; metrics are summed over ranks; only
rank 0 prints and writes files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from edgeres.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer; unset it or fix it") from None


def get_dist_info() -> DistInfo:
    """The job layout from torchrun's environment variables (a single process when unset)."""
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if info.world_size < 1 or not 0 <= info.rank < info.world_size:
        raise UsageError(f"RANK={info.rank} / WORLD_SIZE={info.world_size} is not a valid layout; launch with torchrun")
    return info


def distributed_device(device: str, info: DistInfo) -> str:
    """The device of this rank: ``cuda``/``auto`` become ``cuda:LOCAL_RANK`` in a distributed run."""
    if not info.distributed:
        return device
    if device in ("cuda", "auto"):
        import torch

        if device == "cuda" or torch.cuda.is_available():
            return f"cuda:{info.local_rank}"
        return "cpu"
    if device.startswith("cuda:"):
        raise UsageError(f"--device {device} pins every rank to one GPU; pass --device cuda (rank i uses cuda:LOCAL_RANK)")
    if device != "cpu":
        raise UsageError(f"distributed training supports --device cpu or cuda, not {device!r}")
    return device


def start(info: DistInfo, device: Any) -> bool:
    """Join the process group of a torchrun job (NCCL on CUDA, gloo on CPU).

    Returns True when this call created the group (the caller then calls :func:`stop`);
    False in a single process or when the group already exists.
    """
    if not info.distributed:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed; train in one process")
    if dist.is_initialized():
        if dist.get_world_size() != info.world_size:
            raise UsageError(f"a process group of {dist.get_world_size()} ranks exists but WORLD_SIZE={info.world_size}")
        return False
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise UsageError("WORLD_SIZE > 1 but MASTER_ADDR/MASTER_PORT are unset; launch with torchrun (or edgeres train --nproc N)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=info.rank, world_size=info.world_size, device_id=device)
    else:
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world_size)
    return True


def stop(created: bool) -> None:
    """Leave the process group :func:`start` created."""
    if created:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: Any) -> Any:
    """Sum ``tensor`` over all ranks in place (and return it); unchanged in a single process."""
    if _active():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: Any) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if _active():
        import torch.distributed as dist

        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        import torch.distributed as dist

        dist.barrier()


def torchrun_command(nproc: int, model: str, options: Mapping[str, Any], *,
                     python: str | None = None) -> list[str]:
    """The argv that runs ``edgeres train model <options>`` on ``nproc`` local processes via torchrun.

    ``options`` maps a flag (``'--data'``) to its value: ``None``/``False`` leave the flag
    out, ``True`` passes it bare, anything else as ``flag value``. ``--nproc`` itself is
    never forwarded (the children would launch torchrun again).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UsageError(f"--nproc must be a positive integer, got {nproc!r}")
    argv = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "-m", "edgeres", "train", str(model)]
    for flag, value in options.items():
        if flag == "--nproc" or value is None or value is False:
            continue
        if not flag.startswith("--"):
            raise ValueError(f"option {flag!r} is not a --flag")
        argv += [flag] if value is True else [flag, str(value)]
    return argv



def wrap_model(model: Any, device: Any, info: DistInfo) -> Any:
    """``model`` wrapped in DistributedDataParallel (a no-op in a single process).

    On CUDA, BatchNorm layers become SyncBatchNorm, so a step normalises over the
    global batch as a one-process run would. On CPU (gloo) SyncBatchNorm is not
    supported by PyTorch: each rank normalises over its own ``batch / W`` images and
    DDP copies rank 0's running statistics to the others at every forward.
    """
    if not info.distributed:
        return model
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return DistributedDataParallel(model)
