"""Everything a run needs before its first step: data splits, and checked init/resume checkpoints."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from edgeres.errors import InputError, UsageError
from edgeres.preprocessing import Preprocessing


@dataclass
class Splits:
    """The training and validation sets of a run."""

    train: Any  # map-style dataset, augmented
    val: Any  # map-style dataset, not augmented
    class_names: tuple[str, ...]
    fingerprint: str  # sha256 of the train (and val) images and labels
    val_source: str  # "val" or "held out <p>% of train"

    def set_epoch(self, epoch: int) -> None:
        """Select the training augmentation draw of 0-based ``epoch``."""
        if hasattr(self.train, "set_epoch"):
            self.train.set_epoch(epoch)


def has_val_split(data: str | os.PathLike) -> bool:
    """Whether ``data`` has a validation split of its own (not the training images again).

    The built-in set and CIFAR directories do; a directory has one when its ``val``
    (``validation``, ``test``) split resolves to something other than its ``train``
    split; a single ``.npz`` file or a directory without split subdirectories does not.
    """
    from edgeres.data.cifar import find_cifar
    from edgeres.data.sources import parse_builtin, resolve_split

    text = os.fspath(data)
    if parse_builtin(text, "val") is not None:
        return True
    path = Path(text).expanduser()
    if not path.is_dir():
        return False
    if find_cifar(path) is not None:
        return True
    try:
        return resolve_split(path, "val") != resolve_split(path, "train")
    except InputError:  # split directories, but no val one
        return False


def open_splits(data: str | os.PathLike, pre: Preprocessing, *, augment: bool, val_fraction: float, seed: int,
                limit: int | None = None) -> Splits:
    """Open ``data``'s train split (augmented) and its val split, or hold out a class-balanced
    ``val_fraction`` of train when the data has no val split. ``limit`` caps each split."""
    from edgeres.data import open_dataset, split_train_val

    train = open_dataset(data, "train", pre, augment=augment, limit=limit, seed=seed)
    names = tuple(str(n) for n in train.class_names)
    fingerprint = train.with_augment(False).fingerprint()  # the images, not the augmentation seed
    if has_val_split(data):
        val = open_dataset(data, "val", pre, class_names=names, augment=False, limit=limit, seed=seed)
        fingerprint = hashlib.sha256(f"{fingerprint}:{val.fingerprint()}".encode()).hexdigest()
        source = "val"
    else:
        train, val = split_train_val(train, val_fraction, seed)
        source = f"held out {val_fraction:.0%} of train"
    return Splits(train, val, names, fingerprint, source)


def _short(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return f"[{shown}{more}]"


def check_class_names(saved: Sequence[str], data_names: Sequence[str], what: str, hint: str) -> None:
    """InputError naming both (truncated) lists when ``saved`` and ``data_names`` differ."""
    saved, data_names = [str(n) for n in saved], [str(n) for n in data_names]
    if saved == data_names:
        return
    lacks = [n for n in saved if n not in set(data_names)]
    extra = [n for n in data_names if n not in set(saved)]
    if not lacks and not extra:
        diff = "same classes in another order"
    else:
        diff = "; ".join(part for part in (
            f"the data lacks {_short(lacks, 4)[1:-1]}" if lacks else "",
            f"the checkpoint lacks {_short(extra, 4)[1:-1]}" if extra else "",
        ) if part)
    raise InputError(
        f"{what} was trained on classes {_short(saved)} but the data has {_short(data_names)} ({diff}); {hint}"
    )


@dataclass
class ResumeState:
    """What a ``last.pt`` holds to continue a run."""

    path: Path
    model_kwargs: dict[str, Any]
    preprocessing: Preprocessing
    state_dict: dict[str, Any]
    train_state: dict[str, Any]
    meta: dict[str, Any]


def read_resume(path: str | os.PathLike, model_name: str) -> ResumeState:
    """Read and check a resumable checkpoint written by :func:`edgeres.training.train`."""
    from edgeres.checkpoint import is_edgeres_checkpoint, read_checkpoint_file

    path = Path(path)
    obj = read_checkpoint_file(path)
    if not is_edgeres_checkpoint(obj):
        raise InputError(f"{path} is not an edgeres checkpoint; resume from the last.pt an edgeres training run wrote")
    ts = obj.get("train_state")
    if not isinstance(ts, dict) or "optimizer" not in ts or "config" not in ts:
        raise InputError(
            f"{path} holds no training state (a best-accuracy checkpoint?); resume from the run's *last.pt, "
            f"or start a new run from it with --init {path}"
        )
    if obj.get("model") != model_name:
        raise UsageError(f"{path} is a run of {obj.get('model')!r}, not {model_name!r}; pass {obj.get('model')}")
    try:
        pre = Preprocessing.from_dict(obj["preprocessing"])
    except KeyError as e:
        raise InputError(f"checkpoint {path} is missing field {e}; it was not written by edgeres") from e
    return ResumeState(path, dict(obj.get("model_kwargs") or {}), pre, obj["state_dict"], ts, dict(obj.get("meta") or {}))


@dataclass
class InitWeights:
    """Starting weights from ``--init``: a flat state dict and what the file says about itself."""

    path: Path
    state_dict: dict[str, Any]
    model_kwargs: dict[str, Any] | None  # from an edgeres checkpoint; None for torchvision/timm files
    preprocessing: Preprocessing | None  # from an edgeres checkpoint
    class_names: tuple[str, ...]  # from an edgeres checkpoint; () when unknown


def read_init(path: str | os.PathLike, model_name: str) -> InitWeights:
    """Read ``--init`` weights: an edgeres checkpoint, or a torchvision/timm/DDP state dict."""
    from edgeres.checkpoint import read_checkpoint_file
    from edgeres.models.weights import unwrap_state_dict

    path = Path(path)
    state, record = unwrap_state_dict(read_checkpoint_file(path), str(path))
    if record is None:
        return InitWeights(path, state, None, None, ())
    if record.get("model") != model_name:
        raise InputError(
            f"{path} is an edgeres checkpoint of {record.get('model')!r}, not {model_name!r}; "
            f"train {record.get('model')} or pick weights of {model_name}"
        )
    try:
        pre = Preprocessing.from_dict(record["preprocessing"])
    except KeyError as e:
        raise InputError(f"checkpoint {path} is missing field {e}; it was not written by edgeres") from e
    return InitWeights(path, state, dict(record.get("model_kwargs") or {}), pre, pre.class_names)


def resolve_device(device: str) -> Any:
    """``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'`` or ``'auto'`` (CUDA when present) as a torch.device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for but this PyTorch build sees no CUDA GPU; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) visible")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device type {dev.type!r} is not supported; use cpu, cuda or mps")
    return dev
