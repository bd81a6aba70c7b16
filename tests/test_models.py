import pytest
import torch
from torch import nn

from course_utils import receptive_field, stages, summary
from course_utils.layers import ConvBNAct, DepthwiseSeparableConv2d, Residual
from course_utils.models import MODELS, BaselineNet, CifarNet, CifarNetConfig, count_parameters, get_model


def test_cifarnet_meets_the_assignment():
    model = CifarNet()
    assert count_parameters(model) < 200_000
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert any(c.dilation[0] > 1 for c in convs), "needs a dilated convolution"
    assert any(isinstance(m, DepthwiseSeparableConv2d) for m in model.modules())
    assert any(c.groups == c.in_channels > 1 for c in convs), "needs a depthwise convolution"
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    rf = receptive_field(model)
    assert rf.final > 44
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_cifarnet_backward_reaches_every_parameter():
    model = CifarNet()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_baseline_matches_the_original_table():
    model = BaselineNet()
    assert count_parameters(model) == 112_966   # the course's original torchsummary total
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    # 3, 7 (5x5), 8 (pool), 8, 12, 14 (pool), 22, 30, 38, 38, 42 (pool), 58
    assert [r.rf for r in receptive_field(model) if not r.global_pool] == [3, 7, 8, 8, 12, 14, 22, 30, 38, 38, 42, 58]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_wrong_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="expects 3 input channels, got 1"):
        CifarNet()(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="unsqueeze"):
        BaselineNet()(torch.randn(3, 32, 32))


def test_get_model():
    assert isinstance(get_model("CifarNet"), CifarNet)
    with pytest.raises(ValueError, match="choose one of: baseline, cifarnet, cifarnet10, cifarnet_cbam, cifarnet_deep, cifarnet_eca, cifarnet_fullres, cifarnet_hybrid, cifarnet_res20, cifarnet_se, cifarnet_v1, cifarnet_wide, cifarnet_wider$"):
        get_model("resnet50")


def test_receptive_field_follows_residual_branches():
    # the skip path has RF 3, the branch 3 + 2 + 2 = 7: where they meet, the larger one counts
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Residual(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.AdaptiveAvgPool2d(1))
    rf = receptive_field(model)
    assert [r.rf for r in rf] == [3, 5, 7, 9, 9 + 15 * 2]
    assert [r.name for r in rf][:3] == ["0", "1.body.0", "1.body.1"]
    assert rf[-1].global_pool and rf.final == 9
    assert rf[3].output_size == (16, 16) and rf[3].jump == 2
    assert "final receptive field: 9 pixels" in str(rf)


def test_receptive_field_leaves_model_untouched():
    model = CifarNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    receptive_field(model)
    summary(model, print_table=False)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_summary_on_cpu_counts_parameters(capsys):
    info = summary(CifarNet(), (3, 32, 32))
    # the true count (torchsummary's rows double-count shared modules), the number test_course_network derives
    assert info["total_params"] == count_parameters(CifarNet()) == 191_050
    assert f"Total params: {count_parameters(CifarNet()):,}" in capsys.readouterr().out


def test_layers_reject_impossible_configurations():
    with pytest.raises(ValueError, match="ConvBNAct: in_ch=10 and out_ch=16 must both be divisible by groups=4"):
        ConvBNAct(10, 16, groups=4)
    with pytest.raises(ValueError, match="DepthwiseSeparableConv2d: stride must be a positive integer"):
        DepthwiseSeparableConv2d(8, 16, stride=0)


def test_separable_parameter_count():
    layer = DepthwiseSeparableConv2d(32, 64, norm_layer=None)  # no norm: convs carry biases
    assert count_parameters(layer) == (9 * 32 + 32) + (32 * 64 + 64)


@pytest.mark.parametrize("name, smallest", [
    # CifarNet, v1, the attention variants and CifarNet10: three stride-2 layers, all padded: 2**3.
    ("cifarnet", 8), ("cifarnet_wide", 8), ("cifarnet_deep", 8), ("cifarnet_wider", 8), ("cifarnet_fullres", 8),
    ("cifarnet_v1", 8), ("cifarnet_se", 8), ("cifarnet_eca", 8), ("cifarnet_cbam", 8),
    ("cifarnet10", 8),
    # BaselineNet's unpadded layers: 18 -> 3x3 p1 18 -> 5x5 p1 16 -> pool 8 -> pool 4 -> 3x3 p0 2 -> pool 1;
    # from 17 the last pool would get a 1x1 map.
    ("baseline", 18),
])
def test_models_take_their_smallest_input_and_reject_anything_smaller(name, smallest):
    from course_utils.models import min_input_size

    model = get_model(name)
    assert min_input_size(model) == smallest
    model.train()
    assert model(torch.zeros(2, 3, smallest, smallest)).shape == (2, 10)
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest} pixels.*got {smallest - 1}x{smallest}"):
        model(torch.zeros(1, 3, smallest - 1, smallest))


def test_get_model_passes_settings_to_every_model_and_names_unknown_ones():
    assert get_model("cifarnet", c4=160).head.in_features == 160
    se = get_model("cifarnet_se", dropout=0.3)
    assert se.dropout.p == 0.3 and se.head.in_features == 144           # the variant's own width is kept
    assert get_model("cifarnet_cbam", c4=128).head.in_features == 128   # and can be overridden
    assert get_model("baseline", num_classes=4)(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    assert get_model("cifarnet10", num_classes=7)(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match=r"cifarnet_eca: unknown setting\(s\) \['width'\]; it takes: c1, c2"):
        get_model("cifarnet_eca", width=3)
    with pytest.raises(ValueError, match=r"baseline: unknown setting\(s\) \['c4'\]; it takes: num_classes"):
        get_model("baseline", c4=3)


def test_a_channels_last_batch_is_told_to_permute():
    with pytest.raises(ValueError, match=r"looks like channels-last images \(N, H, W, 3\); permute to \(N, C, H, W\)"):
        CifarNet()(torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match="expects 3 input channels, got 1"):   # grayscale is still grayscale
        CifarNet()(torch.zeros(2, 1, 32, 32))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stages_add_up_to_the_models_parameters_and_macs(name):
    from course_utils.inspection import count_macs

    model = MODELS[name]()
    table = stages(model, print_table=False)
    assert [r.name for r in table] == [n for n, _ in model.named_children()]
    assert sum(r.params for r in table) == count_parameters(model)
    assert sum(r.macs for r in table) == count_macs(model)


def test_stages_of_cifarnet_show_each_stage_width_resolution_and_kind(capsys):
    cfg = CifarNetConfig()
    table = stages(CifarNet(cfg))
    rows = {r.name: r for r in table}
    assert rows["c1"].output == (cfg.c1, 16, 16) and rows["c2"].output == (cfg.c1, 16, 16)
    assert rows["c3"].output == (cfg.c3, 8, 8) and rows["c4"].output == (cfg.c4, 4, 4)
    assert "dilated" in rows["c2"].kind and "dw" in rows["c3"].kind and "dw" in rows["c4"].kind
    assert rows["head"].params == cfg.c4 * 10 + 10 and rows["head"].macs == cfg.c4 * 10
    printed = capsys.readouterr().out
    assert len(printed.splitlines()) == len(table) + 4 and f"{count_parameters(CifarNet(cfg)):,}" in printed


def test_a_model_names_a_batch_of_the_wrong_type_and_the_conversion():
    import numpy as np

    model = CifarNet().eval()
    with pytest.raises(ValueError, match=r"expects float images, normalised as the loaders do, got torch.uint8; convert "
                                         r"with x.float\(\) / 255"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"expects a torch.Tensor batch, got ndarray; convert a NumPy array with "
                                        r"torch.from_numpy\(a\).float\(\)"):
        model(np.zeros((2, 3, 32, 32), dtype=np.float32))


def test_training_curves_names_what_it_expects():
    from course_utils import plots

    with pytest.raises(TypeError, match=r"expects a training History .*got dict; for a run record use "
                                        r"History.from_dict\(record\['history'\]\)"):
        plots.training_curves({"history": {}})
