"""The course network (CifarNet) against the assignment's rules, one test per rule, with every
expected number derived from the closed forms (parameters) or the receptive-field recurrence."""
import pytest
import torch
from torch import nn

from course_utils import receptive_field
from course_utils.arithmetic import conv_macs, conv_params, receptive_field_of_stack
from course_utils.inspection import count_macs
from course_utils.layers import DepthwiseSeparableConv2d
from course_utils.models import CifarNet, CifarNetConfig, CifarNetV1, count_parameters

from conftest import conv_bn, separable

CFG = CifarNetConfig()


def expected_parameters(c=CFG):
    return (conv_bn(3, c.stem) + conv_bn(c.stem, c.c1)                       # C1
            + 2 * conv_bn(c.c1, c.c1)                                        # C2: residual(conv, dilated conv)
            + separable(c.c1, c.c3) + 2 * separable(c.c3, c.c3)              # C3
            + separable(c.c3, c.c4) + 2 * separable(c.c4, c.c4)              # C4
            + c.c4 * c.num_classes + c.num_classes)                          # linear head


def expected_macs(c=CFG):
    def sep(cin, cout, size):
        return conv_macs(cin, cin, 3, size, groups=cin) + conv_macs(cin, cout, 1, size)
    return (conv_macs(3, c.stem, 3, 32) + conv_macs(c.stem, c.c1, 3, 16) + 2 * conv_macs(c.c1, c.c1, 3, 16)
            + sep(c.c1, c.c3, 8) + 2 * sep(c.c3, c.c3, 8) + sep(c.c3, c.c4, 4) + 2 * sep(c.c4, c.c4, 4)
            + c.c4 * c.num_classes)


def expected_receptive_field(c=CFG):
    # the longest path: every residual branch (the skips are shorter); a separable conv is its
    # depthwise k x k (stride, dilation) followed by a 1x1
    layers = [(3, 1), (3, 2), (3, 1), (3, 1, c.c2_dilation),
              (3, 2), (1, 1), (3, 1), (1, 1), (3, 1), (1, 1),
              (3, 2), (1, 1), (3, 1), (1, 1), (3, 1), (1, 1)]
    return int(receptive_field_of_stack(layers)[-1][0])


def test_rule_fewer_than_200k_parameters():
    model = CifarNet()
    assert count_parameters(model) == expected_parameters()
    assert count_parameters(model) < 200_000


def test_rule_no_max_pooling():
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in CifarNet().modules())
    # and the rule's test can fail: the max-pool variant is caught
    assert any(isinstance(m, nn.MaxPool2d) for m in CifarNet(CifarNetConfig(downsample="maxpool")).modules())


def test_rule_a_depthwise_separable_convolution():
    model = CifarNet()
    blocks = [m for m in model.modules() if isinstance(m, DepthwiseSeparableConv2d)]
    assert blocks
    dw = blocks[0].dw[0]
    assert dw.groups == dw.in_channels == dw.out_channels > 1 and blocks[0].pw[0].kernel_size == (1, 1)
    assert not any(isinstance(m, DepthwiseSeparableConv2d) for m in CifarNet(CifarNetConfig(separable=False)).modules())


def test_rule_a_dilated_convolution():
    dilations = [m.dilation[0] for m in CifarNet().modules() if isinstance(m, nn.Conv2d)]
    assert max(dilations) == CFG.c2_dilation == 2
    assert max(m.dilation[0] for m in CifarNet(CifarNetConfig(c2_dilation=1)).modules()
               if isinstance(m, nn.Conv2d)) == 1


def test_rule_global_average_pooling_then_one_linear_layer():
    model = CifarNet()
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and model.pool.output_size in (1, (1, 1))
    assert [type(m) for m in model.modules() if isinstance(m, nn.Linear)] == [nn.Linear]
    assert model.head.in_features == CFG.c4
    # fully convolutional up to the pooling: another input size gives the same output shape
    assert model(torch.randn(2, 3, 40, 40)).shape == (2, 10)


def test_rule_receptive_field_over_44():
    rf = receptive_field(CifarNet())
    assert rf.final == expected_receptive_field() == 77
    assert rf.final > 44


def test_stages_and_their_resolutions():
    model = CifarNet().eval()
    x = torch.randn(1, 3, 32, 32)
    sizes = []
    for stage in (model.c1, model.c2, model.c3, model.c4):
        x = stage(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(CFG.c1, 16, 16), (CFG.c1, 16, 16), (CFG.c3, 8, 8), (CFG.c4, 4, 4)]


def test_compute_is_a_fraction_of_v1():
    new, old = count_macs(CifarNet()), count_macs(CifarNetV1())
    assert new == expected_macs()
    assert new < old / 3  # 9.4 M against 37.5 M multiply-accumulates per image
    # and the full-resolution work is one narrow conv: under a tenth of the total
    assert conv_macs(3, CFG.stem, 3, 32) < new / 10


def test_output_is_finite_and_every_parameter_learns():
    model = CifarNet()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
