"""ImageNet ResNets (He et al. 2015) with torchvision-compatible state-dict keys.

ResNet-18/34 use basic blocks, ResNet-50/101/152 bottleneck blocks with the stride on
the 3x3 convolution (torchvision's "v1.5"). Keys match torchvision (``conv1``, ``bn1``,
``layer1..4``, ``layerX.Y.conv1/bn1/conv2/bn2[/conv3/bn3]``, ``downsample.0`` conv,
``downsample.1`` BN, ``fc``), so torchvision and timm ``.pth`` files load as they are.

Shortcut options (paper, sec. 4.1): ``'A'`` identity, zero-padding new channels and
subsampling by the stride, no parameters; ``'B'`` (default, torchvision's) a 1x1
projection only where the shape changes; ``'C'`` a projection on every block.
``plainNN`` models are the same nets with no shortcut at all.

The building blocks here are shared with :mod:`edgeres.models.cifar`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgeres.models.registry import check_bool, check_shortcut, register_model


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BN follows)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the extra channels (no parameters).

    Written as slicing plus a concat with ``zeros_like`` (ONNX Slice, Shape,
    ConstantOfShape, Concat), which keeps a dynamic batch axis. Not ``F.pad``: the
    TorchScript ONNX exporter computes Pad's pads with a subgraph it does not fold,
    and TVM's Relax importer rejects that ("Dynamic pads are not supported yet").
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot shrink channels ({in_ch} -> {out_ch})")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_ch - self.in_ch
        if not extra:
            return x
        zeros = torch.zeros_like(x)
        copies, rest = divmod(extra, self.in_ch)
        parts = [x] + [zeros] * copies + ([zeros[:, :rest]] if rest else [])
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"{self.in_ch}->{self.out_ch}, stride={self.stride}"


def make_shortcut(option: str | None, in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    """The shortcut module of a block, or None for an identity (or no) shortcut.

    ``option`` is 'A', 'B', 'C', or None for a plain block (no shortcut).
    """
    changes = stride != 1 or in_ch != out_ch
    if option is None or (option in ("A", "B") and not changes):
        return None
    if option == "A":
        return PadShortcut(in_ch, out_ch, stride)
    if option in ("B", "C"):
        return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    raise ValueError(f"unknown shortcut option {option!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; ``shortcut=None`` makes it a plain (non-residual) block."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, shortcut: str | None = "B") -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.residual = shortcut is not None
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, torchvision v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, shortcut: str | None = "B") -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.residual = shortcut is not None
        self.downsample = make_shortcut(shortcut, in_ch, out_ch, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


def make_stage(block: Block, in_ch: int, planes: int, blocks: int, stride: int, shortcut: str | None) -> nn.Sequential:
    """A stage of ``blocks`` blocks; only the first one changes stride/width."""
    layers = [block(in_ch, planes, stride, shortcut)]
    out_ch = planes * block.expansion
    layers += [block(out_ch, planes, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """torchvision's init: kaiming normal (fan_out) convs, BN weight 1 / bias 0.

    ``zero_init_residual`` zeroes the last BN of each residual block, so every block
    starts as an identity (Goyal et al. 2017).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)) and m.residual:
                nn.init.constant_(m.last_bn().weight, 0)


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7/2 stem + max pool, four stages, global average pool, fc.

    Any input size works (adaptive average pool); the paper's is 224x224.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        shortcut: str | None = "B",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = make_stage(block, in_ch, planes, n, 1 if i == 0 else 2, shortcut)
            setattr(self, f"layer{i + 1}", stage)
            in_ch = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# depth -> (block, blocks per stage)
IMAGENET_SPECS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def _register(depth: int, block: Block, layers: tuple[int, int, int, int]) -> None:
    kind = "basic" if block is BasicBlock else "bottleneck"
    common = dict(family="imagenet", depth=depth, block=kind, default_num_classes=1000, default_input_size=224)

    @register_model(
        f"resnet{depth}",
        residual=True,
        shortcut_default="B",
        description=f"ResNet-{depth} for ImageNet ({kind} blocks); loads torchvision/timm weights",
        **common,
    )
    def residual_factory(num_classes: int, *, shortcut: str = "B", zero_init_residual: bool = False) -> nn.Module:
        zero_init = check_bool("zero_init_residual", zero_init_residual)
        return ResNet(block, layers, num_classes, check_shortcut(shortcut), zero_init)

    @register_model(
        f"plain{depth}",
        residual=False,
        shortcut_default=None,
        description=f"plain {depth}-layer ImageNet net ({kind} blocks, no shortcuts), the paper's baseline",
        **common,
    )
    def plain_factory(num_classes: int) -> nn.Module:
        return ResNet(block, layers, num_classes, shortcut=None)


for _depth, (_block, _layers) in IMAGENET_SPECS.items():
    _register(_depth, _block, _layers)
