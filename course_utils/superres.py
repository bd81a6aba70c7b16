"""Upsampling with a purpose: a tiny super-resolution task on the course data.

Each CIFAR-10 image is shrunk to 16×16 (2×2 averaging) and a small network brings it back to 32×32.
The networks differ only in their upsampler, and the three upsamplers have the same number of
weights, ``36·C_in·C_out``:

* ``"transposed"``: a transposed convolution with a 6×6 kernel, stride 2 (Dumoulin & Visin, 2016);
* ``"resize_conv"``: nearest-neighbour resize, then a 6×6 convolution (Odena et al., Distill 2016);
* ``"pixel_shuffle"``: a 3×3 convolution to ``4·C_out`` channels, then ``PixelShuffle(2)``, with ICNR
  initialisation (Shi et al., 2016; Aitken et al., 2017).

The network predicts a correction to the bilinear upsampling of its input (a global residual, as in
VDSR: Kim et al., "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", 2016,
https://arxiv.org/abs/1511.04587), so bilinear interpolation is the baseline every upsampler must beat.
Quality is the peak signal-to-noise ratio, ``PSNR = 10·log10(1 / MSE)`` on pixels in [0, 1], in dB.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import unit_tensor
from .inspection import _model_device
from .layers import PixelShuffleUpsample, ResizeConvUpsample, TransposedUpsample

SCALE = 2
UPSAMPLERS = ("transposed", "resize_conv", "pixel_shuffle")


def smooth_bump(size: int = 16, channels: int = 8) -> torch.Tensor:
    """A smooth test input of shape ``(1, channels, size, size)``: ``exp(-2 r^2)`` on a grid over
    [-1, 1]^2, 1 at the centre and ``exp(-4)`` in the corners, the same in every channel. Nothing in it
    changes from one pixel to the next, so any pattern an upsampler's output shows is the upsampler's."""
    if size < 2 or channels < 1:
        raise ValueError(f"smooth_bump: size must be at least 2 and channels at least 1, got {size} and {channels}")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.exp(-(xx ** 2 + yy ** 2) * 2)[None, None].repeat(1, channels, 1, 1)


def make_upsampler(kind: str, in_ch: int, out_ch: int) -> nn.Module:
    """One of the three ×2 upsamplers, each with ``36·in_ch·out_ch`` weights (plus biases)."""
    if kind == "transposed":
        return TransposedUpsample(in_ch, out_ch, SCALE, kernel_size=6)
    if kind == "resize_conv":
        return ResizeConvUpsample(in_ch, out_ch, SCALE, kernel_size=6)
    if kind == "pixel_shuffle":
        return PixelShuffleUpsample(in_ch, out_ch, SCALE, icnr=True)
    raise ValueError(f"unknown upsampler {kind!r}; choose one of {', '.join(UPSAMPLERS)}")


class SuperResolutionNet(nn.Module):
    """16×16 → 32×32: two 3×3 conv + ReLU layers at low resolution (``width`` channels), the
    upsampler straight to RGB, added to the bilinear upsampling of the input."""

    def __init__(self, upsampler: str, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.up = make_upsampler(upsampler, width, 3)
        self.kind = upsampler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SuperResolutionNet expects (N, 3, H, W) images in [0, 1], got shape {tuple(x.shape)}")
        return bilinear(x) + self.up(self.body(x))


def bilinear(x: torch.Tensor) -> torch.Tensor:
    """The baseline: bilinear upsampling by 2."""
    return F.interpolate(x, scale_factor=SCALE, mode="bilinear", align_corners=False)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` → ``(N, 3, H, W) float`` in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 images, got {images.dtype} {images.shape}")
    return unit_tensor(images)


def shrink(x: torch.Tensor) -> torch.Tensor:
    """The low-resolution input: each 2×2 block averaged (32×32 → 16×16)."""
    if x.shape[-1] % SCALE or x.shape[-2] % SCALE:
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by {SCALE}")
    return F.avg_pool2d(x, SCALE)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for pixels in [0, 1] (predictions clipped to [0, 1] first)."""
    if prediction.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(prediction.shape)} and {tuple(target.shape)}")
    mse = (prediction.clamp(0, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def train_sr(model: nn.Module, images: np.ndarray, steps: int, device: torch.device | str = "cpu",
             batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
             log: Callable[[str], None] | None = None, log_every: int = 100) -> list[float]:
    """Train on random batches of ``images`` (uint8, HWC; random horizontal flips) for ``steps``
    Adam steps with a cosine-decayed learning rate, minimising the MSE against the full-size image.
    Returns the loss of every step."""
    from .training import train_on_batches

    g = torch.Generator().manual_seed(seed)
    data = to_tensor(images)
    model.to(device)

    def next_batch(step: int):
        target = data[torch.randint(len(data), (batch_size,), generator=g)]
        flip = torch.rand(batch_size, generator=g) < 0.5
        target = torch.where(flip[:, None, None, None], target.flip(-1), target).to(device)
        return shrink(target), target

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    return train_on_batches(model, opt, next_batch, F.mse_loss, steps, device, scheduler=sched, log=log,
                            log_every=log_every, label="MSE")


@torch.no_grad()
def evaluate_sr(model: nn.Module | None, images: np.ndarray, device: torch.device | str = "cpu",
                batch_size: int = 500) -> float:
    """Mean PSNR (dB) over ``images``; ``model=None`` scores the bilinear baseline."""
    scores = []
    if model is not None:
        model.to(device).eval()
    for start in range(0, len(images), batch_size):
        target = to_tensor(images[start:start + batch_size]).to(device)
        low = shrink(target)
        scores.append(psnr(bilinear(low) if model is None else model(low), target).cpu())
    return float(torch.cat(scores).mean())


@torch.no_grad()
def flat_response(model: nn.Module, value: float = 0.5, size: int = 16) -> torch.Tensor:
    """The network's output for a flat grey image, minus that grey: ``(3, 2·size, 2·size)``. A perfect
    upsampler returns zeros; a periodic 2×2 pattern in the interior is a checkerboard it learned."""
    model.eval()
    x = torch.full((1, 3, size, size), value, device=_model_device(model))
    return (model(x) - value)[0].cpu()


def checkerboard_spread(response: torch.Tensor, border: int = 4) -> float:
    """How much the four sub-pixel positions of each 2×2 output block differ on average, away from
    the border: the max minus the min of the mean of ``response`` at each (row % 2, column % 2). Zero
    for an upsampler without a checkerboard; ``response`` is ``flat_response``'s output."""
    inner = response[..., border:response.shape[-2] - border, border:response.shape[-1] - border]
    phases = torch.stack([inner[..., i::2, j::2].mean() for i in range(2) for j in range(2)])
    return float(phases.max() - phases.min())


@torch.no_grad()
def comparison_figure(nets: dict[str, nn.Module], images: np.ndarray, crop: int | None = None):
    """One column per image: the 16×16 input (drawn with nearest-neighbour pixels), bilinear, each
    network's output and the original, each titled with its PSNR. ``crop``: show only the top-left
    ``crop``×``crop`` pixels of every panel (to see artifacts up close)."""
    import matplotlib.pyplot as plt

    target = to_tensor(images)
    low = shrink(target)
    rows = {"input 16x16": F.interpolate(low, scale_factor=SCALE, mode="nearest"), "bilinear": bilinear(low)}
    for name, net in nets.items():
        net.eval()
        rows[name] = net(low.to(_model_device(net))).cpu()
    rows["original 32x32"] = target
    fig, axes = plt.subplots(len(rows), len(images), figsize=(1.6 * len(images) + 1.2, 1.6 * len(rows)), squeeze=False)
    for r, (name, batch) in enumerate(rows.items()):
        scores = psnr(batch, target)
        for c in range(len(images)):
            img = batch[c].clamp(0, 1).permute(1, 2, 0).numpy()
            axes[r, c].imshow(img[:crop, :crop] if crop else img, interpolation="nearest")
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            if name != "original 32x32":
                axes[r, c].set_title(f"{scores[c]:.1f} dB", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("16x16 -> 32x32 on test images: PSNR against the original (higher is better)", fontsize=10)
    fig.tight_layout()
    return fig
