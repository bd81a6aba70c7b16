"""A convolution is a matrix multiplication, and its transpose is the transposed convolution.

Flatten the input ``x`` (``C_in × H × W``) into a vector: a 2-D convolution is then ``y = C·x`` for a
sparse matrix ``C`` with one row per output value and one column per input value, holding the kernel's
weights where a tap meets an input pixel and zeros elsewhere (the padding is just columns that are
not there). Multiplying by ``Cᵀ`` instead maps an output-sized vector back to the input's size: that
is the **transposed convolution** (``F.conv_transpose2d`` with the same weights), and also the
gradient of the convolution with respect to its input.

Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016, section 4,
https://arxiv.org/abs/1603.07285.
"""
from __future__ import annotations

import torch

from .arithmetic import conv_output_size


def conv_matrix(weight: torch.Tensor, input_size: int | tuple[int, int], stride: int = 1, padding: int = 0,
                dilation: int = 1) -> torch.Tensor:
    """The dense matrix ``C`` of ``F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)``
    (no bias, no groups) on a ``C_in × H × W`` input: shape ``(C_out·H_out·W_out, C_in·H·W)``, so that
    ``C @ x.flatten()`` equals the convolution's output, flattened.

    Built tap by tap: output ``(o, i, j)`` gets weight ``W[o, c, a, b]`` in the column of input pixel
    ``(c, i·stride − padding + a·dilation, j·stride − padding + b·dilation)`` when that pixel is inside
    the image (outside, it would multiply a padding zero, so there is no column for it).
    """
    if weight.dim() != 4:
        raise ValueError(f"weight must be (C_out, C_in, k, k), got shape {tuple(weight.shape)}")
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    c_out, c_in, kh, kw = weight.shape
    ho = conv_output_size(h, kh, stride, padding, dilation)
    wo = conv_output_size(w, kw, stride, padding, dilation)
    matrix = torch.zeros(c_out * ho * wo, c_in * h * w, dtype=weight.dtype)
    for o in range(c_out):
        for i in range(ho):
            for j in range(wo):
                row = (o * ho + i) * wo + j
                for c in range(c_in):
                    for a in range(kh):
                        for b in range(kw):
                            r, s = i * stride - padding + a * dilation, j * stride - padding + b * dilation
                            if 0 <= r < h and 0 <= s < w:
                                matrix[row, (c * h + r) * w + s] = weight[o, c, a, b]
    return matrix


def transposed_output_padding(input_size: int, output_size: int, kernel: int, stride: int = 1, padding: int = 0,
                              dilation: int = 1) -> int:
    """The ``output_padding`` that makes ``conv_transpose2d`` of an ``output_size`` map come back to
    ``input_size`` (a strided convolution maps several input sizes to the same output size; this says
    which one to return to)."""
    back = (output_size - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1
    extra = input_size - back
    if not 0 <= extra < max(stride, dilation):
        raise ValueError(f"no output_padding maps {output_size} back to {input_size} "
                         f"(kernel {kernel}, stride {stride}, padding {padding}, dilation {dilation})")
    return extra
