"""The CIFAR ResNets of He et al. (ResNet-20, 32, 44, 56, 110): 6n + 2 layers, 16-32-64 channels.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2: a 3×3 conv of
16 channels, then three stages of ``n`` basic blocks (two 3×3 convs each) with 16, 32 and 64 channels on
32×32, 16×16 and 8×8 maps, global average pooling and a linear classifier; depth ``6n + 2``.
Shortcuts are **option A** (identity; where the shape changes, subsample by 2 and pad the new channels
with zeros), so the shortcuts have no parameters. Parameter counts (10 classes), as in the paper's
table 6: ResNet-20 0.27 M, ResNet-32 0.46 M, ResNet-44 0.66 M, ResNet-56 0.85 M, ResNet-110 1.7 M.

Matches the widely used reproduction of Yerlan Idelbayev (akamaster/pytorch_resnet_cifar10): Kaiming-normal
initialization of the convs and the linear layer, BatchNorm after every conv, no bias in the convs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CIFAR_RESNET_DEPTHS", "BasicBlock", "CifarResNet", "cifar_resnet"]

#: The depths of the paper's CIFAR table (6n + 2).
CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an option-A (parameter-free) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        self.pad = planes - in_planes  # new channels, zero-padded half on each side (option A)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/2, W/2)
        half = self.pad // 2
        return F.pad(x, (0, 0, 0, 0, half, self.pad - half))  # (B, planes, H/2, W/2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs, 16-32-64 channels, option-A shortcuts.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, …).
        num_classes: outputs of the classifier.
        in_channels: input channels (3 for CIFAR).

    Raises:
        ValueError: if ``depth`` is not of the form 6n + 2 with n >= 1.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110); got {depth}"
            )
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 64, 8, 8)
        out = out.mean((2, 3))  # (B, 64): global average pooling; unlike adaptive_avg_pool2d, its CUDA
        # backward is deterministic
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """Build the CIFAR ResNet of ``depth`` layers (6n + 2)."""
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels)
