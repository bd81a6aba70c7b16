"""Layers of the course, one concept per module; each module's docstring cites its paper."""
from .conv_bn_act import ConvBNAct
from .residual import Residual
from .separable import DepthwiseSeparableConv2d

__all__ = ["ConvBNAct", "DepthwiseSeparableConv2d", "Residual"]
