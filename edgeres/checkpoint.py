"""edgeres checkpoints as models: :func:`load_checkpoint` rebuilds the zoo model a checkpoint describes.

The file format (and :func:`save_checkpoint`, :func:`read_checkpoint_file`,
:func:`is_edgeres_checkpoint`, re-exported here) is :mod:`edgeres.checkpoint_file`, which
the weight loaders of :mod:`edgeres.models.weights` use without depending on this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from edgeres.checkpoint_file import FORMAT, is_edgeres_checkpoint, read_checkpoint_file, save_checkpoint
from edgeres.errors import InputError
from edgeres.preprocessing import Preprocessing

__all__ = ["FORMAT", "LoadedModel", "is_edgeres_checkpoint", "load_checkpoint", "read_checkpoint_file",
           "save_checkpoint"]


@dataclass
class LoadedModel:
    """A model ready for export: the module (eval mode), its zoo name and preprocessing."""

    model: Any  # torch.nn.Module
    name: str
    preprocessing: Preprocessing
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def load_checkpoint(path: str | os.PathLike) -> LoadedModel:
    """Rebuild the model from an edgeres checkpoint (in eval mode)."""
    from edgeres.models import create_model
    from edgeres.models.weights import apply_state_dict

    obj = read_checkpoint_file(path)
    if not is_edgeres_checkpoint(obj):
        raise InputError(
            f"{path} is not an edgeres checkpoint (no 'format': {FORMAT!r}); for a torchvision/timm "
            f"state dict pass a zoo name with --weights {path}"
        )
    try:
        pre = Preprocessing.from_dict(obj["preprocessing"])
        name = str(obj["model"])
        kwargs = dict(obj.get("model_kwargs") or {})
        num_classes = obj.get("num_classes") or pre.num_classes
        state = obj["state_dict"]
    except (KeyError, TypeError) as e:
        raise InputError(f"checkpoint {path} is missing field {e}; it was not written by edgeres") from e
    model = create_model(name, num_classes=num_classes, **kwargs)
    apply_state_dict(model, state, source=str(path))
    model.eval()
    return LoadedModel(model, name, pre, kwargs, dict(obj.get("meta") or {}), str(path))
