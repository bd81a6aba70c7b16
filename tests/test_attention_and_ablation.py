import csv

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.config import TrainConfig
from course_utils.data import AugmentConfig, load_cifar10, torchvision_train_transforms, train_transforms
from course_utils.inspection import capture, count_macs
from course_utils.layers import CBAM, ECA, SqueezeExcitation, eca_kernel_size
from course_utils.arithmetic import receptive_field_of_stack
from course_utils.models import CifarNetV1 as CifarNet, CifarNetV1Config as CifarNetConfig, count_parameters, get_model

from conftest import conv_bn, separable


def v1_parameters(c=CifarNetConfig()):
    """CifarNet v1's parameters from the closed forms, stage by stage (see its docstring's table)."""
    return (conv_bn(3, c.c1) + conv_bn(c.c1, c.c1)                                # C1
            + conv_bn(c.c1, c.c2) + 2 * conv_bn(c.c2, c.c2)                         # C2: down, residual(2 convs)
            + separable(c.c2, c.c3) + 2 * separable(c.c3, c.c3)                     # C3: down, residual(2)
            + separable(c.c3, c.c4) + separable(c.c4, c.c4)                         # C4: down, residual(1)
            + c.c4 * c.num_classes + c.num_classes)                                 # linear head


def v1_receptive_field(downsample="stride", c=CifarNetConfig()):
    """The recurrence along v1's longest path; each of the three downsamplings is a 3x3 stride 2 conv,
    a 3x3 conv then a 2x2 max-pool, or a 3x3 stride 2 conv with dilation 2."""
    down = {"stride": [(3, 2)], "maxpool": [(3, 1), (2, 2)], "dilation": [(3, 2, 2)]}[downsample]
    # a separable block: depthwise 3x3 (which carries the stride or dilation), then 1x1; a max-pool follows both
    sep_down = {"stride": [(3, 2), (1, 1)], "maxpool": [(3, 1), (1, 1), (2, 2)],
                "dilation": [(3, 2, 2), (1, 1)]}[downsample]
    sep = [(3, 1), (1, 1)]
    layers = ([(3, 1), (3, 1)] + down + [(3, 1), (3, 1, c.c2_dilation)]               # C1, C2
              + sep_down + 2 * sep                                                     # C3
              + sep_down + sep)                                                        # C4
    return int(receptive_field_of_stack(layers)[-1][0])


@pytest.mark.parametrize("channels", [16, 64, 160])
def test_attention_keeps_the_shape_and_matches_the_formulas(channels):
    x = torch.randn(2, channels, 8, 8)
    hidden = max(1, channels // 16)
    se, eca, cbam = SqueezeExcitation(channels), ECA(channels), CBAM(channels)
    for layer in (se, eca, cbam):
        assert layer(x).shape == x.shape
    assert count_parameters(se) == 2 * channels * hidden + hidden + channels
    # ECA: one bias-free 1-D conv whose width follows Wang et al.'s rule (their code's rounding):
    t = int(abs((np.log2(channels) + 1) / 2))
    assert count_parameters(eca) == (t if t % 2 else t + 1) == {16: 3, 64: 3, 160: 5}[channels]
    assert count_parameters(cbam) == 2 * channels * hidden + 2 * 7 * 7


def test_eca_kernel_size_formula():
    # k = |log2(C)/2 + 1/2|, made odd: C=64 -> 3.5 -> 3; C=256 -> 4.5 -> 4 -> 5; C=1024 -> 5.5 -> 5
    assert [eca_kernel_size(c) for c in (8, 64, 256, 512, 1024)] == [3, 3, 5, 5, 5]
    assert ECA(256).conv.kernel_size == (5,)


def test_se_weights_lie_strictly_between_0_and_1():
    torch.manual_seed(0)
    se = SqueezeExcitation(32, reduction=4)
    x = torch.randn(4, 32, 8, 8) * 5
    with capture(se, lambda n, m: n == "gate") as rec:
        y = se(x)
    w = rec["gate"][0]
    assert w.shape == (4, 32, 1, 1) and (w > 0).all() and (w < 1).all()
    assert torch.allclose(y, x * w)


def test_attention_variants_stay_under_200k_and_run():
    for name in ("cifarnet_se", "cifarnet_eca", "cifarnet_cbam"):
        model = get_model(name)
        assert count_parameters(model) < 200_000, name
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="SqueezeExcitation: built for 16 input channels, got 8"):
        SqueezeExcitation(16)(torch.randn(1, 8, 4, 4))


def test_downsampling_variants_of_v1():  # the network notebook 07's attention study used
    from course_utils import receptive_field

    for mode in ("stride", "maxpool", "dilation"):
        model = CifarNet(CifarNetConfig(downsample=mode))
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        assert count_parameters(model) == v1_parameters()      # 199,498: the downsampling adds no weights
        assert receptive_field(model).final == v1_receptive_field(mode)
    assert count_macs(CifarNet(CifarNetConfig(downsample="maxpool"))) > count_macs(CifarNet())
    with pytest.raises(ValueError, match="downsample must be"):
        CifarNet(CifarNetConfig(downsample="avgpool"))


def test_count_macs_of_a_single_conv():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (3, 16, 16)) == 9 * 3 * 8 * 16 * 16


def test_torchvision_pipeline_matches_when_randomness_is_off():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    off = AugmentConfig(flip_p=0.0, affine_p=0.0, dropout_p=0.0)
    a = train_transforms(mean, std, off)(image=img)["image"]
    b = torchvision_train_transforms(mean, std, off)(img)
    assert torch.allclose(a, b, atol=1e-5)
    # the v2 eraser makes exactly one 16x16 hole of the mean, i.e. 0 after Normalize
    hole_only = torchvision_train_transforms(mean, std, AugmentConfig(flip_p=0.0, affine_p=0.0, dropout_p=1.0))
    out = hole_only(np.full((32, 32, 3), 200, np.uint8))
    assert int((out.abs() < 1e-2).all(0).sum()) == 256


def test_the_affine_differences_the_docs_name():
    """Notebook 08 and ``torchvision_train_transforms`` say how the two affines differ: the course's
    ``Affine`` scales each axis by its own factor (1.x's ShiftScaleRotate drew one), v2's draws one
    scale, shifts by whole pixels and resamples with the nearest pixel."""
    import albumentations as A
    from torchvision.transforms import v2

    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    steps = train_transforms(mean, std, AugmentConfig(flip_p=0.0, affine_p=1.0, dropout_p=0.0), normalize=False)
    replay = A.ReplayCompose(list(steps.transforms))
    replay.set_random_seed(0)
    img = np.zeros((32, 32, 3), np.uint8)
    scales = [next(t for t in replay(image=img)["replay"]["transforms"] if t["__class_fullname__"].endswith("Affine"))
              ["params"]["scale"] for _ in range(20)]
    assert all(0.9 <= s["x"] <= 1.1 and 0.9 <= s["y"] <= 1.1 for s in scales)
    assert sum(abs(s["x"] - s["y"]) > 0.01 for s in scales) >= 10        # two factors, not one
    [affine] = [t for t in torchvision_train_transforms(mean, std).transforms
                if isinstance(t, v2.RandomApply)][0].transforms
    assert getattr(affine.interpolation, "value", affine.interpolation) == "nearest"   # a string in newer torchvision
    draw = getattr(affine, "make_params", None) or affine._get_params                  # _get_params before 0.21
    torch.manual_seed(0)
    params = [draw([torch.zeros(3, 32, 32)]) for _ in range(20)]
    assert all(isinstance(p["translate"][0], int) and isinstance(p["scale"], float) for p in params)


def test_attention_gates_count_as_global_context_not_as_receptive_field():
    from course_utils import receptive_field

    rf = receptive_field(get_model("cifarnet_se"))
    assert rf.final == v1_receptive_field()  # the same local field as CifarNet: the gates see everything, but only to re-weight
    gates = [r for r in rf if r.name.endswith("pool") and r.name != "pool"]
    assert len(gates) == 3 and all(r.global_pool for r in gates)
    assert not any(r.name.endswith(("fc1", "fc2")) for r in rf)  # 1x1 convs on pooled vectors are not layers of the map


@pytest.mark.parametrize("layer, input_size, expected", [
    # C_in·C_out·k²·H_in·W_in for a transposed conv: 2,097,152 for this one (what fvcore counts)
    (torch.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), (32, 16, 16), 32 * 16 * 4 * 4 * 16 * 16),
    (torch.nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1), (64, 16, 16), 64 * 32 * 9 * 16 * 16),
    (torch.nn.ConvTranspose2d(8, 8, 2, stride=2, groups=4), (8, 5, 5), 8 * 2 * 4 * 5 * 5),
    (torch.nn.Conv1d(1, 1, 3, padding=1, bias=False), (1, 64), 3 * 64),          # ECA's conv across channels
    (torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16), (16, 8, 8), 9 * 64 * 16),
    (torch.nn.Linear(12, 5), (12,), 60),
])
def test_count_macs_counts_every_kind_of_convolution(layer, input_size, expected):
    assert count_macs(layer, input_size) == expected


def test_count_macs_of_the_transposed_upsampler_is_not_zero():
    from course_utils.arithmetic import conv_macs
    from course_utils.layers import TransposedUpsample

    up = TransposedUpsample(16, 8)
    conv = [m for m in up.modules() if isinstance(m, torch.nn.ConvTranspose2d)][0]
    k = conv.kernel_size[0]
    # the transposed conv spreads each of the 16x16 input pixels over k x k outputs of 8 channels
    assert count_macs(up, (16, 16, 16)) == conv_macs(16, 8, k, 16) == k * k * 16 * 8 * 16 * 16 > 0
    assert count_macs(get_model("cifarnet_eca")) > count_macs(get_model("cifarnet_v1"))  # ECA's Conv1d counts


def test_eca_kernel_sizes_follow_the_official_code_for_every_width():
    """The authors' code: t = int(abs((log2(C) + b) / gamma)); k = t if t is odd else t + 1."""
    import math

    for c in range(2, 513):
        t = int(abs((math.log2(c) + 1) / 2))
        assert eca_kernel_size(c) == (t if t % 2 else t + 1), c
    assert [eca_kernel_size(c) for c in (64, 128, 256)] == [3, 5, 5]


class _ElementwiseCounter(torch.overrides.TorchFunctionMode):
    """Counts, independently of attention_cost, the values the pools read and the multiplications of
    the rescale during one forward pass."""

    POOLS = {"mean", "amax", "adaptive_avg_pool2d"}

    def __init__(self):
        super().__init__()
        self.pooling = self.rescale = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.POOLS:
            self.pooling += args[0].numel()
        elif name in ("mul", "__mul__") and all(isinstance(a, torch.Tensor) for a in args[:2]):
            self.rescale += out.numel()
        return out


@pytest.mark.parametrize("kind,make", [("se", SqueezeExcitation), ("eca", ECA), ("cbam", CBAM)])
@pytest.mark.parametrize("channels,size", [(64, 16), (128, 8), (24, 5)])
def test_attention_cost_matches_the_modules(kind, make, channels, size):
    from course_utils.layers import attention_cost

    module = make(channels).eval()
    cost = attention_cost(kind, channels, size)
    assert cost["weights"] == count_parameters(module)
    assert cost["macs"] == count_macs(module, (channels, size, size))
    counter = _ElementwiseCounter()
    with counter, torch.no_grad():
        module(torch.randn(1, channels, size, size))
    assert (cost["pooling"], cost["rescale"]) == (counter.pooling, counter.rescale)
    assert cost["total"] == cost["macs"] + cost["pooling"] + cost["rescale"]


def test_attention_cost_rejects_an_unknown_kind_or_size():
    from course_utils.layers import attention_cost

    with pytest.raises(ValueError, match="'se', 'eca' or 'cbam'"):
        attention_cost("sk", 64, 8)
    with pytest.raises(ValueError, match="size"):
        attention_cost("se", 64, 0)


def test_gate_statistics_separate_a_class_effect_from_a_fixed_channel_scale():
    """Three channels over 4 images of 2 classes: channel 0 sits at 0.5 always (a fixed scale), channel 1
    is 0.2 for class 0 and 0.8 for class 1 (a class effect), channel 2 varies inside each class only."""
    import numpy as np

    from course_utils.inspection import gate_statistics

    x = np.array([[0.5, 0.2, 0.1], [0.5, 0.2, 0.3], [0.5, 0.8, 0.1], [0.5, 0.8, 0.3]])
    stats = gate_statistics(x.reshape(4, 3, 1, 1), np.array([0, 0, 1, 1]), num_classes=2)   # SE's (N, C, 1, 1)
    assert np.allclose(stats.channel_means, [0.5, 0.5, 0.2])
    assert np.allclose(stats.per_class, [[0.5, 0.2, 0.2], [0.5, 0.8, 0.2]])
    assert np.allclose(stats.deviation, [[0, -0.3, 0], [0, 0.3, 0]])
    assert np.allclose(stats.between, [0, 0.3, 0]) and np.allclose(stats.within, [0, 0, 0.1])
    assert np.allclose(stats.class_sizes, [0.1, 0.1])
    assert np.allclose(stats.correlation(), [[1, -1], [-1, 1]])
    with pytest.raises(ValueError, match=r"no images of class\(es\) \[2\] among the 4 given"):
        gate_statistics(x, np.array([0, 0, 1, 1]), num_classes=3)


def test_border_profile_and_outputs_over_read_a_gate_per_image():
    import numpy as np
    from torch.utils.data import DataLoader, TensorDataset

    from course_utils.inspection import border_profile, outputs_over

    grid = np.full((4, 4), 1.0)
    grid[0, :] = 0.0                       # the top row low, as a stride-2 grid's top-left anchoring makes it
    profile = border_profile(grid)
    assert profile["top"] == 0.0 and profile["bottom"] == 1.0 and profile["inner"] == 1.0
    assert profile["left"] == profile["right"] == 0.75 and profile["border"] == pytest.approx(8 / 12)
    with pytest.raises(ValueError, match=r"at least 3x3 positions, got shape \(2, 2\)"):
        border_profile(np.ones((2, 2)))

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1)).train()
    x, y = torch.randn(10, 3, 8, 8), torch.arange(10) % 3
    out, labels = outputs_over(model, "2", DataLoader(TensorDataset(x, y), batch_size=4), "cpu")
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    assert out.shape == (10, 4, 1, 1) and torch.allclose(out, expected, atol=1e-6) and labels.tolist() == y.tolist()
    assert model.training and model[1].num_batches_tracked.item() == 0     # eval mode: no BatchNorm update
    with pytest.raises(ValueError, match="Sequential has no sub-module 'gate'"):
        outputs_over(model, "gate", [], "cpu")


def test_the_gate_figures_draw_one_row_per_class_and_three_rows_of_maps():
    import numpy as np

    from course_utils import plots
    from course_utils.inspection import gate_statistics

    rng = np.random.default_rng(0)
    stats = gate_statistics(rng.random((20, 6)), np.arange(20) % 10)
    fig = plots.gate_deviation_map(stats, [f"c{i}" for i in range(10)])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"c{i}" for i in range(10)]
    maps = rng.random((3, 8, 8))
    fig = plots.spatial_gate_maps(torch.zeros(3, 3, 32, 32), [0, 1, 2], maps, maps.mean(0), ["a", "b", "c"],
                                  (0.5,) * 3, (0.25,) * 3, title="t")
    assert len(fig.axes) == 3 * 4 + 2                                      # 3 rows of 3 maps + 1, 2 colour bars
    with pytest.raises(ValueError, match="one image and label per map, got 2 images, 3 labels, 3 maps"):
        plots.spatial_gate_maps(torch.zeros(2, 3, 32, 32), [0, 1, 2], maps, maps.mean(0), ["a", "b", "c"],
                                (0.5,) * 3, (0.25,) * 3)


def test_eca_refuses_an_even_kernel_with_the_fix():
    from course_utils.layers import ECA, attention_cost

    with pytest.raises(ValueError, match=r"ECA: kernel_size must be odd .*got 4; leave it out to take eca_kernel_size\(64\)"):
        ECA(64, kernel_size=4)
    assert ECA(64, kernel_size=5)(torch.randn(2, 64, 4, 4)).shape == (2, 64, 4, 4)
    # 0 is not 'choose one for me' (it was taken as None), and a negative size is named, not left to Conv1d
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"ECA: kernel_size must be a positive integer, got {bad}"):
            ECA(64, kernel_size=bad)
        with pytest.raises(ValueError, match=rf"ECA: kernel_size must be a positive integer, got {bad}"):
            attention_cost("eca", 64, 8, kernel_size=bad)
    assert ECA(64).kernel_size == attention_cost("eca", 64, 8)["weights"] == eca_kernel_size(64)


@pytest.mark.parametrize("bad", [6, 0])
def test_cbam_refuses_a_kernel_that_is_not_a_centred_window_when_built(bad):
    """An even spatial kernel with padding k // 2 makes a map one pixel larger than the input: it used to build,
    then fail at the first forward pass with a broadcasting error that named no kernel."""
    from course_utils.layers import attention_cost

    message = "kernel_size must be odd" if bad else "kernel_size must be a positive integer"
    with pytest.raises(ValueError, match=rf"CBAM: {message}.*got {bad}"):
        CBAM(16, kernel_size=bad)
    with pytest.raises(ValueError, match=rf"CBAM: {message}.*got {bad}"):
        attention_cost("cbam", 16, 8, spatial_kernel=bad)
    assert CBAM(16, kernel_size=5)(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)
