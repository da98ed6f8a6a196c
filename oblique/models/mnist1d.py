"""Networks for MNIST-1D (inputs ``(B, 1, 40)``): the paper's reference CNN and a small 1-D ResNet with BN.

The reference CNN is the one of Greydanus, "Scaling down deep learning" (2020): three ``Conv1d`` of 25
channels (kernel 5, 3, 3; stride 2; padding 1), ReLU, then a linear classifier; published test accuracy
94 % with Adam. It has no normalization layer.

:class:`ResNet1D` is a pre-activation-free basic-block ResNet (He et al. 2016) in one dimension, *with
BatchNorm after every convolution*: a filter's scale does not change the output of a conv followed by BN,
which is where norm regularization matters (the Norm Loss paper's networks all have BN).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MNIST1DCNN", "ResNet1D"]


class MNIST1DCNN(nn.Module):
    """The MNIST-1D reference CNN (``cnn``)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, length: int = 40, channels: int = 25):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        n = length
        for k in (5, 3, 3):
            n = (n + 2 - k) // 2 + 1  # length after each stride-2 conv: 40 -> 19 -> 10 -> 5
        self.linear = nn.Linear(channels * n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.linear(x.flatten(1))  # (B, channels·5) -> (B, classes)


class _Block1D(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet1D(nn.Module):
    """A 1-D ResNet with BatchNorm (``resnet1d``, the default model).

    Args:
        num_classes: output classes.
        in_channels: input channels (1 for MNIST-1D).
        width: channels of the first stage; they double at every later stage.
        blocks: basic blocks per stage, e.g. ``(1, 1)`` for two stages of one block.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 16,
        blocks: tuple[int, ...] = (1, 1),
    ):
        super().__init__()
        self.stem = nn.Conv1d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(width)
        layers, c = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                layers.append(_Block1D(c, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))  # (B, width, L)
        x = self.layers(x)
        return self.fc(x.mean(dim=-1))  # global average pool: (B, C) -> (B, classes)
