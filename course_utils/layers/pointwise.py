"""The pointwise (1×1) convolution, computed as the matrix multiply it is.

A 1×1 convolution mixes channels and nothing else: every output pixel is ``W @ x[:, h, w]`` with the
same ``(C_out, C_in)`` matrix ``W``. Over a batch in the channels-last layout (memory ordered
N, H, W, C) the whole layer is one matrix product, ``(N·H·W, C_in) @ W.T``, with no copy to get there:
Lin, Chen & Yan, "Network In Network", 2013 (https://arxiv.org/abs/1312.4400), introduced the 1×1
conv as exactly this per-pixel linear layer.

Why compute it that way: on a CPU, PyTorch's (oneDNN's) backward pass of a channels-last 1×1
convolution can be several times slower than that of the same matrix product. It is for CifarNet's
widest 1×1s (224 channels at 4×4), about even for its 112-channel ones at 8×8, and slower for narrow
1×1s on large maps, so the seed's CifarNet10 layout keeps plain ``nn.Conv2d``. Over CifarNet's whole
training step the gain is small, up to about 10% on 2 CPU cores in interleaved timings (most of
the step is elsewhere): notebook 03 (section 4) times the network both ways, and ``python -m course_utils bench``
records a row for each. The layer
keeps ``nn.Conv2d``'s weight ``(C_out, C_in, 1, 1)``, bias, ``state_dict`` and results, so a
checkpoint loads into either, and it takes the ordinary convolution path on GPUs, where cuDNN's is
fast (and wherever ``pointwise_as_matmul(model, False)`` turned the matrix product off).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(in_ch, out_ch, 1)`` that, for a channels-last batch on the CPU, computes
    ``F.linear`` over the channel dimension instead of calling the convolution kernel."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool = True) -> None:
        super().__init__(in_ch, out_ch, kernel_size=1, bias=bias)
        self.matmul = True  # False: always the convolution kernel (see pointwise_as_matmul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.matmul and x.dim() == 4 and x.device.type == "cpu"
                and x.is_contiguous(memory_format=torch.channels_last)):
            # (N, C, H, W) viewed as (N, H, W, C): channels are the last, contiguous dimension
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return y.permute(0, 3, 1, 2)  # back to (N, C_out, H, W), still channels-last in memory
        return super().forward(x)


def pointwise_as_matmul(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every ``PointwiseConv2d`` in ``model`` to the matrix product (``enabled=True``, the
    default) or to the convolution kernel, and return ``model``: the same network and weights, timed
    both ways."""
    for module in model.modules():
        if isinstance(module, PointwiseConv2d):
            module.matmul = enabled
    return model
