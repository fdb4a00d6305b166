"""A ResNet as a detection backbone: the outputs of its stages (``c2..c5``) instead of logits.

ImageNet ResNets: ``c2..c5`` = ``layer1..layer4`` (strides 4, 8, 16, 32), the inputs of a
Faster R-CNN / FPN neck (He et al. 2015, §7). CIFAR ResNets have three stages: ``c2..c4`` =
``layer1..layer3`` (strides 1, 2, 4). The classifier head (pool + fc) is dropped.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeres.errors import UsageError
from edgeres.task import FEATURE_NAMES, FEATURES, FeatureOutput, Task

STAGES = ("layer1", "layer2", "layer3", "layer4")


def backbone_stages(model: nn.Module, label: str = "the model") -> list[str]:
    """The stage attributes (``layer1``...) of an edgeres ResNet; UsageError for anything else."""
    from edgeres.models.cifar import CifarResNet
    from edgeres.models.resnet import ResNet

    if not isinstance(model, (ResNet, CifarResNet)):
        raise UsageError(f"{label} ({type(model).__name__}) is not an edgeres ResNet; --task features needs a zoo "
                         "ResNet (or pass an ONNX file whose outputs are already the features)")
    return [s for s in STAGES if isinstance(getattr(model, s, None), nn.Module)]


def feature_names(model: nn.Module, label: str = "the model") -> list[str]:
    """``c2..c5`` (ImageNet ResNets) or ``c2..c4`` (CIFAR ResNets): the names of the model's stages."""
    return list(FEATURE_NAMES[: len(backbone_stages(model, label))])


class StageFeatures(nn.Module):
    """Runs the stem and the stages of ``model`` up to the last requested one; returns their outputs."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        stages = backbone_stages(model)
        self.model = model
        self.names = list(names)
        index = {n: i for i, n in enumerate(FEATURE_NAMES[: len(stages)])}
        self.wanted = [index[n] for n in self.names]
        self.stages = stages[: max(self.wanted) + 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m = self.model
        x = m.relu(m.bn1(m.conv1(x)))
        if isinstance(getattr(m, "maxpool", None), nn.Module):
            x = m.maxpool(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = getattr(m, stage)(x)
            if i in self.wanted:
                outs.append(x)
        return tuple(outs)


def feature_extractor(model: nn.Module, names: Sequence[str], input_size: tuple[int, int]) -> tuple[nn.Module, Task]:
    """(module returning the ``names`` stage outputs, the Task recording them with measured strides)."""
    wrapper = StageFeatures(model, names).eval()
    h, w = input_size
    with torch.no_grad():
        outs = wrapper(torch.zeros(1, 3, h, w))
    stages = backbone_stages(model)
    recs = []
    for name, idx, y in zip(names, wrapper.wanted, outs):
        stride = h // int(y.shape[2]) if int(y.shape[2]) and h % int(y.shape[2]) == 0 else None
        recs.append(FeatureOutput(name, stages[idx], stride, int(y.shape[1])))
    return wrapper, Task(FEATURES, tuple(recs))


__all__ = ["StageFeatures", "backbone_stages", "feature_extractor", "feature_names"]
