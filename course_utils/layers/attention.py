"""Channel (and spatial) attention: re-weight feature maps by what the whole map contains.

* ``SqueezeExcitation``: Hu et al., "Squeeze-and-Excitation Networks", 2018,
  https://arxiv.org/abs/1709.01507. Global average pool → FC (C → C/r) → ReLU → FC (C/r → C) →
  sigmoid → scale the channels. Weights: ``2·C·C/r + C/r + C`` (both FCs carry biases).
* ``ECA``: Wang et al., "ECA-Net: Efficient Channel Attention", 2020, https://arxiv.org/abs/1910.03151.
  Global average pool → 1-D conv of size k across channels (no bias) → sigmoid. k adapts to C:
  ``k = |log2(C)/γ + b/γ|`` rounded to the nearest odd number above, γ = 2, b = 1. Weights: ``k``.
* ``CBAM``: Woo et al., "CBAM: Convolutional Block Attention Module", 2018,
  https://arxiv.org/abs/1807.06521. Channel attention (a shared MLP over average- and max-pooled
  features, summed, sigmoid) then spatial attention (a 7×7 conv over the channel-wise mean and max,
  sigmoid). Departure from the paper: the MLP has no biases and the spatial conv no BatchNorm, so the
  weights are exactly ``2·C·C/r + 2·7·7``.

Every module keeps its gate as a submodule named ``gate`` (an ``nn.Sigmoid``), so a forward hook on it
captures the attention weights (see ``course_utils.inspection.capture``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_input, check_positive


def _hidden(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, reduction=reduction)
        hidden = _hidden(channels, reduction)
        self.channels = channels
        self.pool = nn.AdaptiveAvgPool2d(1)                 # squeeze
        self.fc1 = nn.Conv2d(channels, hidden, 1)           # excitation, C -> C/r
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)           # C/r -> C
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.channels)
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size: ``|log2(C)/γ + b/γ|``, made odd (rounding up)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.channels = channels
        self.kernel_size = kernel_size or eca_kernel_size(channels, gamma, b)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.channels)
        y = self.pool(x).flatten(1).unsqueeze(1)            # (N, 1, C): channels as a sequence
        y = self.gate(self.conv(y)).transpose(1, 2).unsqueeze(-1)  # (N, C, 1, 1)
        return x * y


class ChannelGate(nn.Module):
    """CBAM's channel attention: shared MLP over average- and max-pooled descriptors."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1, bias=False))
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean((2, 3), keepdim=True))
        mx = self.mlp(x.amax((2, 3), keepdim=True))
        return x * self.gate(avg + mx)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: a 7×7 conv over the channel-wise mean and max maps."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(desc))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, reduction=reduction, kernel_size=kernel_size)
        self.channels = channels
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.channels)
        return self.spatial(self.channel(x))
