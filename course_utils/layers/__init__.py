"""Layers of the course, one concept per module; each module's docstring cites its paper."""
from .attention import CBAM, ECA, SqueezeExcitation, attention_cost, eca_kernel_size
from .conv_bn_act import ConvBNAct
from .pointwise import PointwiseConv2d, use_pointwise
from .residual import Residual
from .separable import DepthwiseSeparableConv2d
from .upsample import (PixelShuffleUpsample, ResizeConvUpsample, TransposedUpsample, icnr_,
                       transposed_conv_as_conv, zero_insert)

__all__ = [
    "CBAM",
    "ECA",
    "SqueezeExcitation",
    "attention_cost",
    "eca_kernel_size",
    "ConvBNAct",
    "DepthwiseSeparableConv2d",
    "PixelShuffleUpsample",
    "PointwiseConv2d",
    "Residual",
    "ResizeConvUpsample",
    "TransposedUpsample",
    "icnr_",
    "transposed_conv_as_conv",
    "use_pointwise",
    "zero_insert",
]
