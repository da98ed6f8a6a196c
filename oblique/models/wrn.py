"""Wide Residual Networks WRN-d-k (Zagoruyko & Komodakis, BMVC 2016), for 32×32 inputs.

A 3×3 conv of 16 channels, then three stages of ``n = (d − 4) / 6`` pre-activation wide basic blocks
(BN-ReLU-conv3×3-[dropout]-BN-ReLU-conv3×3) with ``16k``, ``32k`` and ``64k`` channels (strides 1, 2, 2), a
final BN-ReLU, global average pooling and a linear classifier. A block whose shape changes has a 1×1 conv
shortcut. Parameter counts (10 classes): WRN-28-10 36.5 M, WRN-16-8 11.0 M, WRN-40-4 8.9 M (the paper's
table 1/4).

Matches the authors' PyTorch code (szagoruyko/wide-residual-networks) and the common reproduction
(xternalz/WideResNet-pytorch): Kaiming-normal conv initialization, BN weight 1 and bias 0, zero linear bias;
convs without bias. Dropout (the paper's 0.3) sits between the two convs of each block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["WideBasicBlock", "WideResNet", "wide_resnet"]


class WideBasicBlock(nn.Module):
    """Pre-activation wide basic block; a 1×1 conv shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal = in_planes == planes and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        # the authors' code feeds the *activated* input to the projection shortcut
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-``depth``-``width``.

    Args:
        depth: total depth ``d = 6n + 4`` (16, 22, 28, 40, …).
        width: widening factor ``k`` >= 1.
        num_classes: outputs of the classifier.
        in_channels: input channels (3 for CIFAR).
        dropout: dropout probability between the convs of each block (0: none; the paper uses 0.3).

    Raises:
        ValueError: on a depth not of the form 6n + 4, a width < 1, or a dropout outside [0, 1).
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_wrn(depth, width)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        n = (depth - 4) // 6
        self.depth, self.width = depth, width
        widths = (16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = 16
        for planes, stride in zip(widths, (1, 2, 2), strict=True):
            blocks = []
            for i in range(n):
                blocks.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)  # (B, 16, 32, 32)
        out = self.block3(self.block2(self.block1(out)))  # (B, 64k, 8, 8)
        out = F.relu(self.bn(out))
        out = out.mean((2, 3))  # (B, 64k): global average pooling; unlike adaptive_avg_pool2d, its CUDA
        # backward is deterministic
        return self.linear(out)


#: the deepest and the widest WRN built: beyond them a WRN takes hours to build or does not fit in memory
#: (WRN-28-32 has about 370 M parameters; the papers go to WRN-40-10 and WRN-28-20)
MAX_DEPTH, MAX_WIDTH = 1000, 32


def check_wrn(depth: int, width: int) -> None:
    """Raise ``ValueError`` unless WRN-``depth``-``width`` can be built: depth 6n + 4 (n >= 1) up to
    :data:`MAX_DEPTH`, width 1 to :data:`MAX_WIDTH`."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (16, 22, 28, 40); got {depth}")
    if depth > MAX_DEPTH:
        raise ValueError(f"WRN depth must be <= {MAX_DEPTH}; got {depth}")
    if width < 1:
        raise ValueError(f"WRN width must be an integer >= 1; got {width}")
    if width > MAX_WIDTH:
        raise ValueError(f"WRN width must be <= {MAX_WIDTH}; got {width}")


def wide_resnet(
    depth: int, width: int, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0
) -> WideResNet:
    """Build WRN-``depth``-``width``."""
    return WideResNet(depth, width, num_classes=num_classes, in_channels=in_channels, dropout=dropout)
