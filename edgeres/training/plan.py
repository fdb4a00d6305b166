"""A run's configuration before any data is read: the recipe with its overrides, and where it starts.

A new run takes its recipe (default ``quick``) with the caller's overrides; ``--init``
adds starting weights (and, from an edgeres checkpoint, model options and preprocessing).
A resumed run continues with the configuration saved in its ``last.pt``. Passing a
recipe with ``--resume`` is how users re-run the command that started the run: an
identical recipe is accepted, a different one is refused naming the fields that differ.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from edgeres.errors import UsageError
from edgeres.preprocessing import Preprocessing
from edgeres.recipes import TrainConfig, resolve_config
from edgeres.training.options import TrainOptions
from edgeres.training.setup import InitWeights, ResumeState, read_init, read_resume

DEFAULT_RECIPE = "quick"


@dataclass(frozen=True)
class Plan:
    """The run's configuration before any data is read."""

    cfg: TrainConfig
    recipe: str
    model_kwargs: dict[str, Any]
    preprocessing: Preprocessing  # input size / resize / mean / std; class names come from the data
    saved: ResumeState | None = None
    start: InitWeights | None = None


def make_plan(model_name: str, opts: TrainOptions) -> Plan:
    """The :class:`Plan` of ``train(model_name, ..., **opts)``; usage errors before any data is read."""
    from edgeres.models import get_model_info

    info = get_model_info(model_name)
    given = opts.recipe_overrides()
    if opts.init is not None and opts.resume is not None:
        raise UsageError("pass either --init (new run from weights) or --resume (continue a run), not both")
    if opts.resume is not None:
        return _resume_plan(model_name, opts.resume, opts.recipe, given, opts.model_kwargs)
    recipe = opts.recipe or DEFAULT_RECIPE
    cfg = resolve_config(recipe, **given)
    if opts.init is None:
        return Plan(cfg, recipe, dict(opts.model_kwargs or {}), info.default_preprocessing())
    start = read_init(opts.init, model_name)
    model_kwargs = dict(opts.model_kwargs or {})
    if opts.model_kwargs is None and start.model_kwargs is not None:
        model_kwargs = start.model_kwargs
    pre = start.preprocessing if start.preprocessing is not None else info.default_preprocessing()
    return Plan(cfg, recipe, model_kwargs, pre, start=start)


def _resume_plan(model_name: str, resume: str | os.PathLike, recipe: str | None, given: dict[str, Any],
                 model_kwargs: Mapping[str, Any] | None) -> Plan:
    saved = read_resume(resume, model_name)
    if model_kwargs is not None and dict(model_kwargs) != saved.model_kwargs:
        raise UsageError(f"{resume} was trained with model options {saved.model_kwargs}, not {dict(model_kwargs)}; "
                         "drop them")
    saved_cfg = TrainConfig.from_dict(saved.train_state["config"], source=str(resume))
    saved_recipe = str(saved.train_state.get("recipe", "?"))
    if recipe is not None:
        check_same_recipe(recipe, given, saved_cfg, saved_recipe, resume)
    cfg = resolve_config(saved_cfg, **given)
    return Plan(cfg, saved_recipe, saved.model_kwargs, saved.preprocessing, saved=saved)


def check_same_recipe(recipe: str, given: Mapping[str, Any], saved: TrainConfig, saved_recipe: str,
                      resume: str | os.PathLike) -> None:
    """Refuse ``--recipe`` on resume when it would set a field otherwise than the run did.

    The recipe with this call's overrides applied is compared with the configuration saved
    in the checkpoint, field by field; fields this call sets explicitly (e.g. a larger
    ``--epochs`` to train on) are overrides of the saved run and are not compared.
    """
    wanted = resolve_config(recipe, **given)
    explicit = {k for k, v in given.items() if v is not None}
    differ = [f.name for f in fields(TrainConfig)
              if f.name not in explicit and getattr(wanted, f.name) != getattr(saved, f.name)]
    if not differ:
        return
    shown = ", ".join(f"{n} = {_value(getattr(wanted, n))} here, {_value(getattr(saved, n))} in the run"
                      for n in differ)
    raise UsageError(
        f"--recipe {recipe} differs from the configuration {resume} was trained with (recipe {saved_recipe}): "
        f"{shown}; pass the options the run started with, drop --recipe to continue with the saved "
        f"configuration, or start a new run (--init {resume})"
    )


def _value(v: Any) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)
