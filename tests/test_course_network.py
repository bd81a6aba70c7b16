"""The course network (CifarNet) against the assignment's rules, one test per rule, with every
expected number derived from the closed forms (parameters) or the receptive-field recurrence."""
from dataclasses import replace

import pytest
import torch
from torch import nn

from course_utils import receptive_field
from course_utils.arithmetic import conv_macs, conv_params, receptive_field_of_stack
from course_utils.inspection import count_macs
from course_utils.layers import DepthwiseSeparableConv2d
from course_utils.models import DEEP, FULLRES, HYBRID, RES20, WIDE, WIDER, CifarNet, CifarNetConfig, CifarNetV1, count_parameters, get_model

from conftest import conv_bn, separable

CFG = CifarNetConfig()
#: Every rule holds for the course network, for the long recipe's (``cifarnet_res20``: ResNet-20's shape,
#: standard convs in C2 and C3), for its network until 2026-12-04 (``cifarnet_wide``) and for the shapes
#: tried against that one (``cifarnet_deep``: more residual blocks per stage; ``cifarnet_wider``: more
#: width at 16×16; ``cifarnet_fullres``: more convolutions at 32×32), and for the course network with standard
#: convs in C3 (``cifarnet_hybrid``, screened for the ten-minute stretch).
NETS = {"cifarnet": CFG, "cifarnet_wide": CifarNetConfig(**WIDE), "cifarnet_deep": CifarNetConfig(**DEEP),
        "cifarnet_wider": CifarNetConfig(**WIDER), "cifarnet_fullres": CifarNetConfig(**FULLRES),
        "cifarnet_res20": CifarNetConfig(**RES20), "cifarnet_hybrid": CifarNetConfig(**HYBRID)}
each_net = pytest.mark.parametrize("name", sorted(NETS))


def expected_parameters(c=CFG):
    b2, b3, b4 = c.blocks
    conv = {stage: conv_bn if stage in c.standard_stages else separable for stage in ("c2", "c3", "c4")}
    return (conv_bn(3, c.stem) + conv_bn(c.stem, c.c1)                       # C1
            + 2 * c.stem_blocks * conv_bn(c.stem, c.stem)                    # C1's residual blocks at 32x32
            + 2 * conv_bn(c.c1, c.c1)                                        # C2: residual(conv, dilated conv)
            + 2 * (b2 - 1) * conv["c2"](c.c1, c.c1)                          # C2's further blocks
            + conv["c3"](c.c1, c.c3) + 2 * b3 * conv["c3"](c.c3, c.c3)       # C3
            + conv["c4"](c.c3, c.c4) + 2 * b4 * conv["c4"](c.c4, c.c4)       # C4
            + c.c4 * c.num_classes + c.num_classes)                          # linear head


def expected_macs(c=CFG):
    def sep(cin, cout, size):
        return conv_macs(cin, cin, 3, size, groups=cin) + conv_macs(cin, cout, 1, size)

    def full(cin, cout, size):
        return conv_macs(cin, cout, 3, size)
    conv = {stage: full if stage in c.standard_stages else sep for stage in ("c2", "c3", "c4")}
    b2, b3, b4 = c.blocks
    s3 = 16 // c.c3_stride                                                   # C3's map side; C4's is half of it
    return (conv_macs(3, c.stem, 3, 32) + 2 * c.stem_blocks * conv_macs(c.stem, c.stem, 3, 32)
            + conv_macs(c.stem, c.c1, 3, 16) + 2 * conv_macs(c.c1, c.c1, 3, 16)
            + 2 * (b2 - 1) * conv["c2"](c.c1, c.c1, 16)
            + conv["c3"](c.c1, c.c3, s3) + 2 * b3 * conv["c3"](c.c3, c.c3, s3)
            + conv["c4"](c.c3, c.c4, s3 // 2) + 2 * b4 * conv["c4"](c.c4, c.c4, s3 // 2)
            + c.c4 * c.num_classes)


def expected_receptive_field(c=CFG):
    # the longest path: every residual branch (the skips are shorter); a separable conv is its
    # depthwise k x k (stride, dilation) followed by a 1x1
    b2, b3, b4 = c.blocks
    block = [(3, 1), (1, 1), (3, 1), (1, 1)]                  # a residual block of two separable convs
    layers = ([(3, 1)] + 2 * c.stem_blocks * [(3, 1)] + [(3, 2), (3, 1), (3, 1, c.c2_dilation)] + (b2 - 1) * block
              + [(3, c.c3_stride), (1, 1)] + b3 * block + [(3, 2), (1, 1)] + b4 * block)
    return int(receptive_field_of_stack(layers)[-1][0])


@each_net
def test_rule_fewer_than_200k_parameters(name):
    model = get_model(name)
    assert count_parameters(model) == expected_parameters(NETS[name])
    assert count_parameters(model) < 200_000


@each_net
def test_rule_no_max_pooling(name):
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in get_model(name).modules())
    # and the rule's test can fail: the max-pool variant is caught
    assert any(isinstance(m, nn.MaxPool2d) for m in get_model(name, downsample="maxpool").modules())


@each_net
def test_rule_a_depthwise_separable_convolution(name):
    model = get_model(name)
    blocks = [m for m in model.modules() if isinstance(m, DepthwiseSeparableConv2d)]
    assert blocks
    dw = blocks[0].dw[0]
    assert dw.groups == dw.in_channels == dw.out_channels > 1 and blocks[0].pw[0].kernel_size == (1, 1)
    assert not any(isinstance(m, DepthwiseSeparableConv2d) for m in get_model(name, separable=False).modules())


@each_net
def test_rule_a_dilated_convolution(name):
    dilations = [m.dilation[0] for m in get_model(name).modules() if isinstance(m, nn.Conv2d)]
    assert max(dilations) == NETS[name].c2_dilation == 2
    assert max(m.dilation[0] for m in get_model(name, c2_dilation=1).modules() if isinstance(m, nn.Conv2d)) == 1


@each_net
def test_rule_global_average_pooling_then_one_linear_layer(name):
    model = get_model(name)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and model.pool.output_size in (1, (1, 1))
    assert [type(m) for m in model.modules() if isinstance(m, nn.Linear)] == [nn.Linear]
    assert model.head.in_features == NETS[name].c4
    # fully convolutional up to the pooling: another input size gives the same output shape
    assert model(torch.randn(2, 3, 40, 40)).shape == (2, 10)


@each_net
def test_rule_receptive_field_over_44(name):
    rf = receptive_field(get_model(name))
    assert rf.final == expected_receptive_field(NETS[name]) == {"cifarnet": 77, "cifarnet_wide": 77, "cifarnet_deep": 109, "cifarnet_wider": 77,
                                                                 "cifarnet_fullres": 85, "cifarnet_res20": 105,
                                                                 "cifarnet_hybrid": 77}[name]
    assert rf.final > 44


@each_net
def test_stages_and_their_resolutions(name):
    model, c = get_model(name).eval(), NETS[name]
    x = torch.randn(1, 3, 32, 32)
    sizes = []
    for stage in (model.c1, model.c2, model.c3, model.c4):
        x = stage(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(c.c1, 16, 16), (c.c1, 16, 16), (c.c3, 8, 8), (c.c4, 4, 4)]


def separable_convs_per_stage(model) -> dict[str, int]:
    """How many depthwise-separable convs each of C2, C3 and C4 holds."""
    return {stage: sum(isinstance(m, DepthwiseSeparableConv2d) for m in getattr(model, stage).modules())
            for stage in ("c2", "c3", "c4")}


def test_hybrid_is_cifarnet_with_standard_convs_in_c3_only():
    model, c = get_model("cifarnet_hybrid"), NETS["cifarnet_hybrid"]
    # one factor against the course network: C3's convolutions (and its width, to stay under budget)
    assert {f: getattr(c, f) for f in ("c3", "standard_stages")} == {"c3": 48, "standard_stages": ("c3",)}
    assert replace(c, c3=CFG.c3, standard_stages=()) == CFG
    assert count_parameters(model) == expected_parameters(c) == 199_434
    assert count_macs(model) == expected_macs(c) == 11_730_880
    assert separable_convs_per_stage(model) == {"c2": 0, "c3": 0, "c4": 3}


def test_res20_puts_standard_convs_in_c2_and_c3_and_keeps_c4_separable():
    model, c = get_model("cifarnet_res20"), NETS["cifarnet_res20"]
    assert c.standard_stages == ("c2", "c3") and (c.stem, c.stem_blocks, c.c1, c.c3, c.c4) == (16, 3, 32, 64, 96)
    assert count_parameters(model) == expected_parameters(c) == 196_314
    assert count_macs(model) == expected_macs(c) == 36_262_848
    assert separable_convs_per_stage(model) == {"c2": 0, "c3": 0, "c4": 3}
    # C1: the stem and three residual blocks at 32x32, as ResNet-20's first stage
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.c1.modules()) == 1 + 6 + 1


def test_c3_stride_1_keeps_c3_at_16x16_with_the_same_weights():
    base, c = get_model("cifarnet_fullres"), CifarNetConfig(**{**FULLRES, "c3_stride": 1})
    model = get_model("cifarnet_fullres", c3_stride=1).eval()
    assert count_parameters(model) == count_parameters(base) == expected_parameters(c)
    assert count_macs(model) == expected_macs(c) > count_macs(base)
    x = torch.randn(1, 3, 32, 32)
    assert model.c3(model.c2(model.c1(x))).shape[-1] == 16 and model(x).shape == (1, 10)
    assert receptive_field(model).final == expected_receptive_field(c) < receptive_field(base).final


@pytest.mark.parametrize("setting, message", [({"standard_stages": "c2"}, "standard_stages must be a tuple"),
                                              ({"standard_stages": ("c1",)}, "among 'c2', 'c3', 'c4'"),
                                              ({"c3_stride": 3}, "c3_stride must be 2")])
def test_bad_stage_settings_name_the_problem(setting, message):
    with pytest.raises(ValueError, match=message):
        CifarNetConfig(**setting)


def test_compute_is_a_fraction_of_v1():
    new, old = count_macs(CifarNet()), count_macs(CifarNetV1())
    assert new == expected_macs()
    assert new < old / 3  # 9.4 M against 37.5 M multiply-accumulates per image
    # and the full-resolution work is one narrow conv: under a tenth of the total
    assert conv_macs(3, CFG.stem, 3, 32) < new / 10


def test_the_wide_net_moves_compute_to_the_pixels_and_stays_under_the_parameter_budget():
    wide, course = get_model("cifarnet_wide"), CifarNet()
    c = NETS["cifarnet_wide"]
    assert (c.stem, c.c1, c.c3, c.c4) == (32, 64, 96, 160)
    assert count_macs(wide) == expected_macs(c) == 27_324_480
    assert count_parameters(wide) == 195_146
    # the work at 16x16 (C1's stride-2 conv, C2's two convs) grows 4x, the stem's at 32x32 2x; the whole net 2.6x
    at_16 = [conv_macs(x.stem, x.c1, 3, 16) + 2 * conv_macs(x.c1, x.c1, 3, 16) for x in (c, CFG)]
    assert at_16[0] == 4 * at_16[1] and conv_macs(3, c.stem, 3, 32) == 2 * conv_macs(3, CFG.stem, 3, 32)
    assert 2.5 < count_macs(wide) / count_macs(course) < 2.7
    assert get_model("cifarnet_wide", c4=128).head.in_features == 128     # its widths can be overridden


def test_output_is_finite_and_every_parameter_learns():
    model = CifarNet()
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_the_deep_net_adds_residual_blocks_where_its_config_says_and_stays_under_the_parameter_budget():
    deep, c = get_model("cifarnet_deep"), NETS["cifarnet_deep"]
    assert (c.stem, c.c1, c.c3, c.c4, c.blocks) == (32, 56, 96, 128, (3, 2, 1))
    assert count_parameters(deep) == expected_parameters(c) == 188_322
    assert count_macs(deep) == expected_macs(c) == 26_921_216
    # C2: the full-conv block with the dilated conv, then two blocks of separable convs; C3: the
    # stride-2 separable conv, then two blocks; C4: the stride-2 conv, then one block
    kinds = [[type(m).__name__ for m in stage] for stage in (deep.c2, deep.c3, deep.c4)]
    assert kinds == [["Residual"] * 3, ["DepthwiseSeparableConv2d"] + ["Residual"] * 2,
                     ["DepthwiseSeparableConv2d", "Residual"]]
    assert all(isinstance(m, DepthwiseSeparableConv2d) for block in deep.c2[1:] for m in block.body)
    # the default, (1, 1, 1), is the course network's one residual block per stage
    assert CifarNetConfig().blocks == (1, 1, 1)
    assert [[type(m).__name__ for m in stage] for stage in (CifarNet().c2, CifarNet().c3, CifarNet().c4)] == [
        ["Residual"], ["DepthwiseSeparableConv2d", "Residual"], ["DepthwiseSeparableConv2d", "Residual"]]


def test_the_wider_net_moves_weights_from_the_separable_stages_to_16x16_and_stays_under_the_budget():
    wider, c = get_model("cifarnet_wider"), NETS["cifarnet_wider"]
    assert (c.stem, c.c1, c.c3, c.c4, c.blocks) == (32, 80, 80, 96, (1, 1, 1))
    assert count_parameters(wider) == expected_parameters(c) == 192_618
    assert count_macs(wider) == expected_macs(c) == 38_099_136
    # the same layers as cifarnet_wide, only the widths differ: C2's two full 3x3 convs hold 80x80x9 each
    wide = get_model("cifarnet_wide")
    assert [type(m).__name__ for m in wider.modules()] == [type(m).__name__ for m in wide.modules()]
    c2 = [m for m in wider.c2.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(m.weight.shape) for m in c2] == [(80, 80, 3, 3)] * 2 and c2[1].dilation == (2, 2)
    assert wider.head.in_features == 96


def test_the_fullres_net_adds_convolutions_at_32x32_before_wide_s_stages_and_stays_under_the_budget():
    full, c = get_model("cifarnet_fullres"), NETS["cifarnet_fullres"]
    assert (c.stem, c.stem_blocks, c.c1, c.c3, c.c4, c.blocks) == (16, 2, 64, 96, 160, (1, 1, 1))
    assert count_parameters(full) == expected_parameters(c) == 194_810
    assert count_macs(full) == expected_macs(c) == 33_960_000
    # C1: the stem conv, two residual blocks of two 16-channel 3x3 convs, the stride-2 conv: five convs
    # at 32x32 (the stride-2 one reads 32x32); C2, C3 and C4 are cifarnet_wide's, weight for weight
    assert [type(m).__name__ for m in full.c1] == ["ConvBNAct", "Residual", "Residual", "ConvBNAct"]
    c1 = [m for m in full.c1.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(m.weight.shape) for m in c1] == [(16, 3, 3, 3)] + [(16, 16, 3, 3)] * 4 + [(64, 16, 3, 3)]
    assert [m.stride for m in c1] == [(1, 1)] * 5 + [(2, 2)]
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("c1.")}
    assert shapes(full) == shapes(get_model("cifarnet_wide"))
    # the default, 0, leaves the course network's C1 as it was: the stem conv, then the stride-2 conv
    assert CifarNetConfig().stem_blocks == 0
    assert [type(m).__name__ for m in CifarNet().c1] == ["ConvBNAct", "ConvBNAct"]
    # the blocks run at full resolution, and C1 still ends at 16x16
    x = full.c1[:3](torch.randn(1, 3, 32, 32))
    assert tuple(x.shape) == (1, 16, 32, 32) and tuple(full.c1(torch.randn(1, 3, 32, 32)).shape) == (1, 64, 16, 16)


@pytest.mark.parametrize("n", [-1, 1.0, True, "2", None])
def test_stem_blocks_must_be_a_count_of_zero_or_more(n):
    with pytest.raises(ValueError, match=r"stem_blocks must be a whole number of residual blocks at 32x32, 0 or more"):
        CifarNetConfig(stem_blocks=n)


@pytest.mark.parametrize("blocks", [(0, 1, 1), (1, 1), (1, 1, 1, 1), (1, 2.0, 1), (True, 1, 1), 3, "111"])
def test_blocks_must_be_three_counts_of_one_or_more(blocks):
    with pytest.raises(ValueError, match=r"blocks must be three whole numbers of residual blocks \(C2, C3, C4\)"):
        CifarNetConfig(blocks=blocks)


def test_blocks_given_as_a_list_are_kept_as_a_tuple():
    # a config read back from a JSON run record has lists where tuples were
    assert CifarNetConfig(blocks=[2, 1, 1]).blocks == (2, 1, 1)
