"""The model zoo registry: ``@register_model``, ``create_model``, ``list_models``, ``get_model_info``.

Factories register themselves when :mod:`edgeres.models` is imported. A factory is a
callable ``factory(num_classes, **options) -> torch.nn.Module`` whose keyword-only
parameters are the options :func:`create_model` accepts for that model.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from edgeres.errors import ModelNotFound, UsageError
from edgeres.preprocessing import Preprocessing, cifar_preprocessing, imagenet_preprocessing

if TYPE_CHECKING:  # pragma: no cover
    import torch

FAMILIES = ("imagenet", "cifar")
BLOCKS = ("basic", "bottleneck")
SHORTCUTS = ("A", "B", "C")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a model before it is built."""

    name: str
    family: str  # 'imagenet' | 'cifar'
    depth: int
    block: str  # 'basic' | 'bottleneck'
    residual: bool
    shortcut_default: str | None  # 'A' | 'B' | 'C'; None for plain nets (no shortcuts)
    default_num_classes: int
    default_input_size: int
    description: str

    def default_preprocessing(self, class_names: Sequence[str] = ()) -> Preprocessing:
        """The evaluation preprocessing this model family expects (ImageNet or CIFAR style)."""
        if self.family == "cifar":
            return cifar_preprocessing(self.default_input_size, class_names)
        return imagenet_preprocessing(self.default_input_size, class_names)


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    factory: Callable[..., Any]
    options: tuple[str, ...]


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    *,
    family: str,
    depth: int,
    block: str,
    residual: bool,
    shortcut_default: str | None,
    default_num_classes: int,
    default_input_size: int,
    description: str,
) -> Callable[[F], F]:
    """Decorator registering ``factory(num_classes, **options)`` under ``name``.

    Raises ValueError (a programming error, not a user error) on a duplicate name or
    an inconsistent description.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    if residual and shortcut_default not in SHORTCUTS:
        raise ValueError(f"a residual model needs shortcut_default in {SHORTCUTS}, got {shortcut_default!r}")
    if not residual and shortcut_default is not None:
        raise ValueError("a plain model has no shortcut; pass shortcut_default=None")
    info = ModelInfo(
        name=name,
        family=family,
        depth=int(depth),
        block=block,
        residual=bool(residual),
        shortcut_default=shortcut_default,
        default_num_classes=int(default_num_classes),
        default_input_size=int(default_input_size),
        description=description,
    )

    def decorate(factory: F) -> F:
        if name in _REGISTRY:  # registered between decorator creation and application
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(factory).parameters.values()
        options = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        _REGISTRY[name] = _Entry(info, factory, options)
        return factory

    return decorate


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ModelNotFound(f"unknown model {name!r}; {hint}run `edgeres models` to list the zoo")


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model; ModelNotFound (with close matches) otherwise."""
    return _entry(name).info


def list_models(pattern: str | None = None) -> list[ModelInfo]:
    """Registered models, optionally filtered by an fnmatch ``pattern`` (e.g. ``'resnet*'``).

    Sorted by family, residual before plain, then depth.
    """
    infos = [e.info for e in _REGISTRY.values()]
    if pattern:
        infos = [i for i in infos if fnmatch.fnmatchcase(i.name, pattern)]
    return sorted(infos, key=lambda i: (i.family, not i.residual, i.depth, i.name))


def create_model(name: str, num_classes: int | None = None, **kwargs: Any) -> "torch.nn.Module":
    """Build a zoo model with fresh (untrained) weights.

    ``num_classes`` defaults to the model's ``default_num_classes``. Unknown options or
    bad values raise :class:`UsageError`; an unknown name raises :class:`ModelNotFound`.
    The module gets a ``zoo_name`` attribute so later errors can name it.
    """
    entry = _entry(name)
    if num_classes is None:
        num_classes = entry.info.default_num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    unknown = sorted(set(kwargs) - set(entry.options))
    if unknown:
        accepted = ", ".join(entry.options) if entry.options else "no options besides num_classes"
        raise UsageError(f"model {name} does not take option(s) {', '.join(unknown)}; it accepts: {accepted}")
    model = entry.factory(num_classes, **kwargs)
    model.zoo_name = name
    return model


# -- option validation shared by the factories -------------------------------------


def check_shortcut(value: Any) -> str:
    """Validate a shortcut option ('A', 'B' or 'C', case-insensitive) and return it upper-case."""
    if isinstance(value, str) and value.upper() in SHORTCUTS:
        return value.upper()
    raise UsageError(
        f"shortcut must be 'A' (zero-padded identity), 'B' (projection when shape changes) "
        f"or 'C' (projection everywhere), got {value!r}"
    )


def check_bool(option: str, value: Any) -> bool:
    """Validate a boolean option."""
    if isinstance(value, bool):
        return value
    raise UsageError(f"{option} must be true or false, got {value!r}")
