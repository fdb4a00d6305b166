"""Process-group hooks. Training runs in one process today; torchrun/DDP plugs in here.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`get_dist_info`
reads them so the rest of the trainer can ask "am I the main process?" (only the main
process writes checkpoints and shows progress) without importing torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    return DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def require_single_process() -> DistInfo:
    """Refuse a multi-process launch until DDP training is implemented."""
    info = get_dist_info()
    if info.distributed:
        raise UsageError(
            f"edgeres train was launched with WORLD_SIZE={info.world_size}, but distributed (DDP) training "
            "is not implemented yet; run it as a single process (python -m edgeres train ...)"
        )
    return info
