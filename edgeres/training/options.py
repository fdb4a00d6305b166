"""What a caller asked :func:`edgeres.training.train` for, as one frozen record."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from edgeres.errors import UsageError
from edgeres.training.state import EpochRecord

LogFn = Callable[[str], None]
StepFn = Callable[[int, float, float], None]

# TrainConfig fields that train() also takes as keyword arguments (None: the recipe's value).
RECIPE_KEYWORDS = ("epochs", "iterations", "batch_size", "lr", "weight_decay", "seed", "num_workers",
                   "freeze_backbone")


@dataclass(frozen=True)
class TrainOptions:
    """The options of one :func:`edgeres.training.train` call, as given (``None``: the default).

    ``epochs`` ... ``freeze_backbone`` and ``overrides`` replace single fields of the recipe
    (see :meth:`recipe_overrides`); the rest say where the run starts from (``init``,
    ``resume``), what it reads (``limit``) and how it reports (``progress``, ``plot``,
    ``log``, ``on_epoch_end``, ``on_step``).
    """

    recipe: str | None = None
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    seed: int | None = None
    num_workers: int | None = None
    freeze_backbone: bool | None = None
    overrides: Mapping[str, Any] | None = None
    num_classes: int | None = None
    model_kwargs: Mapping[str, Any] | None = None
    init: str | os.PathLike | None = None
    replace_head: bool = False
    resume: str | os.PathLike | None = None
    limit: int | None = None
    channels_last: bool | None = None
    progress: bool = True
    plot: bool = True
    log: LogFn | None = None
    on_epoch_end: Callable[[EpochRecord], None] | None = None
    on_step: StepFn | None = None

    def recipe_overrides(self) -> dict[str, Any]:
        """The recipe fields this call sets: the keyword arguments merged with ``overrides``.

        A field given both ways with two different values is a :class:`UsageError`.
        """
        given: dict[str, Any] = {k: getattr(self, k) for k in RECIPE_KEYWORDS}
        for key, value in dict(self.overrides or {}).items():
            if given.get(key) is not None and value is not None and value != given[key]:
                raise UsageError(f"{key} is given twice ({given[key]!r} and {value!r} in overrides); pass it once")
            if value is not None or key not in given:
                given[key] = value
        return given
