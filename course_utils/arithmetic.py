"""Convolution arithmetic as pure functions: output size, parameters, multiply-accumulates,
receptive-field growth.

Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016,
https://arxiv.org/abs/1603.07285; Araujo et al., "Computing Receptive Fields of Convolutional
Neural Networks", Distill 2019, https://distill.pub/2019/computing-receptive-fields/.
"""
from __future__ import annotations

import math
import numbers


def _check(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     transposed: bool = False, output_padding: int = 0) -> int:
    """Spatial output size of a convolution (or transposed convolution) along one axis.

    Convolution:  ``floor((size + 2·padding − dilation·(kernel − 1) − 1) / stride) + 1``
    Transposed:   ``(size − 1)·stride − 2·padding + dilation·(kernel − 1) + output_padding + 1``

    These are the formulas of ``nn.Conv2d`` and ``nn.ConvTranspose2d``. A configuration whose
    (dilated) kernel does not fit in the padded input raises ``ValueError``.
    """
    _check("size", size, 1)
    _check("kernel", kernel, 1)
    _check("stride", stride, 1)
    _check("padding", padding, 0)
    _check("dilation", dilation, 1)
    _check("output_padding", output_padding, 0)
    span = dilation * (kernel - 1) + 1  # the dilated kernel's extent
    if transposed:
        if output_padding >= max(stride, dilation):
            raise ValueError(
                f"output_padding={output_padding} must be smaller than stride={stride} or dilation={dilation}"
            )
        out = (size - 1) * stride - 2 * padding + span + output_padding
    else:
        if output_padding:
            raise ValueError("output_padding only applies to transposed convolutions (transposed=True)")
        if size + 2 * padding < span:
            raise ValueError(
                f"a kernel spanning {span} pixels (kernel={kernel}, dilation={dilation}) does not fit in an input "
                f"of {size} pixels padded by {padding} on each side ({size + 2 * padding} pixels)"
            )
        out = (size + 2 * padding - span) // stride + 1
    if out < 1:
        raise ValueError(f"output size would be {out} (size={size}, kernel={kernel}, stride={stride}, "
                         f"padding={padding}, dilation={dilation}); it must be at least 1")
    return out


def _check_groups(in_ch: int, out_ch: int, groups: int) -> None:
    _check("in_ch", in_ch, 1)
    _check("out_ch", out_ch, 1)
    _check("groups", groups, 1)
    if in_ch % groups or out_ch % groups:
        raise ValueError(f"in_ch={in_ch} and out_ch={out_ch} must be divisible by groups={groups} "
                         "(each group convolves in_ch/groups channels into out_ch/groups)")


def conv_params(in_ch: int, out_ch: int, kernel: int, groups: int = 1, bias: bool = True) -> int:
    """Weights (and biases) of a k×k ``Conv2d``: ``k²·(C_in/groups)·C_out (+ C_out)``."""
    _check_groups(in_ch, out_ch, groups)
    _check("kernel", kernel, 1)
    return kernel * kernel * (in_ch // groups) * out_ch + (out_ch if bias else 0)


def conv_macs(in_ch: int, out_ch: int, kernel: int, out_h: int, out_w: int | None = None, groups: int = 1) -> int:
    """Multiply-accumulates of a ``Conv2d``: one ``k²·C_in/groups`` dot product per output value."""
    out_w = out_h if out_w is None else out_w
    _check_groups(in_ch, out_ch, groups)
    _check("kernel", kernel, 1)
    _check("out_h", out_h, 1)
    _check("out_w", out_w, 1)
    return kernel * kernel * (in_ch // groups) * out_ch * out_h * out_w


def separable_ratio(in_ch: int, out_ch: int, kernel: int = 3) -> float:
    """Weights of a depthwise-separable conv over a standard one (no biases): ``1/C_out + 1/k²``."""
    _check("in_ch", in_ch, 1)
    _check("out_ch", out_ch, 1)
    _check("kernel", kernel, 1)
    standard = kernel * kernel * in_ch * out_ch
    separable = kernel * kernel * in_ch + in_ch * out_ch
    return separable / standard


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: ``dilation·(kernel − 1) + 1`` (3×3 with dilation 2 spans 5×5)."""
    _check("kernel", kernel, 1)
    _check("dilation", dilation, 1)
    return dilation * (kernel - 1) + 1


def receptive_field_step(rf: float, jump: float, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[float, float]:
    """One layer's effect on (receptive field, jump), both in input pixels.

    ``rf_out = rf_in + (effective_kernel − 1)·jump_in`` and ``jump_out = jump_in·stride``.
    The jump is the distance, in input pixels, between neighbouring outputs of the layer.
    """
    if not rf >= 1 or not jump > 0:
        raise ValueError(f"rf must be >= 1 and jump > 0 (both in input pixels), got rf={rf!r}, jump={jump!r}")
    _check("stride", stride, 1)
    return rf + (effective_kernel(kernel, dilation) - 1) * jump, jump * stride


def transposed_reach(kernel: int, stride: int = 1, dilation: int = 1) -> int:
    """How many input positions apart the farthest two inputs of one transposed-conv output are: output
    ``o`` reads input ``i`` through tap ``t`` when ``o = i·stride + t·dilation − padding``, so the taps one
    output uses step ``stride/g`` apart (``g = gcd(stride, dilation)``) and its inputs ``dilation/g`` apart:
    ``⌊(kernel − 1)·g/stride⌋·dilation/g``. The receptive field grows by that many input jumps (a 4×4 kernel at
    stride 2 reads two neighbouring inputs: 1; at stride 1 it is a plain conv's ``dilation·(kernel − 1)``)."""
    _check("kernel", kernel, 1)
    _check("stride", stride, 1)
    _check("dilation", dilation, 1)
    g = math.gcd(stride, dilation)
    return (kernel - 1) * g // stride * (dilation // g)


def receptive_field_of_stack(layers: list[tuple[int, int] | tuple[int, int, int]]) -> list[tuple[float, float]]:
    """Receptive field and jump after each layer of a plain stack of (kernel, stride[, dilation])."""
    rf, jump, out = 1.0, 1.0, []
    for layer in layers:
        kernel, stride, *rest = layer
        rf, jump = receptive_field_step(rf, jump, kernel, stride, rest[0] if rest else 1)
        out.append((rf, jump))
    return out


def dilation_for_receptive_field(target: int, kernel: int = 3) -> int:
    """Smallest dilation that makes one k×k kernel span at least ``target`` pixels."""
    _check("target", target, 1)
    if not isinstance(kernel, numbers.Integral) or isinstance(kernel, bool) or kernel < 2:
        raise ValueError(f"kernel must be an integer >= 2 to be dilated (a {kernel!r}-wide kernel spans "
                         f"{kernel!r} pixel(s) whatever the dilation), got kernel={kernel!r}")
    return max(1, math.ceil((target - 1) / (kernel - 1)))


def receptive_field_closed_form(layers: list[tuple[int, ...]]) -> dict[str, int]:
    """The receptive field of a plain stack in closed form (Araujo et al., Distill 2019, eqs. for
    ``r0``, ``S0`` and ``P0``), from ``(kernel, stride[, padding[, dilation]])`` per layer:

    * receptive field ``r0 = 1 + Σ_l (k_l − 1)·∏_{i<l} s_i`` (``k_l`` the effective, dilated kernel),
    * effective stride ``S0 = ∏_l s_l``: how far apart neighbouring outputs look (the jump),
    * effective padding ``P0 = Σ_l p_l·∏_{i<l} s_i``: how far the first output's field reaches into
      the padding on the left/top.

    Output position ``u`` (0-based) then sees input pixels ``u·S0 − P0`` to ``u·S0 − P0 + r0 − 1``
    (``field_span``). With several paths (residual branches) the field is the largest over the paths.
    """
    rf, stride, padding = 1, 1, 0
    for layer in layers:
        kernel, s, *rest = layer
        p = rest[0] if rest else 0
        d = rest[1] if len(rest) > 1 else 1
        _check("stride", s, 1)
        _check("padding", p, 0)
        rf += (effective_kernel(kernel, d) - 1) * stride
        padding += p * stride
        stride *= s
    return {"rf": rf, "stride": stride, "padding": padding}


def field_span(u: int, rf: int, stride: int, padding: int) -> tuple[int, int]:
    """The first and last input pixel (0-based, inclusive; negative or past the edge = padding) that
    output position ``u`` of a stack sees, from its closed form: ``(u·S0 − P0, u·S0 − P0 + r0 − 1)``.
    Its centre is ``u·S0 − P0 + (r0 − 1)/2``."""
    _check("u", u, 0)
    first = u * stride - padding
    return first, first + rf - 1


def input_positions_read(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> list[int]:
    """The input positions (0-based, along one axis) that at least one output of the convolution
    reads: output ``i`` reads ``i·stride − padding + k·dilation`` for ``k = 0 … kernel − 1`` (positions
    in the padding left out). A position not in the list never reaches the output.

    A 3×3 stride-2 conv (padding 1) reads every position; with dilation 2 (padding 2) it reads only the
    even ones: stride and dilation share the factor 2, so the taps of every output land on the same
    grid and three quarters of a 2-D input are skipped (the "gridding" of Wang et al., 2018,
    https://arxiv.org/abs/1702.08502, in a single layer).
    """
    out = conv_output_size(size, kernel, stride, padding, dilation)
    return sorted({p for i in range(out) for k in range(kernel)
                   if 0 <= (p := i * stride - padding + k * dilation) < size})
