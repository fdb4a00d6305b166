"""Loading weights into zoo models: torchvision/timm ``.pth`` files, DDP state dicts, edgeres checkpoints.

* :func:`load_state_dict_file` reads a file (``weights_only=True``) and unwraps it to a
  flat ``{key: Tensor}`` dict.
* :func:`apply_state_dict` checks keys and shapes first and fails with one line that
  says what does not fit and how to fix it; ``replace_head=True`` keeps a fresh
  classifier when the file's has another class count (fine-tuning).
* :func:`load_pretrained` does both for a zoo name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from edgeres.checkpoint_file import is_edgeres_checkpoint, read_checkpoint_file
from edgeres.errors import InputError

HEAD_PREFIX = "fc."
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_STRIP_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_IGNORED_MISSING = ".num_batches_tracked"  # absent from old torchvision files; BN fills it in


@dataclass(frozen=True)
class LoadReport:
    """What :func:`apply_state_dict` did."""

    source: str
    loaded: int  # tensors copied into the model
    replaced: tuple[str, ...] = ()  # head keys kept at fresh init (file's head had another shape or none)
    missing: tuple[str, ...] = ()  # model keys the file lacked (only possible with strict=False)
    unexpected: tuple[str, ...] = ()  # file keys the model lacks (ignored with strict=False)
    file_num_classes: int | None = None  # rows of the file's fc.weight, if it has one

    @property
    def head_replaced(self) -> bool:
        return bool(self.replaced)


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    for prefix in _STRIP_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def unwrap_state_dict(obj: Any, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Find the state dict in a loaded object; returns it and the edgeres checkpoint record (or None).

    Accepts a raw state dict, ``{"state_dict"|"model_state_dict"|"model": ...}`` and
    edgeres checkpoints; strips a ``module.`` (DDP) or ``_orig_mod.`` prefix.
    """
    record = None
    state = obj
    if is_edgeres_checkpoint(obj):
        record, state = obj, obj.get("state_dict")
    elif isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise InputError(
            f"{source} holds no state dict (found {type(state).__name__}); save model.state_dict() "
            "or a dict with a 'state_dict' entry"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(
            f"{source} is not a state dict: {len(bad)} {'entry is' if len(bad) == 1 else 'entries are'} not "
            f"named tensors (e.g. {', '.join(bad[:3])}); save model.state_dict() instead"
        )
    return _strip_prefix(dict(state)), record


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file safely (``weights_only=True``) and return its flat state dict."""
    state, _ = unwrap_state_dict(read_checkpoint_file(path), str(path))
    return state


# -- guessing the architecture behind a state dict (for error hints) ----------------


@dataclass(frozen=True)
class _Arch:
    """The zoo architecture a state dict's keys and shapes point to."""

    depth: int
    shortcut: str  # 'A' (no projection: option A or a plain net), 'B' or 'C'
    cifar: bool

    def describe(self) -> str:
        name = f"resnet{self.depth}"
        if self.shortcut == "A":
            return f"{name}{'' if self.cifar else ' (shortcut A)'} or plain{self.depth}"
        default = "A" if self.cifar else "B"
        return name if self.shortcut == default else f"{name} (shortcut {self.shortcut})"


def _arch(state: Mapping[str, Any]) -> _Arch | None:
    w = state.get("conv1.weight")
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        return None
    blocks: dict[int, set[int]] = {}
    for key in state:
        parts = key.split(".")
        if len(parts) > 2 and parts[0].startswith("layer") and parts[0][5:].isdigit() and parts[1].isdigit():
            blocks.setdefault(int(parts[0][5:]), set()).add(int(parts[1]))
    if not blocks:
        return None
    total = sum(len(b) for b in blocks.values())
    bottleneck = any(k.endswith(".conv3.weight") for k in state)
    projections = sum(1 for k in state if k.endswith(".downsample.0.weight"))
    shortcut = "C" if projections == total else "A" if projections == 0 else "B"
    return _Arch((3 if bottleneck else 2) * total + 2, shortcut, cifar=w.shape[-1] == 3 and len(blocks) == 3)


def describe_state_dict(state: Mapping[str, Any]) -> str | None:
    """Best guess of the zoo model a state dict belongs to, e.g. ``"resnet50"``,
    ``"resnet20 (shortcut C)"`` or ``"resnet20 or plain20"``; None if it does not look
    like a zoo ResNet."""
    arch = _arch(state)
    return arch.describe() if arch else None


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def _fix_hint(model: nn.Module, state: Mapping[str, Any], mismatched: list[str]) -> str:
    file_arch, model_arch = _arch(state), _arch(model.state_dict())
    if file_arch and model_arch and file_arch != model_arch:
        if (file_arch.depth, file_arch.cifar) == (model_arch.depth, model_arch.cifar):
            return (
                f"the file has option-{file_arch.shortcut} shortcuts, the model option-{model_arch.shortcut}: "
                f"use resnet{file_arch.depth} with shortcut='{file_arch.shortcut}'"
            )
        return f"is this a {file_arch.describe()} checkpoint? pass the matching zoo name (`edgeres models` lists them)"
    if mismatched and all(k.startswith(HEAD_PREFIX) for k in mismatched):
        rows = state[HEAD_PREFIX + "weight"].shape[0] if HEAD_PREFIX + "weight" in state else "?"
        return f"the file's classifier has {rows} classes: pass num_classes={rows}, or replace the head to fine-tune"
    return "check that the file was saved from the same architecture and options (`edgeres models` lists them)"


def apply_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    strict: bool = True,
    replace_head: bool = False,
) -> LoadReport:
    """Load ``state`` into ``model`` after checking keys and shapes.

    Raises a one-line InputError naming the counts and up to 3 examples of missing,
    unexpected and shape-mismatched keys, with a hint (e.g. the zoo model the file
    seems to hold). ``strict=False`` tolerates missing and unexpected keys, never
    shape mismatches. ``replace_head=True`` skips the file's ``fc.*`` tensors when their
    shape differs or they are absent (the model keeps its fresh classifier) and lists
    the replaced keys in ``LoadReport.replaced``.
    """
    state = _strip_prefix(dict(state))
    target = model.state_dict()
    missing = [k for k in target if k not in state and not k.endswith(_IGNORED_MISSING)]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    replaced: list[str] = []
    if replace_head:
        head = [k for k in target if k.startswith(HEAD_PREFIX)]
        if any(k in mismatched or k in missing for k in head):  # replace the whole head, not half of it
            replaced = head
            mismatched = [k for k in mismatched if k not in replaced]
            missing = [k for k in missing if k not in replaced]
    problems = []
    if strict and missing:
        problems.append(f"{len(missing)} missing keys (e.g. {_examples(missing)})")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {_examples(unexpected)})")
    if mismatched:
        shapes = [f"{k} {list(state[k].shape)} vs {list(target[k].shape)}" for k in mismatched]
        problems.append(f"{len(mismatched)} keys with another shape (file vs model: {_examples(shapes)})")
    name = getattr(model, "zoo_name", type(model).__name__)
    if problems:
        raise InputError(
            f"weights in {source} do not fit {name}: {'; '.join(problems)}; {_fix_hint(model, state, mismatched)}"
        )
    to_load = {k: v for k, v in state.items() if k in target and k not in replaced}
    model.load_state_dict(to_load, strict=False)
    head_w = state.get(HEAD_PREFIX + "weight")
    return LoadReport(
        source=source,
        loaded=len(to_load),
        replaced=tuple(replaced),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        file_num_classes=int(head_w.shape[0]) if isinstance(head_w, torch.Tensor) and head_w.dim() == 2 else None,
    )


def load_pretrained(
    name: str, weights_path: str | os.PathLike, num_classes: int | None = None, **model_kwargs: Any
) -> nn.Module:
    """Build zoo model ``name`` and load a weights file into it (returned in eval mode).

    The file may be a torchvision/timm state dict, a DDP one, or an edgeres checkpoint
    (whose model options are used). ``num_classes`` defaults to the rows of the file's
    ``fc.weight``; a different explicit count keeps the backbone and gives the model a
    fresh classifier of that size (fine-tuning).
    """
    from edgeres.models.registry import create_model, get_model_info

    get_model_info(name)  # unknown name -> ModelNotFound before reading the file
    source = str(weights_path)
    state, record = unwrap_state_dict(read_checkpoint_file(weights_path), source)
    if record is not None:
        if record.get("model") != name:
            raise InputError(
                f"{source} is an edgeres checkpoint of {record.get('model')!r}, not {name!r}; "
                f"pass {record.get('model')} or load it with load_checkpoint"
            )
        model_kwargs = {**dict(record.get("model_kwargs") or {}), **model_kwargs}
    head = state.get(HEAD_PREFIX + "weight")
    file_classes = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.dim() == 2 else None
    if num_classes is None:
        num_classes = file_classes
    model = create_model(name, num_classes=num_classes, **model_kwargs)
    apply_state_dict(model, state, source=source, replace_head=file_classes is not None and num_classes != file_classes)
    return model.eval()
