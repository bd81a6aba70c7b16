import numpy as np
import pytest
import torch
from torch import nn

from course_utils import blocks


def test_batchnorm_by_hand_equals_pytorch_in_training_mode():
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0])), bn.bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))
    x = torch.randn(6, 3, 4, 4) * 5 + 3
    assert torch.allclose(blocks.batchnorm_by_hand(x, bn), bn(x), atol=1e-5)
    # gamma = 1, beta = 0: every channel of the output has mean 0 and (biased) variance 1
    plain = blocks.batchnorm_by_hand(x, nn.BatchNorm2d(3))
    assert torch.allclose(plain.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(plain.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_running_statistics_follow_the_formula():
    bn = nn.BatchNorm2d(2, momentum=0.2)
    batches = [torch.randn(4, 2, 3, 3) + i for i in range(5)]
    for b in batches:
        bn(b)
    mean, var = blocks.running_stats_after(batches, momentum=0.2)
    assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, atol=1e-6)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_conv_stack_shapes_and_gradients(residual, batchnorm):
    torch.manual_seed(0)
    net = blocks.ConvStack(5, width=4, batchnorm=batchnorm, residual=residual)
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == (6 if batchnorm else 0)
    norms = blocks.gradient_norms(net, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert norms.shape == (5,) and (norms > 0).all()


def test_the_skip_evens_out_the_gradients_of_a_deep_stack():
    """Twenty conv + BatchNorm layers at initialisation: the plain stack's weight gradients differ by
    more than an order of magnitude from layer to layer; with skips they stay within a few times each
    other (the effect notebook 10 shows)."""
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    spread = {}
    for residual in (False, True):
        torch.manual_seed(0)
        g = blocks.gradient_norms(blocks.ConvStack(20, width=16, residual=residual), x, y)
        spread[residual] = g.max() / g.min()
    assert spread[False] > 10 and spread[False] > 3 * spread[True]


def test_train_steps_learns_a_separable_task():
    torch.manual_seed(0)
    labels = torch.arange(64) % 2
    images = torch.randn(64, 3, 32, 32) * 0.1
    images[labels == 1, 0] += 1.0                      # class 1: a brighter red channel
    losses = blocks.train_steps(blocks.ConvStack(2, width=4), images, labels, steps=60, batch_size=16, lr=0.05)
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    with pytest.raises(ValueError, match="steps"):
        blocks.train_steps(blocks.ConvStack(1), images, labels, steps=0)
    with pytest.raises(ValueError, match="depth and width"):
        blocks.ConvStack(0)


def test_shift_smooth_and_normalise():
    x = torch.arange(4.0).view(1, 1, 1, 4)
    assert blocks.shift_images(x, 1).flatten().tolist() == [0.0, 0.0, 1.0, 2.0]
    assert blocks.shift_images(x, -2).flatten().tolist() == [2.0, 3.0, 0.0, 0.0]
    assert torch.equal(blocks.shift_images(x, 0), x)
    steps, means = blocks.smooth([1, 2, 3, 4], window=2)
    assert means.tolist() == [1.5, 2.5, 3.5] and steps.tolist() == [2, 3, 4]   # each mean at its window's last step
    steps, means = blocks.smooth([5.0, 7.0], window=20)
    assert steps.tolist() == [1, 2] and means.tolist() == [5.0, 7.0]
    images = np.zeros((2, 2, 2, 3), np.uint8)
    images[..., 0] = 255
    t = blocks.normalized_tensor(images, (0.5, 0.0, 0.0), (0.5, 1.0, 1.0))
    assert t.shape == (2, 3, 2, 2) and torch.allclose(t[:, 0], torch.ones(2, 2, 2))


def test_plot_losses_draws_each_smoothed_curve_and_the_chance_line():
    losses = {"a": [3.0] * 30, "b": list(np.linspace(2.0, 1.0, 30))}
    fig = blocks.plot_losses(losses, "two runs", window=10, classes=10)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"a", "b", "chance (ln 10)"}
    steps, means = blocks.smooth(losses["b"], 10)
    assert np.allclose(lines["b"].get_xdata(), steps) and np.allclose(lines["b"].get_ydata(), means)
    assert lines["b"].get_xdata()[0] == 10                         # each curve starts where its first window ends
    assert np.allclose(lines["chance (ln 10)"].get_ydata(), np.log(10))
    assert "mean of the 10 steps" in ax.get_xlabel() and ax.get_title() == "two runs"
    assert len(blocks.plot_losses(losses, "no chance line").axes[0].get_lines()) == 2
    import matplotlib.pyplot as plt
    plt.close("all")
