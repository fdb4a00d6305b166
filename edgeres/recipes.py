"""Training recipes as data: a frozen :class:`TrainConfig` per named recipe.

A recipe fixes every hyper-parameter of a run; the CLI and :func:`edgeres.training.train`
override single fields (``None`` keeps the recipe's value) through
:func:`resolve_config`. A recipe can also be a TOML file whose top-level keys (or
``[train]`` table) are :class:`TrainConfig` fields, optionally with ``base = "quick"``
naming the built-in recipe it starts from.

The learning rate is a pure function of the iteration (:func:`lr_at`), so schedules
are testable exactly and a resumed run needs no scheduler object: the optimizer step
count is the whole schedule state.

Units: ``iterations`` counts optimizer steps. ``milestones``, ``step_size`` and
``warmup`` are counted in ``unit`` (``'epoch'`` or ``'iteration'``); an epoch-unit
milestone ``m`` takes effect at iteration ``m * iters_per_epoch``.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from edgeres.errors import InputError, UsageError

SCHEDULES = ("constant", "step", "multistep", "cosine")
UNITS = ("epoch", "iteration")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a training run (SGD with momentum; one LR schedule).

    ``iterations`` (optimizer steps), when set, takes precedence over ``epochs``: the
    run stops after that many steps, mid-epoch if need be. ``schedule``:
    ``'constant'``; ``'step'`` (multiply by ``gamma`` every ``step_size`` units);
    ``'multistep'`` (multiply by ``gamma`` at each of ``milestones``); ``'cosine'``
    (half-cosine from ``lr`` to ``min_lr`` over the run). ``warmup`` units of linear
    warmup (step ``i`` of ``W`` warmup steps uses ``lr * (i + 1) / W``) precede any
    schedule; for cosine the decay then spans the rest of the run. ``augment`` turns on the data set's training
    augmentation (pad-4 random crop + flip for 32x32 CIFAR-style data, random
    resized crop + flip for ImageNet-style data). ``val_fraction`` is held out of the
    training split (class-balanced) only when the data has no val split of its own.
    ``num_workers`` (DataLoader processes) ``None`` means 0 on CPU (the loader would
    compete with the model for the cores) and up to 8 on a GPU. ``freeze_backbone``
    trains only the classifier head (``fc``); the backbone's weights and BatchNorm
    statistics stay as loaded. ``batch_size`` is the global batch of a step: a
    distributed run of W processes gives each ``batch_size / W`` images.
    """

    epochs: int = 10
    iterations: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    unit: str = "epoch"
    milestones: tuple[int, ...] = ()
    step_size: int = 0
    gamma: float = 0.1
    warmup: int = 0
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    val_fraction: float = 0.1
    num_workers: int | None = None
    seed: int = 0
    freeze_backbone: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        _check_int(self, "epochs", 1)
        _check_int(self, "batch_size", 1)
        _check_int(self, "step_size", 0)
        _check_int(self, "warmup", 0)
        if self.num_workers is not None:
            _check_int(self, "num_workers", 0)
        _check_int(self, "seed", 0)
        if self.iterations is not None:
            _check_int(self, "iterations", 1)
        for name in ("nesterov", "augment", "freeze_backbone"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "min_lr", "label_smoothing", "val_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.lr <= 0:
            raise UsageError(f"lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0 or self.min_lr < 0:
            raise UsageError("momentum, weight_decay and min_lr must be >= 0")
        if self.nesterov and self.momentum == 0:
            raise UsageError("nesterov needs momentum > 0; set momentum or drop nesterov")
        if not 0 < self.gamma <= 1:
            raise UsageError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.unit not in UNITS:
            raise UsageError(f"unit must be 'epoch' or 'iteration', got {self.unit!r}")
        ms = self.milestones
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in ms) or list(ms) != sorted(set(ms)):
            raise UsageError(f"milestones must be increasing positive integers, got {list(ms)}")
        if self.schedule == "multistep" and not ms:
            raise UsageError("the multistep schedule needs milestones, e.g. milestones=[30, 60]")
        if self.schedule == "step" and self.step_size < 1:
            raise UsageError("the step schedule needs step_size >= 1 (in units of `unit`)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-able dict (milestones as a list)."""
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "config") -> "TrainConfig":
        """Build from a dict; an unknown key raises UsageError naming the valid ones."""
        _check_fields(d, source)
        return cls(**dict(d))

    def total_iterations(self, iters_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        if self.iterations is not None:
            return self.iterations
        return self.epochs * max(1, iters_per_epoch)

    def total_epochs(self, iters_per_epoch: int) -> int:
        """Epochs (the last possibly partial) the run takes."""
        return math.ceil(self.total_iterations(iters_per_epoch) / max(1, iters_per_epoch))


def _check_int(cfg: TrainConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(TrainConfig))


def _check_fields(d: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(d) - set(_field_names()))
    if unknown:
        raise UsageError(
            f"{source}: unknown training option(s) {', '.join(unknown)}; valid: {', '.join(_field_names())}"
        )


@dataclass(frozen=True)
class Recipe:
    """A named :class:`TrainConfig` with a one-line summary."""

    name: str
    summary: str
    config: TrainConfig


_RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe; duplicate names are a programming error (ValueError)."""
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


register_recipe(Recipe(
    "quick",
    "a few minutes on 2 CPU cores: SGD 0.1, momentum 0.9, wd 5e-4, cosine, batch 64, 6 epochs",
    TrainConfig(epochs=6, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                augment=True),
))
register_recipe(Recipe(
    "cifar-paper",
    "He et al. 2015 CIFAR-10: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr/10 at 32k and 48k "
    "iterations, stop at 64k; pad-4 crop + flip",
    TrainConfig(epochs=1, iterations=64_000, batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                schedule="multistep", unit="iteration", milestones=(32_000, 48_000), gamma=0.1, augment=True),
))
register_recipe(Recipe(
    "imagenet-paper",
    "He et al. 2015 ImageNet: SGD 0.1, momentum 0.9, wd 1e-4, batch 256, lr/10 at epochs 30 and 60, "
    "90 epochs; random resized crop + flip",
    TrainConfig(epochs=90, batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="multistep",
                unit="epoch", milestones=(30, 60), gamma=0.1, augment=True),
))
register_recipe(Recipe(
    "finetune",
    "short fine-tune from --init weights: SGD 0.01, momentum 0.9, wd 1e-4, cosine, 10 epochs",
    TrainConfig(epochs=10, batch_size=64, lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="cosine",
                augment=True),
))


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    return list(_RECIPES)


def get_recipe(name: str) -> Recipe:
    """A built-in recipe by name, or one loaded from a ``.toml`` file path."""
    if name in _RECIPES:
        return _RECIPES[name]
    if str(name).endswith(".toml"):
        return load_recipe_file(name)
    raise UsageError(
        f"unknown recipe {name!r}; use one of {', '.join(_RECIPES)} or a path to a .toml recipe file"
    )


def load_recipe_file(path: str | os.PathLike) -> Recipe:
    """Read a TOML recipe: TrainConfig fields at top level or under ``[train]``; ``base`` names a recipe."""
    from edgeres.compat import tomllib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe file {path} does not exist; check the path")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"recipe file {path} is not valid TOML ({e}); fix the syntax") from e
    table = data.get("train", data)
    if not isinstance(table, dict):
        raise InputError(f"recipe file {path}: [train] must be a table of training options")
    table = dict(table)
    base_name = table.pop("base", None)
    summary = str(table.pop("summary", f"recipe file {path.name}"))
    base = TrainConfig()
    if base_name is not None:
        if str(base_name) not in _RECIPES:
            raise UsageError(f"recipe file {path}: unknown base {base_name!r}; use one of {', '.join(_RECIPES)}")
        base = _RECIPES[str(base_name)].config
    _check_fields(table, f"recipe file {path}")
    return Recipe(str(path), summary, replace(base, **table))


def resolve_config(recipe: str | Recipe | TrainConfig = "quick", **overrides: Any) -> TrainConfig:
    """The recipe's config with ``overrides`` applied; ``None`` keeps the recipe's value.

    An unknown override name raises :class:`UsageError`.
    """
    if isinstance(recipe, TrainConfig):
        base = recipe
    elif isinstance(recipe, Recipe):
        base = recipe.config
    else:
        base = get_recipe(recipe).config
    _check_fields(overrides, "resolve_config")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "iterations" not in given and "epochs" in given and base.iterations is not None:
        # Asking for a number of epochs on an iteration-counted recipe means "count epochs".
        given["iterations"] = None
    return replace(base, **given) if given else base


def lr_at(config: TrainConfig, iteration: int, iters_per_epoch: int) -> float:
    """Learning rate of optimizer step ``iteration`` (0-based) of a run with ``iters_per_epoch`` steps/epoch."""
    ipe = max(1, int(iters_per_epoch))
    scale = ipe if config.unit == "epoch" else 1
    total = config.total_iterations(ipe)
    warmup = config.warmup * scale
    if iteration < warmup:
        return config.lr * (iteration + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * config.gamma ** (iteration // (config.step_size * scale))
    if config.schedule == "multistep":
        passed = sum(1 for m in config.milestones if iteration >= m * scale)
        return config.lr * config.gamma**passed
    # cosine: from lr at the end of warmup to min_lr at the last step
    span = max(1, total - warmup)
    t = min(1.0, (iteration - warmup) / span)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * t))
