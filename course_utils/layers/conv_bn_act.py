"""Conv → BatchNorm → activation, the building block of every course network.

BatchNorm: Ioffe & Szegedy, "Batch Normalization", 2015, https://arxiv.org/abs/1502.03167.
The convolution has no bias: the BatchNorm that follows has its own shift, so a bias would be wasted.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .checks import check_conv, check_fits, check_input


class ConvBNAct(nn.Sequential):
    """``Conv2d(bias=False) → norm_layer → act_layer``, "same" padding by default.

    Args:
        in_ch, out_ch: channels in and out.
        kernel_size, stride, dilation, groups: as in ``nn.Conv2d``.
        padding: defaults to ``dilation * (kernel_size - 1) // 2`` (keeps the size at stride 1 for an odd
            kernel; an even one loses a pixel: give its padding yourself).
        norm_layer: a callable taking the channel count (``nn.BatchNorm2d``), or None for no norm.
        act_layer: a callable returning the activation (``nn.ReLU``), or None for no activation.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        check_conv(type(self).__name__, in_ch, out_ch, kernel_size, stride, padding, dilation, groups)
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias=norm_layer is None)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_ch))
        if act_layer is not None:
            layers.append(act_layer(inplace=True) if act_layer in (nn.ReLU, nn.ReLU6, nn.SiLU) else act_layer())
        super().__init__(*layers)
        self.in_channels, self.out_channels = in_ch, out_ch
        self._geometry = (kernel_size, padding, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_channels)
        check_fits(type(self).__name__, x, *self._geometry)
        return super().forward(x)
