import numpy as np
import pytest
import torch
from torch import nn

from course_utils import superres as sr


def _smooth_images(n=64, seed=0):
    """Smooth random colour images (uint8, HWC): low-frequency content that 2x upsampling can recover."""
    g = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = g.uniform(0.5, 3, 3)
        img = np.stack([np.sin(a * xx * 3 + c) * np.cos(b * yy * 3 + k) for k in range(3)], -1)
        out.append(((img + 1) * 127.5).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("kind", sr.UPSAMPLERS)
def test_the_three_upsamplers_have_equal_weights_and_double_the_size(kind):
    net = sr.SuperResolutionNet(kind, width=8)
    weights = sum(p.numel() for n, p in net.up.named_parameters() if n.endswith("weight"))
    assert weights == 36 * 8 * 3
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, 3, 32, 32)


def test_the_baseline_is_bilinear_by_hand():
    """The baseline's values on a 2x2 input, computed by hand (align_corners=False: output pixel i samples
    the input at (i + 0.5) / 2 - 0.5, clamped at the border, and mixes its two neighbours linearly)."""
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    row = [0.0, 0.25, 0.75, 1.0]                            # one axis: positions -0.25, 0.25, 0.75, 1.25 -> clamp
    expected = torch.tensor([[a + 2 * b for a in row] for b in row]).view(1, 1, 4, 4)
    assert torch.allclose(sr.bilinear(x), expected)
    assert sr.bilinear(x).shape == (1, 1, 4, 4)


def test_a_zero_upsampler_returns_the_bilinear_baseline():
    net = sr.SuperResolutionNet("pixel_shuffle", width=4)
    for p in net.up.parameters():
        nn.init.zeros_(p)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x), sr.bilinear(x))
    assert torch.count_nonzero(sr.flat_response(net)) == 0


def test_psnr_shrink_and_conversion_values():
    target = torch.full((2, 3, 4, 4), 0.5)
    assert torch.allclose(sr.psnr(target + 0.1, target), torch.tensor([20.0, 20.0]))   # MSE 0.01 -> 20 dB
    assert torch.allclose(sr.psnr(target, target), torch.tensor([100.0, 100.0]))       # capped, not inf
    block = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(2, 2)[None, None]
    assert torch.equal(sr.shrink(block), torch.full((1, 1, 2, 2), 0.5))
    x = sr.to_tensor(np.full((1, 2, 2, 3), 255, np.uint8))
    assert x.shape == (1, 3, 2, 2) and float(x.max()) == 1.0


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="transposed, resize_conv, pixel_shuffle"):
        sr.make_upsampler("bicubic", 4, 3)
    with pytest.raises(ValueError, match="uint8"):
        sr.to_tensor(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="not divisible"):
        sr.shrink(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match="shapes differ"):
        sr.psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        sr.SuperResolutionNet("transposed")(torch.zeros(1, 1, 16, 16))


def test_evaluate_scores_the_bilinear_baseline_and_training_beats_it():
    images = _smooth_images()
    target = sr.to_tensor(images)
    assert sr.evaluate_sr(None, images) == pytest.approx(float(sr.psnr(sr.bilinear(sr.shrink(target)), target).mean()))
    torch.manual_seed(0)
    net = sr.SuperResolutionNet("pixel_shuffle", width=8)
    losses = sr.train_sr(net, images, steps=150, batch_size=16, lr=3e-3, seed=0)
    assert len(losses) == 150 and np.mean(losses[-20:]) < np.mean(losses[:20])
    assert sr.evaluate_sr(net, images) > sr.evaluate_sr(None, images)


def test_checkerboard_spread_sees_a_2x2_pattern_and_nothing_else():
    flat = torch.zeros(3, 32, 32)
    assert sr.checkerboard_spread(flat) == 0.0
    board = flat.clone()
    board[:, ::2, ::2] = 0.3                      # one sub-pixel position of every block is off by 0.3
    assert sr.checkerboard_spread(board) == pytest.approx(0.3)
    ramp = torch.linspace(0, 1, 32).repeat(3, 32, 1)   # smooth change: the phases differ by one step at most
    assert sr.checkerboard_spread(ramp) < 1 / 31 + 1e-6


def test_comparison_figure_has_a_row_per_method_and_a_column_per_image():
    images = _smooth_images(3)
    nets = {k: sr.SuperResolutionNet(k, width=4) for k in sr.UPSAMPLERS}
    fig = sr.comparison_figure(nets, images, crop=16)
    assert len(fig.axes) == (2 + 3 + 1) * 3
    assert [fig.axes[i * 3].get_ylabel() for i in range(6)] == ["input 16x16", "bilinear", *sr.UPSAMPLERS, "original 32x32"]


def test_smooth_bump_is_one_at_the_centre_and_the_same_in_every_channel():
    x = sr.smooth_bump(16, channels=8)
    assert x.shape == (1, 8, 16, 16)
    assert torch.equal(x[0, 0], x[0, 7])
    assert torch.isclose(x[0, 0, 0, 0], torch.exp(torch.tensor(-4.0)))           # a corner: r^2 = 2
    odd = sr.smooth_bump(5, channels=1)
    assert odd[0, 0, 2, 2] == 1.0 and odd.max() == 1.0                         # the centre pixel of an odd grid
    assert torch.equal(odd[0, 0], odd[0, 0].flip(0)) and torch.equal(odd[0, 0], odd[0, 0].T)
    with pytest.raises(ValueError, match="size must be at least 2"):
        sr.smooth_bump(1)
