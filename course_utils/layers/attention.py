"""Channel (and spatial) attention: re-weight feature maps by what the whole map contains.

* ``SqueezeExcitation``: Hu et al., "Squeeze-and-Excitation Networks", 2018,
  https://arxiv.org/abs/1709.01507. Global average pool → FC (C → C/r) → ReLU → FC (C/r → C) →
  sigmoid → scale the channels. Weights: ``2·C·C/r + C/r + C`` (both FCs carry biases).
* ``ECA``: Wang et al., "ECA-Net: Efficient Channel Attention", 2020, https://arxiv.org/abs/1910.03151.
  Global average pool → 1-D conv of size k across channels (no bias) → sigmoid. k adapts to C:
  ``t = int(log2(C)/γ + b/γ)``, γ = 2, b = 1, then ``k = t`` if t is odd, else ``t + 1`` (the authors'
  code: truncate, then add one to an even number; the paper writes "the nearest odd number", which
  leaves 3.5 at C = 64 undecided). Weights: ``k``.
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
    """ECA's adaptive kernel size as in the authors' code: ``t = int(|log2(C)/γ + b/γ|)`` (truncated),
    then ``t`` if it is odd, else ``t + 1``. C = 64 gives 3, C = 128 gives 5."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def _odd_kernel(layer: str, kernel_size: int, over: str, fix: str) -> int:
    """``kernel_size`` when it is a positive odd integer, else ``ValueError`` naming ``layer`` and ``fix``: "same"
    padding (``k // 2``) keeps the size only for a centred window, and an even one gives one output too many."""
    check_positive(layer, kernel_size=kernel_size)
    if kernel_size % 2 == 0:
        raise ValueError(f"{layer}: kernel_size must be odd (a centred window over {over}), got {kernel_size}; {fix}")
    return kernel_size


def _eca_kernel(channels: int, kernel_size: int | None, gamma: int = 2, b: int = 1) -> int:
    """ECA's kernel: the one given (checked: 0 is an error, not 'choose one'), else ``eca_kernel_size``."""
    if kernel_size is None:
        return eca_kernel_size(channels, gamma, b)
    return _odd_kernel("ECA", kernel_size, "the channels, as in the paper",
                       f"leave it out to take eca_kernel_size({channels})")


def _spatial_kernel(kernel_size: int) -> int:
    return _odd_kernel("CBAM", kernel_size, "each position; the paper uses 7", "7 is CBAM's")


def attention_cost(kind: str, channels: int, size: int, reduction: int = 16, kernel_size: int | None = None,
                   spatial_kernel: int = 7) -> dict[str, int]:
    """What one attention module costs per image on a ``channels × size × size`` map, as built here.

    * ``weights``: learned parameters (``r`` = ``reduction``: the bottleneck of SE's and CBAM's MLP has
      ``C // r`` channels, at least 1);
    * ``macs``: multiply-accumulates of the learned layers (what ``count_macs`` counts);
    * ``pooling``: the additions and comparisons of the pools ``count_macs`` leaves out, one per input
      value and pool (SE, ECA: the spatial average; CBAM: spatial average and max for the channel gate,
      channel mean and max for the spatial gate);
    * ``rescale``: one multiplication per value and gate (CBAM has two gates);
    * ``total``: the sum of the last three.

    ``kind`` is ``"se"``, ``"eca"`` or ``"cbam"``. The learned parts are tiny: the pooling and the
    rescale, ``C·H·W`` each, are what grows with the map.
    """
    check_positive("attention_cost", channels=channels, size=size, reduction=reduction)
    values = channels * size * size
    hidden = _hidden(channels, reduction)
    if kind == "se":
        cost = dict(weights=2 * channels * hidden + hidden + channels, macs=2 * channels * hidden,
                    pooling=values, rescale=values)
    elif kind == "eca":
        k = _eca_kernel(channels, kernel_size)
        cost = dict(weights=k, macs=k * channels, pooling=values, rescale=values)
    elif kind == "cbam":
        taps = 2 * _spatial_kernel(spatial_kernel) ** 2
        cost = dict(weights=2 * channels * hidden + taps, macs=2 * 2 * channels * hidden + taps * size * size,
                    pooling=4 * values, rescale=2 * values)
    else:
        raise ValueError(f"kind must be 'se', 'eca' or 'cbam', got {kind!r}")
    cost["total"] = cost["macs"] + cost["pooling"] + cost["rescale"]
    return cost


class ECA(nn.Module):
    def __init__(self, channels: int, kernel_size: int | None = None, gamma: int = 2, b: int = 1) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels)
        self.channels = channels
        self.kernel_size = _eca_kernel(channels, kernel_size, gamma, b)
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
        kernel_size = _spatial_kernel(kernel_size)
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * self.gate(self.conv(desc))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        check_positive(type(self).__name__, channels=channels, reduction=reduction)
        self.channels = channels
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.channels)
        return self.spatial(self.channel(x))
