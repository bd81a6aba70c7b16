"""A residual wrapper: ``x + f(x)``.

He et al., "Deep Residual Learning for Image Recognition", 2015, https://arxiv.org/abs/1512.03385.
"""
from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """``x + body(x)``; ``body`` must keep the shape of its input."""

    def __init__(self, *body: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
