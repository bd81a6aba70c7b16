import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import arithmetic as ar
from course_utils import conv_output_size


@pytest.mark.parametrize("size,kernel,stride,padding,dilation",
                         [c for c in itertools.product([5, 8, 32], [1, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2])
                          if c[0] + 2 * c[3] >= c[4] * (c[1] - 1) + 1])
def test_conv_output_size_matches_pytorch(size, kernel, stride, padding, dilation):
    conv = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    out = conv(torch.zeros(1, 1, size, size))
    assert conv_output_size(size, kernel, stride, padding, dilation) == out.shape[-1]


@pytest.mark.parametrize("size,kernel,stride,padding,output_padding,dilation",
                         [(4, 3, 2, 1, 1, 1), (4, 4, 2, 1, 0, 1), (7, 3, 1, 0, 0, 2), (5, 2, 2, 0, 0, 1),
                          (8, 3, 3, 1, 2, 1), (3, 5, 2, 2, 1, 1)])
def test_transposed_output_size_matches_pytorch(size, kernel, stride, padding, output_padding, dilation):
    conv = nn.ConvTranspose2d(1, 1, kernel, stride, padding, output_padding, dilation=dilation)
    out = conv(torch.zeros(1, 1, size, size))
    assert conv_output_size(size, kernel, stride, padding, dilation, transposed=True,
                            output_padding=output_padding) == out.shape[-1]


def test_conv_output_size_errors_name_the_numbers():
    with pytest.raises(ValueError, match=r"a kernel spanning 5 pixels \(kernel=5, dilation=1\) does not fit in an "
                                         r"input of 3 pixels padded by 0 on each side \(3 pixels\)"):
        conv_output_size(3, 5)  # 5x5 kernel on a 3-pixel input, no padding
    with pytest.raises(ValueError, match=r"spanning 9 pixels \(kernel=3, dilation=4\) does not fit .* of 8 pixels"):
        conv_output_size(8, 3, dilation=4)  # (3 - 1) * 4 + 1 = 9
    with pytest.raises(ValueError, match="stride must be an integer >= 1, got 0"):
        conv_output_size(8, 3, stride=0)
    with pytest.raises(ValueError, match="output_padding=2 must be smaller than stride=2 or dilation=1"):
        conv_output_size(8, 3, stride=2, transposed=True, output_padding=2)
    with pytest.raises(ValueError, match=r"output_padding only applies to transposed convolutions \(transposed=True\)"):
        conv_output_size(8, 3, output_padding=1)


def test_params_and_macs_match_pytorch():
    conv = nn.Conv2d(16, 32, 3, padding=1)
    assert ar.conv_params(16, 32, 3) == sum(p.numel() for p in conv.parameters())
    grouped = nn.Conv2d(64, 64, 3, groups=32, bias=False)
    assert ar.conv_params(64, 64, 3, groups=32, bias=False) == grouped.weight.numel() == 1152
    assert ar.conv_macs(16, 32, 3, 32) == 9 * 16 * 32 * 32 * 32
    with pytest.raises(ValueError, match="divisible"):
        ar.conv_params(10, 16, 3, groups=4)


def test_separable_ratio_formula():
    # 1/C_out + 1/k^2
    assert ar.separable_ratio(64, 128, 3) == pytest.approx(1 / 128 + 1 / 9)
    # notebook 03's "about 8.4x fewer" for 128 outputs (not 8.9x), and its measured 0.1189
    assert f"{1 / ar.separable_ratio(64, 128, 3):.1f}x" == "8.4x"
    assert round(ar.separable_ratio(64, 128, 3), 4) == 0.1189
    from course_utils.layers import DepthwiseSeparableConv2d

    sep = DepthwiseSeparableConv2d(64, 128, norm_layer=None, act_layer=None)
    std = nn.Conv2d(64, 128, 3, padding=1, bias=False)
    weights = lambda m: sum(q.numel() for q in m.parameters() if q.dim() > 1)  # noqa: E731
    assert f"{weights(std) / weights(sep):.1f}x" == "8.4x"


def test_receptive_field_of_stack():
    # three 3x3 convs: 3, 5, 7; then a stride-2 conv doubles the jump; a dilated conv adds (5-1)*2
    rows = ar.receptive_field_of_stack([(3, 1), (3, 1), (3, 1), (3, 2), (3, 1, 2)])
    assert [r for r, _ in rows] == [3, 5, 7, 9, 17]
    assert [j for _, j in rows] == [1, 1, 1, 2, 2]
    assert ar.effective_kernel(3, 2) == 5
    assert ar.dilation_for_receptive_field(9) == 4


def test_notebook_04_exercise_1_has_the_answer_it_implies():
    """Three gap-free 3x3 layers reach at most 27 pixels (dilations 1, 3, 9); 31 always leaves holes:
    3 x 3 x 3 = 27 paths cannot cover 31 offsets."""
    from itertools import product

    from course_utils.inspection import stack_footprint

    def gap_free(dilations):
        fp = stack_footprint(list(dilations))
        span = 1 + 2 * sum(dilations)
        centre = fp.shape[0] // 2
        row = fp[centre, centre - span // 2: centre + span // 2 + 1]
        return bool((row > 0).all())

    assert gap_free((1, 3, 9)) and 1 + 2 * (1 + 3 + 9) == 27
    assert not gap_free((2, 2, 2)) and gap_free((1, 2, 3))
    spans = {1 + 2 * sum(d) for d in product(range(1, 12), repeat=3) if gap_free(d)}
    assert max(spans) == 27 and 31 not in spans


@pytest.mark.parametrize("call, names", [
    (lambda: ar.conv_macs(64, 64, 3, 8, groups=5), ["in_ch=64", "groups=5"]),   # 5 divides neither
    (lambda: ar.conv_macs(64, 64, 3, -4), ["out_h", "-4"]),
    (lambda: ar.conv_macs(64, 64, 3, 4, 0), ["out_w", "0"]),
    (lambda: ar.conv_macs(0, 64, 3, 4), ["in_ch", "0"]),
    (lambda: ar.conv_params(16, 32, 0), ["kernel", "0"]),
    (lambda: ar.conv_params(16, 32, 3, groups=0), ["groups", "0"]),
    (lambda: ar.separable_ratio(64, 0), ["out_ch", "0"]),
    (lambda: ar.effective_kernel(3, 0), ["dilation", "0"]),
    (lambda: ar.effective_kernel(2.5), ["kernel", "2.5"]),
    (lambda: ar.receptive_field_step(0, 1, 3), ["rf", "0"]),
    (lambda: ar.receptive_field_step(1, 1, 3, stride=0), ["stride", "0"]),
    (lambda: ar.dilation_for_receptive_field(10, kernel=1), ["kernel", "1"]),
    (lambda: ar.dilation_for_receptive_field(0), ["target", "0"]),
])
def test_arithmetic_helpers_reject_impossible_inputs_naming_them(call, names):
    with pytest.raises(ValueError) as err:
        call()
    for name in names:
        assert name in str(err.value)


def test_arithmetic_helpers_accept_numpy_integers():
    import numpy as np

    assert ar.conv_macs(np.int64(16), 32, 3, np.int64(8)) == ar.conv_macs(16, 32, 3, 8) == 9 * 16 * 32 * 64
    assert ar.dilation_for_receptive_field(np.int64(9)) == 4


def _random_stacks(n: int, seed: int = 0):
    rng = torch.Generator().manual_seed(seed)
    for _ in range(n):
        depth = int(torch.randint(1, 6, (1,), generator=rng))
        stack = []
        for _ in range(depth):
            k = int(torch.randint(1, 6, (1,), generator=rng))
            s = int(torch.randint(1, 3, (1,), generator=rng))
            d = int(torch.randint(1, 3, (1,), generator=rng)) if k > 1 else 1
            p = int(torch.randint(0, (d * (k - 1)) // 2 + 1, (1,), generator=rng))
            stack.append((k, s, p, d))
        yield stack


@pytest.mark.parametrize("stack", list(_random_stacks(25)))
def test_closed_form_receptive_field_equals_the_layer_by_layer_recursion(stack):
    closed = ar.receptive_field_closed_form(stack)
    rf, jump = ar.receptive_field_of_stack([(k, s, d) for k, s, p, d in stack])[-1]
    assert (closed["rf"], closed["stride"]) == (rf, jump)
    assert closed["padding"] == sum(p * math.prod(s for _, s, _, _ in stack[:i]) for i, (_, _, p, _) in enumerate(stack))


@pytest.mark.parametrize("stack", list(_random_stacks(12, seed=1)))
def test_field_span_is_where_the_gradient_of_one_output_is_nonzero(stack):
    """The closed form's span for output u, against the input pixels whose gradient is non-zero in a
    real stack of convolutions with positive weights (no cancellation). A span wholly inside the
    image starts and ends on pixels the output uses (its end taps); one that reaches into the padding
    is cut at the border, where a dilated or strided stack may have a hole."""
    size = 96
    layers = [nn.Conv2d(1, 1, k, s, p, d, bias=False) for k, s, p, d in stack]
    for conv in layers:
        nn.init.constant_(conv.weight, 1.0)
    net = nn.Sequential(*layers)
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    width = net(x).shape[-1]
    closed = ar.receptive_field_closed_form(stack)
    inside = 0
    for u in range(width):
        x.grad = None
        net(x)[0, 0, 0, u].backward()
        cols = torch.nonzero(x.grad[0, 0].sum(0)).flatten()
        first, last = ar.field_span(u, **closed)
        if first >= 0 and last < size:
            inside += 1
            assert (int(cols.min()), int(cols.max())) == (first, last)
        else:
            assert max(first, 0) <= int(cols.min()) and int(cols.max()) <= min(last, size - 1)
    assert inside > 0


def test_closed_form_of_the_course_models_equals_the_measured_table():
    from course_utils import receptive_field
    from course_utils.models import MODELS

    for name, make in MODELS.items():
        rows = [r for r in receptive_field(make()) if not r.global_pool]
        closed = ar.receptive_field_closed_form([(r.kernel, r.stride, r.padding, r.dilation) for r in rows])
        assert (closed["rf"], closed["stride"]) == (rows[-1].rf, rows[-1].jump), name


def test_closed_form_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"^stride must be an integer >= 1, got 0$"):
        ar.receptive_field_closed_form([(3, 0)])
    with pytest.raises(ValueError, match=r"^padding must be an integer >= 0, got -1$"):
        ar.receptive_field_closed_form([(3, 1, -1)])
    with pytest.raises(ValueError, match=r"^u must be an integer >= 0, got -1$"):   # "u" alone matched every message
        ar.field_span(-1, 3, 1, 1)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    (32, 3, 2, 1, 1), (32, 3, 2, 2, 2), (16, 3, 1, 2, 2), (15, 3, 2, 0, 1), (8, 1, 2, 0, 1), (12, 3, 3, 3, 3)])
def test_input_positions_read_are_where_the_gradient_reaches(size, kernel, stride, padding, dilation):
    """The positions listed are exactly those where the input gradient of a 1-row conv with random
    weights is nonzero."""
    from course_utils.arithmetic import input_positions_read

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, (1, kernel), stride=(1, stride), padding=(0, padding), dilation=(1, dilation),
                           bias=False)
    with torch.no_grad():
        conv.weight.uniform_(0.5, 1.0)
    x = torch.randn(1, 1, 1, size, requires_grad=True)
    conv(x).sum().backward()
    assert input_positions_read(size, kernel, stride, padding, dilation) == x.grad[0, 0, 0].nonzero().flatten().tolist()


def test_a_dilated_stride_2_conv_reads_a_quarter_of_its_input():
    from course_utils.arithmetic import input_positions_read

    assert input_positions_read(32, 3, stride=2, padding=1) == list(range(32))
    assert input_positions_read(32, 3, stride=2, padding=2, dilation=2) == list(range(0, 32, 2))
    assert input_positions_read(8, 1, stride=2) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        input_positions_read(8, 3, stride=0)


def test_the_empirical_receptive_field_is_nonzero_exactly_on_the_theoretical_taps():
    """Two stacked 3x3 convs reach a 5x5 square around the centre output; a dilated (d = 2) 3x3 conv
    reaches its nine taps, two pixels apart, and nothing between them. For one linear conv the gradient
    is the kernel's magnitude, summed over channels."""
    from course_utils.inspection import empirical_receptive_field

    torch.manual_seed(0)
    two = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1))
    rows, cols = np.nonzero(empirical_receptive_field(two, (2, 11, 11)))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 7, 3, 7) and len(rows) == 25
    dilated = nn.Conv2d(1, 1, 3, padding=2, dilation=2)
    grad = empirical_receptive_field(dilated, (1, 11, 11))
    assert sorted(zip(*np.nonzero(grad))) == [(r, c) for r in (3, 5, 7) for c in (3, 5, 7)]
    assert np.allclose(grad[3:8:2, 3:8:2], dilated.weight[0, 0].abs().detach().numpy())
    assert dilated.weight.grad is None and all(p.grad is None for p in two.parameters())   # the network's own
    # gradients are left alone: re-running a notebook cell adds nothing to them


def test_mean_empirical_receptive_field_averages_the_seeds_and_central_share_measures_squares():
    from course_utils.inspection import central_share, empirical_receptive_field, mean_empirical_receptive_field

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 3, padding=1))
    mean = mean_empirical_receptive_field(net, (1, 9, 9), inputs=3)
    assert np.allclose(mean, sum(empirical_receptive_field(net, (1, 9, 9), seed=s) for s in range(3)) / 3)
    with pytest.raises(ValueError, match="inputs must be at least 1, got 0"):
        mean_empirical_receptive_field(net, (1, 9, 9), inputs=0)
    ones = np.ones((5, 5))
    assert central_share(ones, 3) == pytest.approx(9 / 25) and central_share(ones, 5) == 1.0
    assert central_share(ones, 3, centre=0) == pytest.approx(4 / 25)     # clipped at the top-left corner
    assert central_share(ones, 4, centre=2) == pytest.approx(16 / 25)    # rows and columns 0-3
    peak = np.zeros((5, 5)); peak[2, 2] = 3.0; peak[0, 0] = 1.0
    assert central_share(peak, 1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="side must be at least 1 pixel, got 0"):
        central_share(ones, 0)


@pytest.mark.parametrize("kernel, stride, dilation, reach", [
    (4, 2, 1, 1), (6, 2, 1, 2), (3, 2, 1, 1), (2, 2, 1, 0),      # the usual upsamplers: 2x2 at stride 2 reads one input
    (3, 1, 1, 2), (3, 1, 2, 4),                                   # stride 1: a plain (dilated) conv's span
    (4, 2, 3, 3), (5, 2, 2, 4), (7, 3, 1, 2),
])
def test_transposed_reach_is_the_span_of_the_inputs_one_output_reads(kernel, stride, dilation, reach):
    """Checked against the definition: output o reads input i through tap t when o = i*s + t*d (- padding)."""
    from course_utils.arithmetic import transposed_reach

    assert transposed_reach(kernel, stride, dilation) == reach
    spans = []
    for o in range(40, 40 + stride * dilation):                   # every output phase
        read = [(o - t * dilation) // stride for t in range(kernel) if (o - t * dilation) % stride == 0]
        spans.append(max(read) - min(read) if read else 0)
    assert max(spans) == reach


class _Resize(nn.Module):
    """``F.interpolate`` with any of its arguments (``nn.Upsample`` has no ``antialias``)."""

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return nn.functional.interpolate(x, **self.kwargs)


class _Resize3d(nn.Module):
    """A trilinear resize of the map seen as a one-deep volume (a 5-D tensor), as video models write it."""

    def forward(self, x):
        return nn.functional.interpolate(x.unsqueeze(2), scale_factor=(1, 2, 2), mode="trilinear").squeeze(2)


@pytest.mark.parametrize("name, layers, size", [
    ("pixel unshuffle, then a 3x3 conv", lambda: [nn.PixelUnshuffle(2), nn.Conv2d(4, 1, 3, padding=1)], 6),
    ("a stride-2 conv, unshuffle, a 3x3 conv",
     lambda: [nn.Conv2d(1, 1, 3, 2, 1), nn.PixelUnshuffle(2), nn.Conv2d(4, 1, 3, padding=1)], 13),
    ("bilinear upsampling, then a 1x1 conv", lambda: [nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(1, 1, 1)], 2),
    ("nearest upsampling, then a 1x1 conv", lambda: [nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 1)], 1),
    ("a 4x4 transposed conv at stride 2", lambda: [nn.ConvTranspose2d(1, 1, 4, 2, 1)], 2),
    ("a 6x6 transposed conv at stride 2", lambda: [nn.ConvTranspose2d(1, 1, 6, 2, 2)], 3),
    ("a dilated transposed conv", lambda: [nn.ConvTranspose2d(1, 1, 4, 2, 4, dilation=3)], 4),
    ("bicubic upsampling", lambda: [nn.Upsample(scale_factor=2, mode="bicubic"), nn.Conv2d(1, 1, 1)], 4),
    ("area downsampling by 2", lambda: [_Resize(scale_factor=0.5, mode="area"), nn.Conv2d(1, 1, 1)], 2),
    ("area downsampling by 3", lambda: [_Resize(size=8, mode="area"), nn.Conv2d(1, 1, 1)], 3),
    ("bilinear downsampling, no antialiasing", lambda: [_Resize(scale_factor=0.5, mode="bilinear"), nn.Conv2d(1, 1, 1)], 2),
    ("antialiased bilinear by 2", lambda: [_Resize(scale_factor=0.5, mode="bilinear", antialias=True), nn.Conv2d(1, 1, 1)], 4),
    ("antialiased bilinear by 4", lambda: [_Resize(scale_factor=0.25, mode="bilinear", antialias=True), nn.Conv2d(1, 1, 1)], 8),
    ("antialiased bicubic by 2", lambda: [_Resize(scale_factor=0.5, mode="bicubic", antialias=True), nn.Conv2d(1, 1, 1)], 8),
    ("area downsampling after a 3x3 conv", lambda: [nn.Conv2d(1, 1, 3, padding=1), _Resize(scale_factor=0.5, mode="area"),
                                                     nn.Conv2d(1, 1, 3, padding=1)], 8),
    ("trilinear, through a 5-D view", lambda: [nn.Conv2d(1, 1, 3, padding=1), _Resize3d(), nn.Conv2d(1, 1, 1)], 4),
    ("an LP pool 3 wide at stride 2 between 3x3 convs (its kernel is its second argument)",
     lambda: [nn.Conv2d(1, 1, 3, padding=1), nn.LPPool2d(1, 3, stride=2), nn.Conv2d(1, 1, 3, padding=1)], 9),
])
def test_receptive_field_of_resampling_layers_is_what_the_gradient_measures(name, layers, size):
    from course_utils.inspection import empirical_receptive_field, receptive_field

    torch.manual_seed(0)
    model = nn.Sequential(*layers())
    for p in model.parameters():
        nn.init.uniform_(p, 0.5, 1.0)                             # positive weights: no tap cancels another
    rows, _ = np.nonzero(empirical_receptive_field(model, (1, 24, 24)) > 1e-12)
    assert receptive_field(model, (1, 24, 24)).final == size == rows.max() - rows.min() + 1, name


def test_a_resize_by_a_different_factor_per_axis_is_refused_like_a_non_square_kernel():
    from course_utils.inspection import receptive_field

    with pytest.raises(ValueError, match=r"assumes square kernels, strides and paddings; got a resize of \(32, 32\) to "
                                         r"\(8, 32\), by a different factor per axis"):
        receptive_field(nn.Sequential(_Resize(size=(8, 32), mode="area"), nn.Conv2d(1, 1, 1)), (1, 32, 32))
    # the same factor on a map that is not square is fine
    assert receptive_field(nn.Sequential(_Resize(scale_factor=0.5, mode="area"), nn.Conv2d(1, 1, 1)), (1, 16, 32)).final == 2


def test_receptive_field_leaves_the_global_random_stream_alone():
    """A notebook cell that inspects a model must not change the weights of a model a later cell builds."""
    from course_utils.inspection import receptive_field
    from course_utils.models import CifarNet

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))   # built first: its init draws from the stream
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    receptive_field(model)
    assert torch.equal(torch.rand(3), expected)
    assert receptive_field(CifarNet()).final == 77


@pytest.mark.parametrize("factor, exact", [(2, True), (3, False)])
def test_the_field_after_upsampling_is_exact_by_two_and_a_lower_bound_beyond(factor, exact):
    """What receptive_field's docstring says of fractional jumps: a 3x3 conv after a x2 upsampling adds
    what the gradient measures; after x3 the table stays below the measurement."""
    from course_utils.inspection import empirical_receptive_field, receptive_field

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Upsample(scale_factor=factor), nn.Conv2d(1, 1, 3, padding=1))
    for p in model.parameters():
        nn.init.uniform_(p, 0.5, 1.0)
    rows, _ = np.nonzero(empirical_receptive_field(model, (1, 12, 12)) > 1e-12)
    measured, table = rows.max() - rows.min() + 1, receptive_field(model, (1, 12, 12)).final
    assert (table == measured) if exact else (table < measured)
