"""The edgeres checkpoint file: write it, read any PyTorch file safely, recognise an edgeres record.

A checkpoint is a ``torch.save``-d dict (loadable with ``weights_only=True``)::

    {"format": "edgeres.checkpoint/1", "model": "resnet20", "model_kwargs": {...},
     "num_classes": 10, "preprocessing": {...}, "state_dict": {...},
     "edgeres_version": "0.1.0", "meta": {...}}

``meta`` is free-form (training config, epoch, metrics). Training state for resume
(optimizer, scheduler, RNG) lives under ``"train_state"``. This module knows nothing of
the model zoo: rebuilding a model from a checkpoint is :func:`edgeres.checkpoint.load_checkpoint`.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from edgeres import __version__
from edgeres.errors import InputError
from edgeres.fileio import atomic_path
from edgeres.preprocessing import Preprocessing

FORMAT = "edgeres.checkpoint/1"


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    name: str,
    preprocessing: Preprocessing,
    *,
    model_kwargs: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write an edgeres checkpoint atomically."""
    import torch

    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    record: dict[str, Any] = {
        "format": FORMAT,
        "model": name,
        "model_kwargs": dict(model_kwargs or {}),
        "num_classes": len(preprocessing.class_names) or None,
        "preprocessing": preprocessing.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "edgeres_version": __version__,
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        record["train_state"] = train_state
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with a one-line error for missing, corrupt or unsafe files."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if m:
            raise InputError(
                f"checkpoint {path} holds a pickled object ({m.group(1)}) that edgeres refuses to unpickle "
                "(weights_only=True); save only the state_dict and plain data"
            ) from e
        raise InputError(f"checkpoint {path} is corrupt or not a PyTorch file (unpickling failed)") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"checkpoint {path} is corrupt or not a PyTorch file ({first[:160]})") from e


def is_edgeres_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is an edgeres checkpoint record."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT
