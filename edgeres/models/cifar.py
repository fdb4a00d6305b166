"""CIFAR ResNets of He et al. 2015, sec. 4.2: 6n+2 layers on 32x32 inputs.

A 3x3 convolution to 16 channels, three stages of ``n`` basic blocks with 16, 32 and
64 channels (stride 2 at the start of stages 2 and 3), global average pool, fc.
n = 3, 5, 7, 9, 18, 200 gives resnet20/32/44/56/110/1202 (and plain20/... without
shortcuts). Shortcut option A (parameter-free, the paper's choice here) is the
default; B and C are selectable. Keys follow torchvision's naming (``conv1``, ``bn1``,
``layer1..3``, ``layerX.Y.conv1/bn1/conv2/bn2``, ``downsample.0/1``, ``fc``).
"""

from __future__ import annotations

import torch
from torch import nn

from edgeres.models.registry import check_bool, check_shortcut, register_model
from edgeres.models.resnet import BasicBlock, conv3x3, init_weights, make_stage

# depth -> n (blocks per stage); depth = 6n + 2
CIFAR_DEPTHS: dict[int, int] = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}

_APPROX_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}


class CifarResNet(nn.Module):
    """6n+2-layer CIFAR ResNet (``shortcut=None``: the plain counterpart)."""

    def __init__(
        self, n: int, num_classes: int = 10, shortcut: str | None = "A", zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_stage(BasicBlock, 16, 16, n, 1, shortcut)
        self.layer2 = make_stage(BasicBlock, 16, 32, n, 2, shortcut)
        self.layer3 = make_stage(BasicBlock, 32, 64, n, 2, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(depth: int, n: int) -> None:
    common = dict(family="cifar", depth=depth, block="basic", default_num_classes=10, default_input_size=32)

    @register_model(
        f"resnet{depth}",
        residual=True,
        shortcut_default="A",
        description=f"CIFAR ResNet-{depth} (6n+2, n={n}; ~{_APPROX_PARAMS[depth]} params with option A)",
        **common,
    )
    def residual_factory(num_classes: int, *, shortcut: str = "A", zero_init_residual: bool = False) -> nn.Module:
        zero_init = check_bool("zero_init_residual", zero_init_residual)
        return CifarResNet(n, num_classes, check_shortcut(shortcut), zero_init)

    @register_model(
        f"plain{depth}",
        residual=False,
        shortcut_default=None,
        description=f"plain {depth}-layer CIFAR net (no shortcuts), the paper's baseline",
        **common,
    )
    def plain_factory(num_classes: int) -> nn.Module:
        return CifarResNet(n, num_classes, shortcut=None)


for _depth, _n in CIFAR_DEPTHS.items():
    _register(_depth, _n)
