"""Learned upsampling, three ways.

* ``TransposedUpsample``: a transposed convolution (Dumoulin & Visin, 2016,
  https://arxiv.org/abs/1603.07285). When the kernel size is not a multiple of the stride, output
  pixels receive uneven numbers of contributions: the checkerboard artifact (Odena et al.,
  "Deconvolution and Checkerboard Artifacts", Distill 2016, https://distill.pub/2016/deconv-checkerboard/).
* ``ResizeConvUpsample``: nearest-neighbour resize, then a convolution (3×3 by default) — Odena et al.'s remedy.
* ``PixelShuffleUpsample``: a conv to ``out_ch·scale²`` channels, then ``PixelShuffle`` (Shi et al.,
  "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional
  Neural Network", 2016, https://arxiv.org/abs/1609.05158), with ICNR initialisation (Aitken et al.,
  "Checkerboard artifact free sub-pixel convolution", 2017, https://arxiv.org/abs/1707.02937), which
  makes the initial output exactly a nearest-neighbour upsampling of a convolution.

The three take ``(N, in_ch, H, W)`` to ``(N, out_ch, scale·H, scale·W)``. No normalisation or
activation is built in, so the three can be compared as plain operators.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_input, check_positive


class TransposedUpsample(nn.Module):
    """``ConvTranspose2d`` sized so that the output is exactly ``scale`` times the input.

    ``kernel_size`` defaults to ``2·scale`` (every output pixel gets the same number of
    contributions); an odd kernel such as 3 with scale 2 shows the checkerboard artifact.
    Padding and output padding are chosen so that ``out = scale · in``.
    """

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, kernel_size: int | None = None, bias: bool = True):
        super().__init__()
        kernel_size = 2 * scale if kernel_size is None else kernel_size
        check_positive(type(self).__name__, in_ch=in_ch, out_ch=out_ch, scale=scale, kernel_size=kernel_size)
        if scale < 2:
            raise ValueError(f"{type(self).__name__}: scale must be at least 2, got {scale}")
        if kernel_size < scale:
            raise ValueError(
                f"{type(self).__name__}: kernel_size={kernel_size} is smaller than scale={scale}; "
                "the output would have holes that no kernel position reaches"
            )
        # out = (in − 1)·scale − 2·padding + kernel + output_padding = scale·in
        # needs 2·padding − output_padding = kernel − scale
        extra = kernel_size - scale
        self.in_channels, self.out_channels, self.scale = in_ch, out_ch, scale
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size, stride=scale, padding=(extra + 1) // 2,
                                       output_padding=extra % 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_channels)
        return self.conv(x)


class ResizeConvUpsample(nn.Module):
    """Nearest-neighbour resize by ``scale``, then a ``kernel_size`` conv (3×3 by default; an even
    kernel is padded one pixel more on the right and bottom): no uneven overlap, no checkerboard."""

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, bias: bool = True, kernel_size: int = 3):
        super().__init__()
        check_positive(type(self).__name__, in_ch=in_ch, out_ch=out_ch, scale=scale, kernel_size=kernel_size)
        self.in_channels, self.out_channels, self.scale = in_ch, out_ch, scale
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2) * 2      # left, right, top, bottom
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_channels)
        return self.conv(F.pad(F.interpolate(x, scale_factor=self.scale, mode="nearest"), self.pad, mode="replicate"))


def icnr_(weight: torch.Tensor, scale: int, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR: initialise a sub-pixel conv's weight ``(out·scale², in, k, k)`` in place so that the
    ``scale²`` channels that ``PixelShuffle`` gathers into one output channel are copies of one kernel.

    ``PixelShuffle`` takes channels ``c·scale² … c·scale² + scale² − 1`` to the ``scale×scale`` block
    of output channel ``c``, so each kernel is repeated ``scale²`` times consecutively.
    """
    out_total, *rest = weight.shape
    if out_total % (scale * scale):
        raise ValueError(f"icnr_: {out_total} output channels are not a multiple of scale²={scale * scale}")
    sub = torch.empty(out_total // (scale * scale), *rest, dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))
    return weight


class PixelShuffleUpsample(nn.Module):
    """Sub-pixel convolution: ``Conv2d(in_ch, out_ch·scale², 3)`` then ``PixelShuffle(scale)``.

    With ``icnr=True`` (the default) the conv starts from ICNR weights (and a repeated bias), so the
    initial output has no checkerboard: each ``scale×scale`` block of the output holds equal values.
    """

    def __init__(self, in_ch: int, out_ch: int, scale: int = 2, icnr: bool = True, bias: bool = True):
        super().__init__()
        check_positive(type(self).__name__, in_ch=in_ch, out_ch=out_ch, scale=scale)
        self.in_channels, self.out_channels, self.scale = in_ch, out_ch, scale
        self.conv = nn.Conv2d(in_ch, out_ch * scale * scale, 3, padding=1, bias=bias)
        self.shuffle = nn.PixelShuffle(scale)
        if icnr:
            icnr_(self.conv.weight, scale)
            if bias:
                with torch.no_grad():
                    self.conv.bias.copy_(self.conv.bias[::scale * scale].repeat_interleave(scale * scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.in_channels)
        return self.shuffle(self.conv(x))


def zero_insert(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Put ``stride − 1`` zeros between neighbouring pixels: ``(N, C, H, W) → (N, C, s(H−1)+1, s(W−1)+1)``.

    A transposed convolution is this, then padding, then an ordinary convolution with the flipped kernel.
    """
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, stride * (h - 1) + 1, stride * (w - 1) + 1)
    out[..., ::stride, ::stride] = x
    return out


def transposed_conv_as_conv(x: torch.Tensor, layer: nn.ConvTranspose2d) -> torch.Tensor:
    """What ``layer(x)`` computes, rebuilt from ``zero_insert`` + padding + ``F.conv2d``."""
    if layer.groups != 1:
        raise ValueError("transposed_conv_as_conv: groups > 1 is not covered")
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    op, d = layer.output_padding[0], layer.dilation[0]
    z = zero_insert(x, s)
    pad = d * (k - 1) - p
    if pad < 0:
        raise ValueError(f"transposed_conv_as_conv: padding={p} larger than dilation·(kernel−1)={d * (k - 1)}")
    z = F.pad(z, (pad, pad + op, pad, pad + op))
    weight = layer.weight.flip(-1, -2).transpose(0, 1)  # (in, out, k, k) -> (out, in, k, k), flipped
    return F.conv2d(z, weight, layer.bias, dilation=d)
