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


def check_input(layer: str, x, channels: int) -> None:
    """Check a batch against the channels a layer was built for."""
    if x.dim() != 4:
        raise ValueError(f"{layer}: expects (N, C, H, W) input, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"{layer}: built for {channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")


def check_fits(layer: str, x, kernel_size: int, padding: int, dilation: int) -> None:
    """Check that a (dilated) kernel fits in the padded input, before PyTorch's own error."""
    span = dilation * (kernel_size - 1) + 1
    h, w = x.shape[-2:]
    if min(h, w) + 2 * padding < span:
        raise ValueError(
            f"{layer}: a {kernel_size}x{kernel_size} kernel with dilation {dilation} spans {span} pixels, more than "
            f"the {h}x{w} input padded by {padding} ({min(h, w) + 2 * padding} pixels); use a larger input, "
            "more padding or a smaller kernel/dilation"
        )
