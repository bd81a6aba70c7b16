"""Depthwise-separable convolution: a per-channel (depthwise) k×k conv, then a 1×1 (pointwise) conv.

Sifre, "Rigid-Motion Scattering for Image Classification", 2014; popularised by Chollet, "Xception",
2017 (https://arxiv.org/abs/1610.02357) and Howard et al., "MobileNets", 2017
(https://arxiv.org/abs/1704.04861). Like MobileNet, each of the two convs is followed by
BatchNorm and, by default, the activation; pass ``dw_act=False`` for Xception's linear depthwise (no
activation between the two convs; ``act_layer=None`` would remove the one after the pointwise conv too).

Weights: ``k²·C_in + C_in·C_out`` against ``k²·C_in·C_out`` for a standard conv, a ratio of
``1/C_out + 1/k²`` (see ``course_utils.arithmetic.separable_ratio``).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .checks import check_positive
from .conv_bn_act import ConvBNAct


class DepthwiseSeparableConv2d(nn.Sequential):
    """``dw``: k×k conv with ``groups=in_ch``; ``pw``: 1×1 conv ``in_ch → out_ch``.

    ``stride`` and ``dilation`` apply to the depthwise conv, so the block can downsample or dilate.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] | None = nn.ReLU,
        dw_act: bool = True,
    ) -> None:
        check_positive(type(self).__name__, in_ch=in_ch, out_ch=out_ch, kernel_size=kernel_size,
                       stride=stride, dilation=dilation)
        super().__init__()
        self.dw = ConvBNAct(in_ch, in_ch, kernel_size, stride, dilation=dilation, groups=in_ch,
                            norm_layer=norm_layer, act_layer=act_layer if dw_act else None)  # dw
        self.pw = ConvBNAct(in_ch, out_ch, 1, norm_layer=norm_layer, act_layer=act_layer)  # pw
        self.in_channels, self.out_channels = in_ch, out_ch
