"""The pointwise (1×1) convolution, computed as the matrix multiply it is.

A 1×1 convolution mixes channels and nothing else: every output pixel is ``W @ x[:, h, w]`` with the
same ``(C_out, C_in)`` matrix ``W``. Over a batch in the channels-last layout (memory ordered
N, H, W, C) the whole layer is one matrix product, ``(N·H·W, C_in) @ W.T``, with no copy to get there:
Lin, Chen & Yan, "Network In Network", 2013 (https://arxiv.org/abs/1312.4400), made this per-pixel
linear layer a building block (their mlpconv is a stack of 1×1 convolutions).

Computed that way, the same arithmetic runs through other kernels and takes another time: on a CPU,
PyTorch's (oneDNN's) backward pass of a channels-last 1×1 convolution is faster or slower than that of
the matrix product depending on the layer's shape. Notebook 03 (section 4) times CifarNet's 1×1
shapes both ways with ``benchmark.pointwise_timings``. Measured on 2 CPU cores, the answer moved with
the machine and from run to run: in two recordings (on two machines) the matrix product won for C4's 4×4
shapes and CifarNet's whole training step gained a few percent with all six of its 1×1s as matrix
products; in two others, on an AVX-512 EPYC and, a day after one of those gains, on the same kind of
Intel Xeon, the step showed no difference (notebook 03's last section lists the four). So the course's
layers keep ``nn.Conv2d``: this layer
is there to time, not a default. It keeps ``nn.Conv2d``'s weight ``(C_out, C_in, 1, 1)``, bias,
``state_dict`` and results (up to float rounding), so a checkpoint loads into either; it takes the
convolution path on GPUs, without gradients (evaluation, the kit's inspection tools) and when
``matmul`` is False.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(in_ch, out_ch, 1)`` that, in training (gradients on) on a channels-last CPU batch,
    computes ``F.linear`` over the channel dimension instead of calling the convolution kernel. The
    results are equal up to float rounding."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool = True) -> None:
        super().__init__(in_ch, out_ch, kernel_size=1, bias=bias)
        self.matmul = True  # False: always the convolution kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # only where a backward pass follows (where the two kernels differ most): evaluation and the
        # kit's inspection tools (receptive field, MACs, the assignment's checks, all under no_grad)
        # see the convolution
        if (self.matmul and torch.is_grad_enabled() and x.dim() == 4 and x.device.type == "cpu"
                and x.is_contiguous(memory_format=torch.channels_last)):
            # (N, C, H, W) viewed as (N, H, W, C): channels are the last, contiguous dimension
            y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return y.permute(0, 3, 1, 2)  # back to (N, C_out, H, W), still channels-last in memory
        return super().forward(x)


def use_pointwise(model: nn.Module) -> nn.Module:
    """Turn every plain 1×1 ``nn.Conv2d`` of ``model`` (stride 1, no padding, one group) into a
    ``PointwiseConv2d``, in place and with the same weights, and return ``model``: the same network,
    to time both ways."""
    for module in model.modules():
        if (type(module) is nn.Conv2d and module.kernel_size == (1, 1) and module.stride == (1, 1)
                and module.padding == (0, 0) and module.groups == 1):
            module.__class__ = PointwiseConv2d
            module.matmul = True
    return model
