"""Fine-tuning helpers: freeze everything but the classifier head."""

from __future__ import annotations

from typing import Any

from edgeres.errors import UsageError


def freeze_backbone(model: Any, head_prefix: str = "fc.") -> tuple[int, int]:
    """Stop gradients to every parameter outside the head; returns (trainable, total) parameter counts."""
    trainable = total = 0
    for name, param in model.named_parameters():
        keep = name.startswith(head_prefix)
        param.requires_grad_(keep)
        total += param.numel()
        trainable += param.numel() if keep else 0
    if trainable == 0:
        raise UsageError(f"this model has no '{head_prefix.rstrip('.')}' classifier head to train; drop --freeze-backbone")
    return trainable, total


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
