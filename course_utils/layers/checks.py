"""Argument checks shared by the layers: impossible configurations fail early, with the numbers."""
from __future__ import annotations


def check_positive(layer: str, **values: int) -> None:
    """Raise ``ValueError`` naming ``layer`` if any value is not a positive integer."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}")


def check_conv(
    layer: str, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int, dilation: int, groups: int
) -> None:
    """Check a convolution's hyper-parameters before PyTorch builds it."""
    check_positive(layer, in_ch=in_ch, out_ch=out_ch, kernel_size=kernel_size, stride=stride,
                   dilation=dilation, groups=groups)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"{layer}: padding must be a non-negative integer, got {padding!r}")
    if in_ch % groups or out_ch % groups:
        raise ValueError(
            f"{layer}: in_ch={in_ch} and out_ch={out_ch} must both be divisible by groups={groups}"
        )
