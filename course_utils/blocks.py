"""The building blocks CifarNet is made of, each measured on its own: batch normalisation, 1×1
convolutions, global average pooling and residual connections.

* BatchNorm: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
  Internal Covariate Shift", 2015, https://arxiv.org/abs/1502.03167.
* 1×1 convolutions: Lin et al., "Network In Network", 2013, https://arxiv.org/abs/1312.4400.
* Global average pooling: Lin et al., same paper (section 3.2).
* Residual connections: He et al., "Deep Residual Learning for Image Recognition", 2016,
  https://arxiv.org/abs/1512.03385.

``ConvStack`` is the experiment's network: a stem, ``depth`` identical 3×3 conv layers (each with or
without BatchNorm, with or without a skip around it), global average pooling and a linear layer.
``train_steps`` trains it for a few hundred steps and records the loss of every step;
``gradient_norms`` measures how large each layer's gradient is for one batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def batchnorm_by_hand(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """What ``bn`` computes in training mode, written out: normalise each channel by the batch's mean
    and (biased) variance over N, H and W, then scale by γ and shift by β."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + bn.eps)
    return bn.weight.view(1, -1, 1, 1) * x_hat + bn.bias.view(1, -1, 1, 1)


def running_stats_after(batches: list[torch.Tensor], momentum: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The running mean and variance a fresh ``BatchNorm2d(momentum=momentum)`` holds after seeing
    ``batches`` in training mode: ``r ← (1 − m)·r + m·batch statistic``, starting from 0 and 1; the
    variance it keeps is the *unbiased* one (divided by n − 1)."""
    mean = torch.zeros(batches[0].shape[1])
    var = torch.ones(batches[0].shape[1])
    for x in batches:
        n = x.numel() // x.shape[1]
        batch_mean = x.mean(dim=(0, 2, 3))
        batch_var = x.var(dim=(0, 2, 3), unbiased=False) * n / (n - 1)
        mean = (1 - momentum) * mean + momentum * batch_mean
        var = (1 - momentum) * var + momentum * batch_var
    return mean, var


class _Layer(nn.Module):
    def __init__(self, width: int, batchnorm: bool, residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(width) if batchnorm else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return F.relu(x + y) if self.residual else F.relu(y)


class ConvStack(nn.Module):
    """Stem (3×3 conv with stride ``stem_stride``, to ``width`` channels: 8×8 maps by default, to keep
    a deep stack cheap on a CPU), then ``depth`` 3×3 conv layers of
    ``width`` channels (conv → BatchNorm if ``batchnorm`` → ReLU, with the input added before the ReLU
    if ``residual``), global average pooling and a linear classifier. Default PyTorch initialisation."""

    def __init__(self, depth: int, width: int = 16, batchnorm: bool = True, residual: bool = False,
                 num_classes: int = 10, stem_stride: int = 4) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be at least 1, got depth={depth}, width={width}")
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=stem_stride, padding=1, bias=not batchnorm),
                                  nn.BatchNorm2d(width) if batchnorm else nn.Identity(), nn.ReLU())
        self.layers = nn.Sequential(*[_Layer(width, batchnorm, residual) for _ in range(depth)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


def gradient_norms(model: ConvStack, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The L2 norm of the gradient of the cross-entropy on one batch with respect to each stacked
    layer's conv weight, first layer first."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return np.array([float(layer.conv.weight.grad.norm()) for layer in model.layers])


def train_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, batch_size: int = 128,
                lr: float = 0.05, seed: int = 0, device: torch.device | str = "cpu",
                log: Callable[[str], None] | None = None, log_every: int = 50) -> list[float]:
    """Plain SGD (momentum 0.9, constant ``lr``) on random batches of ``images`` (already normalised,
    ``(N, 3, H, W)``) for ``steps`` steps; returns every step's training loss (NaN if it diverged)."""
    from .training import train_on_batches

    g = torch.Generator().manual_seed(seed)
    model.to(device)

    def next_batch(step: int):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        return images[idx].to(device), labels[idx].to(device)

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return train_on_batches(model, opt, next_batch, F.cross_entropy, steps, device, log=log, log_every=log_every)


def smooth(values: list[float], window: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Running mean over ``window`` steps, for plotting noisy per-step losses: ``(steps, means)``, each
    mean placed at the step (counted from 1) its window ends at, so a plotted curve starts at step
    ``window``, not at 0. Fewer values than ``window``: the values themselves, at steps 1, 2, ..."""
    v = np.asarray(values, dtype=float)
    if len(v) < window:
        return np.arange(1, len(v) + 1), v
    return np.arange(window, len(v) + 1), np.convolve(v, np.ones(window) / window, mode="valid")


def plot_losses(losses: "dict[str, list[float]]", title: str, window: int = 20, batch_size: int = 128,
                classes: "int | None" = None):
    """One curve per entry of ``losses`` (a label and the per-step losses ``train_steps`` returned), each
    smoothed by ``smooth`` over ``window`` steps; ``classes`` draws the loss of a uniform guess among that
    many classes, ``ln(classes)``, as a dotted line. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for name, values in losses.items():
        ax.plot(*smooth(values, window), label=name)
    if classes is not None:
        ax.axhline(np.log(classes), color="0.6", ls=":", label=f"chance (ln {classes})")
    ax.set_xlabel(f"training step ({batch_size} images; each point the mean of the {window} steps ending there)")
    ax.set_ylabel(f"training loss (cross-entropy, {window}-step mean)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def shift_images(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Shift a batch ``pixels`` to the right, filling the uncovered columns with zeros (the mean of
    normalised data)."""
    if pixels == 0:
        return x
    out = torch.zeros_like(x)
    if pixels > 0:
        out[..., pixels:] = x[..., :-pixels]
    else:
        out[..., :pixels] = x[..., -pixels:]
    return out


def normalized_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` images → ``(N, 3, H, W)`` float, normalised per channel (no augmentation)."""
    from .data import BatchNormalize

    return BatchNormalize(mean, std).normalize(images)
