import pytest
import torch
from torch import nn

from course_utils import conv_output_size
from course_utils.arithmetic import conv_params
from course_utils.layers import (ConvBNAct, DepthwiseSeparableConv2d, PixelShuffleUpsample, PointwiseConv2d,
                                 ResizeConvUpsample, TransposedUpsample, icnr_, transposed_conv_as_conv, zero_insert)
from course_utils.models import count_parameters


@pytest.mark.parametrize("cin,cout,k,stride,dilation", [(3, 16, 3, 1, 1), (16, 32, 3, 2, 1), (8, 8, 5, 1, 2), (4, 6, 1, 1, 1)])
def test_conv_bn_act_shape_and_parameters(cin, cout, k, stride, dilation):
    layer = ConvBNAct(cin, cout, k, stride, dilation=dilation)
    out = layer(torch.randn(2, cin, 17, 17))
    pad = dilation * (k - 1) // 2
    assert out.shape[-1] == conv_output_size(17, k, stride, pad, dilation)
    assert count_parameters(layer) == conv_params(cin, cout, k, bias=False) + 2 * cout  # conv + BN scale/shift


@pytest.mark.parametrize("cin,cout,stride,dilation", [(16, 32, 1, 1), (32, 64, 2, 1), (8, 8, 1, 2)])
def test_separable_shape_and_parameters(cin, cout, stride, dilation):
    layer = DepthwiseSeparableConv2d(cin, cout, stride=stride, dilation=dilation)
    out = layer(torch.randn(2, cin, 16, 16))
    assert out.shape == (2, cout, conv_output_size(16, 3, stride, dilation, dilation), conv_output_size(16, 3, stride, dilation, dilation))
    assert count_parameters(layer) == 9 * cin + 2 * cin + cin * cout + 2 * cout
    assert layer.dw[0].groups == cin


def test_separable_equals_a_standard_conv_with_a_factored_kernel():
    torch.manual_seed(0)
    layer = DepthwiseSeparableConv2d(6, 10, norm_layer=None, act_layer=None)
    dw, pw = layer.dw[0], layer.pw[0]
    x = torch.randn(2, 6, 9, 9)
    weight = pw.weight[:, :, 0, 0, None, None] * dw.weight[:, 0][None]
    bias = pw.bias + pw.weight[:, :, 0, 0] @ dw.bias
    assert torch.allclose(layer(x), nn.functional.conv2d(x, weight, bias, padding=1), atol=1e-5)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_matches_a_1x1_convolution_values_and_gradients(channels_last, bias):
    torch.manual_seed(0)
    layer = PointwiseConv2d(7, 5, bias=bias)
    x = torch.randn(3, 7, 6, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = layer(x)
    expected = nn.functional.conv2d(x, layer.weight, layer.bias)
    assert out.shape == (3, 5, 6, 4)
    assert torch.allclose(out, expected, atol=1e-5)
    # the matmul path (channels-last) hands the next layer a channels-last batch, as the convolution does
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, layer.weight] + ([layer.bias] if bias else []), grad)
    want = torch.autograd.grad(expected, [x, layer.weight] + ([layer.bias] if bias else []), grad)
    for g, w in zip(got, want):
        assert g.shape == w.shape and torch.allclose(g, w, atol=1e-4)


def test_pointwise_conv_is_a_drop_in_conv2d():
    """Same parameters and state_dict keys as nn.Conv2d(.., 1): a checkpoint loads into either."""
    conv, pw = nn.Conv2d(8, 4, 1), PointwiseConv2d(8, 4)
    assert isinstance(pw, nn.Conv2d) and pw.kernel_size == (1, 1)
    assert {k: v.shape for k, v in pw.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    pw.load_state_dict(conv.state_dict())
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(pw(x), conv(x), atol=1e-5)


def test_pointwise_conv_uses_the_matmul_only_with_gradients_on_a_channels_last_cpu_batch(monkeypatch):
    from course_utils.layers import pointwise as module

    layer = PointwiseConv2d(8, 4)
    calls = []
    linear = module.F.linear
    monkeypatch.setattr(module.F, "linear", lambda *a: calls.append(1) or linear(*a))
    x = torch.randn(2, 8, 5, 5)
    layer(x.contiguous(memory_format=torch.channels_last))
    assert len(calls) == 1
    layer(x)                                             # NCHW: the convolution
    with torch.no_grad():                                # no backward pass follows: the convolution
        layer(x.contiguous(memory_format=torch.channels_last))
    layer.matmul = False                                 # switched off: the convolution
    layer(x.contiguous(memory_format=torch.channels_last))
    assert len(calls) == 1


def test_use_pointwise_swaps_exactly_the_plain_1x1_convs_and_keeps_the_results():
    from course_utils.layers import use_pointwise
    from course_utils.models import CifarNet

    torch.manual_seed(0)
    model, x = CifarNet().eval(), torch.randn(2, 3, 32, 32)
    before = model(x)
    assert use_pointwise(model) is model
    swapped = [n for n, m in model.named_modules() if isinstance(m, PointwiseConv2d)]
    assert len(swapped) == 6 and all(n.endswith("pw.0") for n in swapped)   # three separable convs in C3, three in C4
    assert torch.allclose(model(x), before, atol=1e-5)
    assert type(use_pointwise(nn.Conv2d(4, 4, 1, stride=2))) is nn.Conv2d    # strided: left alone


def test_the_course_layers_keep_plain_convolutions():
    """PointwiseConv2d is there to be timed (notebook 03), not a default: measured, it was not faster
    for every shape."""
    assert type(ConvBNAct(8, 16, 1)[0]) is nn.Conv2d
    assert type(DepthwiseSeparableConv2d(8, 16).pw[0]) is nn.Conv2d


@pytest.mark.parametrize("scale,kernel", [(2, None), (2, 3), (2, 2), (3, None), (3, 4), (4, None)])
def test_transposed_upsample_scales_exactly(scale, kernel):
    layer = TransposedUpsample(4, 3, scale, kernel)
    conv = layer.conv
    out = layer(torch.randn(1, 4, 7, 5))
    assert out.shape == (1, 3, 7 * scale, 5 * scale)
    assert out.shape[-1] == conv_output_size(5, conv.kernel_size[0], scale, conv.padding[0], transposed=True,
                                             output_padding=conv.output_padding[0])
    assert count_parameters(layer) == 4 * 3 * conv.kernel_size[0] ** 2 + 3


@pytest.mark.parametrize("k,s,p,op,d", [(3, 2, 1, 1, 1), (4, 2, 1, 0, 1), (5, 3, 2, 2, 1), (3, 1, 1, 0, 1), (3, 2, 2, 1, 2)])
def test_transposed_conv_is_zero_insertion_plus_conv(k, s, p, op, d):
    torch.manual_seed(1)
    layer = nn.ConvTranspose2d(3, 5, k, s, p, op, dilation=d)
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(layer(x), transposed_conv_as_conv(x, layer), atol=1e-5)


def test_zero_insert():
    x = torch.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    assert zero_insert(x, 3)[0, 0].tolist() == [[1, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0], [3, 0, 0, 4]]


def test_pixel_shuffle_upsample_shape_and_parameters():
    layer = PixelShuffleUpsample(8, 4, scale=3)
    assert layer(torch.randn(2, 8, 5, 5)).shape == (2, 4, 15, 15)
    assert count_parameters(layer) == conv_params(8, 4 * 9, 3)
    assert ResizeConvUpsample(8, 4, 2)(torch.randn(1, 8, 5, 5)).shape == (1, 4, 10, 10)


@pytest.mark.parametrize("scale", [2, 3])
def test_icnr_output_is_checkerboard_free(scale):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 7, 7)
    out = PixelShuffleUpsample(6, 3, scale, icnr=True)(x)
    blocks = out.unfold(-2, scale, scale).unfold(-2, scale, scale)  # (N, C, 7, 7, s, s)
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks), atol=1e-6)
    plain = PixelShuffleUpsample(6, 3, scale, icnr=False)(x)
    blocks = plain.unfold(-2, scale, scale).unfold(-2, scale, scale)
    assert not torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks), atol=1e-3)


def test_icnr_rejects_a_wrong_channel_count():
    with pytest.raises(ValueError, match="not a multiple of scale²=4"):
        icnr_(torch.empty(6, 3, 3, 3), 2)


def test_impossible_configurations_name_the_layer_and_numbers():
    with pytest.raises(ValueError, match="ConvBNAct: in_ch=6 and out_ch=8 must both be divisible by groups=4"):
        ConvBNAct(6, 8, groups=4)
    with pytest.raises(ValueError, match="ConvBNAct: a 5x5 kernel with dilation 2 spans 9 pixels, more than the 4x4 input padded by 0"):
        ConvBNAct(3, 8, 5, padding=0, dilation=2)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="ConvBNAct: built for 3 input channels, got 1"):
        ConvBNAct(3, 8)(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="TransposedUpsample: scale must be at least 2"):
        TransposedUpsample(3, 3, scale=1)
    with pytest.raises(ValueError, match="TransposedUpsample: kernel_size=2 is smaller than scale=3"):
        TransposedUpsample(3, 3, scale=3, kernel_size=2)
    with pytest.raises(ValueError, match="PixelShuffleUpsample: scale must be a positive integer, got 0"):
        PixelShuffleUpsample(3, 3, scale=0)
    with pytest.raises(ValueError, match="DepthwiseSeparableConv2d: out_ch must be a positive integer, got -4"):
        DepthwiseSeparableConv2d(3, -4)
    with pytest.raises(ValueError, match="PixelShuffleUpsample: built for 4 input channels, got 3"):
        PixelShuffleUpsample(4, 2)(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize("k", [3, 4, 5, 6])
def test_resize_conv_keeps_the_size_for_odd_and_even_kernels(k):
    layer = ResizeConvUpsample(4, 2, 2, kernel_size=k)
    assert layer(torch.randn(1, 4, 5, 7)).shape == (1, 2, 10, 14)
    assert count_parameters(layer) == k * k * 4 * 2 + 2
    # the resize is nearest-neighbour and the padding replicates: a constant input stays constant
    nn.init.constant_(layer.conv.weight, 1.0), nn.init.zeros_(layer.conv.bias)
    out = layer(torch.ones(1, 4, 5, 5))
    assert torch.allclose(out, torch.full_like(out, 4.0 * k * k))
