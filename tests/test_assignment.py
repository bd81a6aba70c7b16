"""The assignment checker: the kit's CifarNet passes every rule; each broken model fails exactly the
rule it breaks, with the measured value and a hint."""
import numpy as np
import pytest
import torch
from torch import nn

from course_utils.assignment import check
from course_utils.models import CifarNet, CifarNetConfig, count_parameters, get_model

RULES = ["parameters", "no max-pooling", "depthwise-separable", "dilated convolution", "global average pooling",
         "receptive field"]


def block(c_in, c_out, stride=1, dilation=1, groups=1, k=3):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, dilation * (k // 2), dilation, groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


def learner_net(width=16, pool="gap", maxpool=False, separable=True, dilation=2, depth_c4=2):
    """A plain nn.Sequential as a learner would write it: C1 C2 C3 C4, then the output block."""
    w = width
    down = (lambda c_in, c_out: nn.Sequential(block(c_in, c_out), nn.MaxPool2d(2))) if maxpool else \
        (lambda c_in, c_out: block(c_in, c_out, stride=2))
    c3 = ([block(2 * w, 2 * w, groups=2 * w), block(2 * w, 2 * w, k=1)] if separable else [block(2 * w, 2 * w)])
    layers = [block(3, w), block(w, w), down(w, 2 * w),                       # C1
              block(2 * w, 2 * w, dilation=dilation),                         # C2
              down(2 * w, 2 * w), *c3,                                        # C3
              down(2 * w, 4 * w)] + [block(4 * w, 4 * w) for _ in range(depth_c4)]  # C4
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10)] if pool == "gap" else \
        [nn.Flatten(), nn.Linear(4 * w * 16, 10)]
    return nn.Sequential(*layers, *head)


def test_the_kits_cifarnet_passes_every_rule():
    report = check(CifarNet())
    assert [r.rule for r in report] == RULES
    assert report.passed and report.failed() == []
    assert report["parameters"].measured == f"{count_parameters(CifarNet()):,}"
    assert report["receptive field"].measured == "77 pixels"
    assert "all rules pass" in str(report)


def test_a_model_trained_channels_last_is_checked_like_a_fresh_one():
    """Training leaves the weights channels-last, so every activation is too, and PointwiseConv2d
    layers (``use_pointwise``) compute a matrix product instead of a convolution when a backward pass
    follows. The checks run without gradients and see the same convolutions and receptive field."""
    from course_utils import receptive_field
    from course_utils.layers import use_pointwise

    trained = use_pointwise(CifarNet()).to(memory_format=torch.channels_last)
    report, fresh = check(trained), check(CifarNet())
    assert report.passed
    assert [(r.rule, r.measured) for r in report] == [(r.rule, r.measured) for r in fresh]
    assert str(receptive_field(trained)) == str(receptive_field(CifarNet()))


def test_a_learners_sequential_net_passes():
    assert check(learner_net()).failed() == []


@pytest.mark.parametrize("model,broken", [
    (lambda: CifarNet(CifarNetConfig(c4=320)), "parameters"),
    (lambda: learner_net(width=48), "parameters"),
    (lambda: CifarNet(CifarNetConfig(downsample="maxpool")), "no max-pooling"),
    (lambda: learner_net(maxpool=True), "no max-pooling"),
    (lambda: CifarNet(CifarNetConfig(separable=False, c3=32, c4=64)), "depthwise-separable"),
    (lambda: learner_net(separable=False), "depthwise-separable"),
    (lambda: CifarNet(CifarNetConfig(c2_dilation=1)), "dilated convolution"),
    (lambda: learner_net(dilation=1), "dilated convolution"),
    (lambda: learner_net(pool="flatten"), "global average pooling"),
    (lambda: learner_net(depth_c4=0), "receptive field"),
], ids=["cifarnet-too-wide", "learner-too-wide", "cifarnet-maxpool", "learner-maxpool", "cifarnet-standard-convs",
        "learner-standard-convs", "cifarnet-no-dilation", "learner-no-dilation", "learner-flatten-head",
        "learner-shallow"])
def test_a_broken_model_fails_exactly_the_rule_it_breaks(model, broken):
    report = check(model())
    assert report.failed() == [broken]
    row = report[broken]
    assert row.hint and row.hint in str(report) and "FAIL" in str(report)


def test_measured_values_are_the_models():
    wide = CifarNet(CifarNetConfig(c4=320))
    row = check(wide)["parameters"]
    assert count_parameters(wide) == 309_898 and row.measured == "309,898"
    assert row.requirement == "< 200,000" and row.hint.startswith("109,899 too many")   # 309,898 - 199,999
    shallow = check(learner_net(depth_c4=0))["receptive field"]
    assert shallow.measured == "35 pixels" and shallow.hint.startswith("10 pixel(s) short")
    assert check(learner_net(maxpool=True))["no max-pooling"].measured == "3 max-pool call(s)"   # C1, C3 and C4 downsample


def test_functional_global_pooling_and_max_pooling_are_seen():
    class Functional(nn.Module):
        def __init__(self, pool_max: bool):
            super().__init__()
            self.body, self.head, self.pool_max = learner_net()[:-3], nn.Linear(64, 10), pool_max

        def forward(self, x):
            x = self.body(x)
            if self.pool_max:
                x = torch.nn.functional.max_pool2d(x, 2)
            return self.head(x.mean((2, 3)))

    assert check(Functional(False)).failed() == []
    assert check(Functional(True)).failed() == ["no max-pooling"]


class _MaxGate(nn.Module):
    """A CBAM-style channel gate as its authors write it: a global max-pool and a global average of each
    channel, through a shared 1x1 bottleneck, rescale the map (Woo et al. 2018)."""

    def __init__(self, c, functional=False):
        super().__init__()
        self.mlp, self.functional = nn.Sequential(nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1)), functional
        self.max = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        peak = torch.nn.functional.max_pool2d(x, x.shape[-2:]) if self.functional else self.max(x)
        return x * torch.sigmoid(self.mlp(peak) + self.mlp(x.mean((2, 3), keepdim=True)))


@pytest.mark.parametrize("functional", [False, True])
def test_a_global_max_pool_inside_a_gate_is_not_downsampling(functional):
    """The rule forbids max-pooling that downsamples; a max over the whole map (a gate's squeeze) leaves
    no map and passes. A max-pool that does downsample still fails beside it."""
    gated = nn.Sequential(*learner_net()[:-3], _MaxGate(64, functional), *learner_net()[-3:])
    assert check(gated).failed() == []
    assert check(gated)["no max-pooling"].measured == "0 max-pool call(s)"
    pooled = nn.Sequential(*learner_net()[:-3], nn.MaxPool2d(2), _MaxGate(64, functional), *learner_net()[-3:])
    assert check(pooled).failed() == ["no max-pooling"] and check(pooled)["no max-pooling"].measured == "1 max-pool call(s)"


class _Head(nn.Module):
    """The learner's body (ending on a 64 x 4 x 4 map), then a head written as ``how`` to a 64-vector."""

    def __init__(self, how):
        super().__init__()
        self.body, self.head, self.how = learner_net()[:-3], nn.Linear(64, 10), how

    def forward(self, x):
        x = self.body(x)
        n, c = x.shape[:2]
        return self.head(self.how(x, n, c))


def _divided_in_place(summed, positions):
    summed /= positions
    return summed


@pytest.mark.parametrize("how", [
    lambda x, n, c: x.mean(-1).mean(-1),
    lambda x, n, c: x.mean(2).mean(2),
    lambda x, n, c: x.mean(3, keepdim=True).mean(2, keepdim=True).flatten(1),
    lambda x, n, c: x.view(n, c, -1).mean(-1),
    lambda x, n, c: x.reshape(n, c, -1).mean(dim=2),
    lambda x, n, c: torch.flatten(x, 2).mean(2),
    lambda x, n, c: torch.mean(x, dim=[-2, -1]),
    lambda x, n, c: nn.functional.avg_pool2d(x, 4).flatten(1),
    lambda x, n, c: nn.functional.avg_pool2d(x, 5, padding=1, count_include_pad=False).flatten(1),
    lambda x, n, c: x.permute(0, 2, 3, 1).mean((1, 2)),                     # channels last, then the average
    lambda x, n, c: x.permute(0, 2, 3, 1).reshape(n, -1, c).mean(1),
    lambda x, n, c: x.flatten(2).transpose(1, 2).mean(1),
    lambda x, n, c: x.sum((2, 3)) / (x.shape[2] * x.shape[3]),              # a sum over the positions, divided
    lambda x, n, c: torch.sum(x, dim=(-2, -1)) * (1 / x[0, 0].numel()),
    lambda x, n, c: x.sum(-1).sum(-1) / torch.tensor(x.shape[2] * x.shape[3]),
    lambda x, n, c: x.sum((2, 3)) / x.shape[2] / x.shape[3],
    lambda x, n, c: _divided_in_place(x.sum((2, 3)), x.shape[2] * x.shape[3]),
    lambda x, n, c: x.sum((2, 3)).div_(x.shape[2] * x.shape[3]),
    lambda x, n, c: x.sum(3, keepdims=True).sum(2, keepdims=True).flatten(1) / (x.shape[2] * x.shape[3]),
    lambda x, n, c: nn.functional.layer_norm(x.permute(0, 2, 3, 1), (c,)).permute(0, 3, 1, 2).mean((2, 3)),  # LayerNorm2d
    lambda x, n, c: torch.swapaxes(x, axis0=1, axis1=3).mean((1, 2)),
    lambda x, n, c: x.transpose(1, dim1=3).mean((1, 2)),
    lambda x, n, c: x.permute(*np.array([0, 2, 3, 1])).mean((1, 2)),
], ids=["mean-w-then-h", "mean-h-then-w", "keepdim-steps", "view-mean", "reshape-mean", "flatten-mean", "torch-mean",
        "avg-pool-whole-map", "avg-pool-padded", "permute-mean", "permute-reshape-mean", "transpose-mean",
        "sum-divided", "sum-times-reciprocal", "sum-steps-divided-by-a-tensor", "sum-divided-by-h-then-w",
        "sum-divided-in-place", "sum-div_", "sum-keepdims-alias", "channels-last-layernorm-between", "swapaxes-keywords",
        "transpose-keyword", "permute-numpy-dims"])
def test_global_average_pooling_written_in_steps_is_seen(how):
    report = check(_Head(how))
    assert report.failed() == [] and report["global average pooling"].measured in (
        "mean over H, W", "avg_pool2d", "sum over H, W / (H * W)")


@pytest.mark.parametrize("how", [
    lambda x, n, c: x.mean(-1)[..., 0],                       # averaged over W only, then one row taken
    lambda x, n, c: x.mean(1).flatten(1).repeat(1, 4),        # averaged over channels, not positions
    lambda x, n, c: x.mean().expand(n, c),                    # one number for the whole batch
    lambda x, n, c: x.view(n, c, -1)[..., 0],                 # flattened, then one position taken
    lambda x, n, c: nn.functional.avg_pool2d(x, 3).flatten(1),   # 1x1 out of the 4x4 map, from its top-left 3x3
    lambda x, n, c: x.sum((2, 3)),                                # summed, never divided
    lambda x, n, c: x.sum((2, 3)) / x.shape[-1],                  # divided by the width only
    lambda x, n, c: x.permute(0, 2, 1, 3).reshape(n, x.shape[2], -1).mean(-1).repeat(1, c // x.shape[2]),  # C and W
    lambda x, n, c: x.transpose(1, 3).mean((2, 3)).repeat(1, c // x.shape[-1]),   # over H and the channels
    lambda x, n, c: x.transpose(0, 1).reshape(c, -1).mean(1).expand(n, c),  # over the batch too (check's has one)
], ids=["one-spatial-dim", "over-channels", "over-everything", "flattened-no-mean", "avg-pool-part-of-the-map",
        "sum-not-divided", "sum-divided-by-the-width", "channels-and-positions-mixed", "transposed-then-over-channels",
        "the-batch-of-one-averaged-in"])
def test_averages_that_are_not_a_global_pool_are_not_taken_for_one(how):
    report = check(_Head(how))
    assert report.failed() == ["global average pooling"] and report["global average pooling"].measured == "none found"


def test_a_gate_that_pools_in_steps_is_not_the_networks_global_pool():
    """An SE gate written with ``x.view(n, c, -1).mean(-1)`` pools, then rescales its map: a flatten +
    linear head after it is still no global average pooling."""
    class StepGate(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc = nn.Linear(c, c)

        def forward(self, x):
            n, c = x.shape[:2]
            return x * torch.sigmoid(self.fc(x.view(n, c, -1).mean(-1))).view(n, c, 1, 1)

    flat = learner_net(pool="flatten")
    report = check(nn.Sequential(*flat[:-2], StepGate(64), *flat[-2:]))
    assert report.failed() == ["global average pooling"] and report["global average pooling"].measured == "none found"


def test_a_model_that_does_not_run_or_returns_the_wrong_shape_gets_a_clear_error():
    with pytest.raises(ValueError, match="fails on a 1 x 3 x 32 x 32 batch"):
        check(nn.Sequential(nn.Conv2d(1, 8, 3)))          # built for 1 input channel
    with pytest.raises(ValueError, match=r"shape \(1, 10\).*returned shape \(1, 8, 30, 30\)"):
        check(nn.Sequential(nn.Conv2d(3, 8, 3)))
    with pytest.raises(KeyError, match="the rules are"):
        check(CifarNet())["accuracy"]


def test_train_design_refuses_a_broken_model_and_trains_a_passing_one(image_folder, capsys):
    from course_utils.assignment import train_design
    from course_utils.data import load_cifar10
    from course_utils.models import CifarNet

    data = load_cifar10(image_folder, download=False)
    broken = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 10))
    assert train_design(broken, epochs=1, device="cpu", data=data) is None
    out = capsys.readouterr().out
    assert "no max-pooling" in out and "fix the failing rule(s) first" in out
    history = train_design(CifarNet(), epochs=1, device="cpu", data=data, log=None)
    assert len(history) == 1 and not history.interrupted
    assert 0.0 <= history.final_val_acc <= 100.0 and 0.0 <= history.final_test_acc <= 100.0


def test_train_design_given_the_builder_starts_from_the_same_weights_whatever_ran_before(image_folder):
    """A cell re-run in class, or after other cells drew random numbers: given the function that builds the
    design, the run is the same."""
    from course_utils import experiment
    from course_utils.assignment import train_design
    from course_utils.data import load_cifar10
    from course_utils.models import CifarNet

    data = load_cifar10(image_folder, download=False)
    runs = []
    for draws in (0, 7):
        torch.rand(draws)          # whatever the kernel did before
        CifarNet()                 # a network built and thrown away, as a check cell does
        runs.append(train_design(CifarNet, epochs=1, device="cpu", data=data, log=None))
    assert runs[0].train_loss == runs[1].train_loss and runs[0].val_acc == runs[1].val_acc
    built = []
    for draws in (0, 7):
        torch.rand(draws)
        built.append(train_design(CifarNet(), epochs=1, device="cpu", data=data, log=None))
    assert built[0].train_loss != built[1].train_loss   # a built network starts where the RNG happened to be


def test_an_attention_gate_is_neither_the_global_pooling_nor_the_pointwise_half_of_a_separable_conv():
    """An SE gate pools its map to 1x1 and runs 1x1 convs on that vector, then rescales the map: with a
    flatten + linear head it is not global average pooling before the classifier, and after a depthwise
    conv its 1x1 convs do not make it separable (they mix no pixel's channels)."""
    from course_utils.layers import SqueezeExcitation

    flat = learner_net(pool="flatten")
    gated = nn.Sequential(*flat[:-2], SqueezeExcitation(64, 8), *flat[-2:])
    report = check(gated)
    assert report.failed() == ["global average pooling"] and report["global average pooling"].measured == "none found"
    w = 16
    no_pointwise = nn.Sequential(block(3, w), block(w, w), block(w, 2 * w, stride=2), block(2 * w, 2 * w, dilation=2),
                                 block(2 * w, 2 * w, stride=2), block(2 * w, 2 * w, groups=2 * w),
                                 SqueezeExcitation(2 * w, 4), block(2 * w, 4 * w, stride=2), block(4 * w, 4 * w),
                                 block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))
    report = check(no_pointwise)
    assert report.failed() == ["depthwise-separable"] and report["depthwise-separable"].measured == "0 found"
    # a gate between the two halves (depthwise, SE, then 1x1: MobileNetV3's block) keeps the pair
    gated_pair = nn.Sequential(*no_pointwise[:6], SqueezeExcitation(2 * w, 4), block(2 * w, 2 * w, k=1),
                               *no_pointwise[7:])
    report = check(gated_pair)
    assert report.passed and report["depthwise-separable"].measured == "1 found"
    # the kit's attention variants keep their head's pooling and their separable convs, and name only the head's
    for name in ("cifarnet_se", "cifarnet_eca", "cifarnet_cbam"):
        report = check(get_model(name))
        assert report.passed and report["global average pooling"].measured == "adaptive_avg_pool2d", name


def test_a_call_the_pooling_watcher_cannot_follow_never_fails_the_check(monkeypatch):
    """The watcher follows learners' code it was never shown: where it cannot (here: it fails on every call),
    it loses track of the pooling, and the check still runs and reports, never blaming the model."""
    from course_utils import assignment

    def cannot(self, name, x, out, args, kwargs):
        raise RuntimeError("not foreseen")

    monkeypatch.setattr(assignment._Watcher, "_watch_pooling", cannot)
    report = check(CifarNet())
    assert report.failed() == ["global average pooling"] and report["global average pooling"].measured == "none found"


class _ProjectedDown(nn.Module):
    """A ResNet downsampling block as learners write it: the body, then the 1x1 stride-2 shortcut, summed.
    The shortcut's conv runs after the body's, so it is the last conv row of the table."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.body = nn.Sequential(block(c_in, c_out, stride=2), block(c_out, c_out))
        self.proj = nn.Conv2d(c_in, c_out, 1, stride=2, bias=False)

    def forward(self, x):
        return self.body(x) + self.proj(x)


class _LearnersECA(nn.Module):
    """ECA as a learner writes it: a 2-D mean (no keepdim), a Conv1d across the channels, a gate."""

    def __init__(self, k=5):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x):
        gate = torch.sigmoid(self.conv(x.mean((2, 3)).unsqueeze(1))).squeeze(1)
        return x * gate[:, :, None, None]


def test_the_receptive_field_is_the_pooled_maps_with_a_shortcut_after_the_body_and_a_gate_over_channels():
    """The rule reads the field of the map the classifier pools: a projection shortcut that runs after the
    body does not shrink it to the shortcut's own (it did: 21 instead of 61), and a Conv1d over a pooled
    vector's channels does not widen it (a learner's ECA passed a too-shallow net: 57 instead of 25)."""
    from course_utils import receptive_field

    w = 16
    shortcut = nn.Sequential(block(3, w), _ProjectedDown(w, 2 * w), _ProjectedDown(2 * w, 4 * w),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))
    plain = nn.Sequential(block(3, w), *_ProjectedDown(w, 2 * w).body, *_ProjectedDown(2 * w, 4 * w).body,
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))
    table = receptive_field(shortcut)
    assert table[-2].rf < table.final == receptive_field(plain).final      # the last conv row is the shortcut's
    assert check(shortcut)["receptive field"].measured == f"{table.final} pixels"   # the rule reads the same field
    shallow = [block(3, w), block(w, 2 * w, stride=2), block(2 * w, 2 * w)]
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * w, 10)]
    without = receptive_field(nn.Sequential(*shallow, *head)).final
    assert receptive_field(nn.Sequential(*shallow, _LearnersECA(), *head)).final == without
    assert check(nn.Sequential(*shallow, _LearnersECA(), *head))["receptive field"].measured == f"{without} pixels"


class _Gate(nn.Module):
    """An SE-style gate: squeeze each channel to its mean, rescale the map."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


class _FlatMeanHead(nn.Module):
    """Global pooling written as flatten(2).mean(-1), a form the tracker does not take for a pooling."""

    def forward(self, x):
        return x.flatten(2).mean(-1)


def test_a_gates_squeeze_is_not_the_networks_field():
    """A gate pools a map into a vector, but the network goes on from the gated map: with no global pooling
    at the end (a super-resolution net), or one written in a form the tracker does not follow, the field
    is the last map's, not the gate's earlier one."""
    from course_utils import receptive_field

    convs = [nn.Conv2d(3, 8, 3, padding=1), _Gate(), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)]
    assert receptive_field(nn.Sequential(*convs)).final == 7                # a map out: its own field
    assert receptive_field(nn.Sequential(*convs, _FlatMeanHead(), nn.Linear(8, 10))).final == 7
    assert receptive_field(nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))).final == 7
