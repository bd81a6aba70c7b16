"""Looking inside a model: a torchsummary table that works on any device, and the receptive field of
every conv/pool layer, measured by running the model once.

``receptive_field`` follows the data, not the module list: it watches every tensor operation of one
forward pass (``TorchFunctionMode``), so residual branches, functional calls and layers used twice
are all accounted for. Where branches meet (``x + f(x)``), the larger receptive field is kept.
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .arithmetic import effective_kernel, transposed_reach
from .runtime import cuda_device_context


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a model (an nn.Module), got {type(model).__name__} {model!r:.40}; build one "
                        "first, e.g. get_model('cifarnet') or CifarNet()")


def _model_device(model: nn.Module) -> torch.device:
    _require_module(model)
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_image_input(model: nn.Module, input_size) -> None:
    """The image tools take a model and one image's shape, (C, H, W), without the batch dimension."""
    _require_module(model)
    if not (isinstance(input_size, (tuple, list)) and len(input_size) == 3 and all(
            isinstance(n, int) and n > 0 for n in input_size)):
        raise ValueError(f"input_size is one image's shape (C, H, W), without the batch, e.g. (3, 32, 32); "
                         f"got {input_size!r}")


def _runs_on(model: nn.Module, input_size) -> bool:
    """Whether one forward pass of a zero input of ``input_size`` (plus the batch of one) succeeds."""
    try:
        _probe(model, [], tuple(input_size))
        return True
    except Exception:  # noqa: BLE001 - any failure means no
        return False


def _check_one_sample(input_size) -> None:
    """The counting tools take one input's shape, without the batch dimension: (3, 32, 32) for an image,
    (C, L) for a 1-D model, (C, D, H, W) for a 3-D one."""
    if not (isinstance(input_size, (tuple, list)) and input_size and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in input_size)):
        raise ValueError(f"input_size is one input's shape, e.g. (3, 32, 32) for an image; got {input_size!r}")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Run in eval mode and restore the previous mode, so inspecting never moves BatchNorm statistics."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _probe(model: nn.Module, hooks: list, input_size: tuple[int, ...]) -> None:
    """One zero image through ``model`` (eval mode, no gradients) for ``hooks`` to watch; then remove them."""
    try:
        with _eval_mode(model), torch.no_grad():
            model(torch.zeros(1, *input_size, device=_model_device(model)))
    finally:
        for h in hooks:
            h.remove()


def summary(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32), print_table: bool = True) -> dict:
    """torchsummary's layer table, on whatever device the model is (CPU-only machines included).

    Returns ``{"total_params": ..., "trainable_params": ..., "table": str}``.
    """
    from torchsummary import summary as _summary

    device = _model_device(model)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"summary works on CPU or CUDA models; move the model from {device} with model.cpu()")
    buffer = io.StringIO()
    # torchsummary builds its input on the current CUDA device: make it the model's (cuda:1, say)
    with _eval_mode(model), torch.no_grad(), contextlib.redirect_stdout(buffer), cuda_device_context(device):
        _summary(model, tuple(input_size), device=device.type)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    table = _true_totals(buffer.getvalue(), total, trainable)
    if print_table:
        print(table, end="")
    return {"total_params": total, "trainable_params": trainable, "table": table}


def _true_totals(table: str, total: int, trainable: int) -> str:
    """torchsummary adds up its rows, so a module called twice (CBAM's shared MLP, run on the average-
    and the max-pooled vector) is counted twice. Put the model's own totals in the footer and, where
    they differ from the rows' sum, say why in one line under it."""
    counted = re.search(r"^Total params: ([\d,]+)$", table, flags=re.M)
    if counted is None or int(counted.group(1).replace(",", "")) == total:
        return table
    table = re.sub(r"^Total params: [\d,]+$", f"Total params: {total:,}", table, flags=re.M)
    table = re.sub(r"^Trainable params: [\d,]+$", f"Trainable params: {trainable:,}", table, flags=re.M)
    table = re.sub(r"^Non-trainable params: [\d,]+$", f"Non-trainable params: {total - trainable:,}", table,
                   flags=re.M)
    sizes = {k: float(v) for k, v in re.findall(r"^(Input size|Forward/backward pass size|Params size) \(MB\): ([\d.]+)$",
                                                   table, flags=re.M)}
    if len(sizes) == 3:  # torchsummary's megabytes: 4 bytes per parameter
        sizes["Params size"] = total * 4 / 1024**2
        table = re.sub(r"^Params size \(MB\): [\d.]+$", f"Params size (MB): {sizes['Params size']:.2f}", table,
                       flags=re.M)
        table = re.sub(r"^Estimated Total Size \(MB\): [\d.]+$",
                       f"Estimated Total Size (MB): {sum(sizes.values()):.2f}", table, flags=re.M)
    return table + (f"Note: the rows add up to {counted.group(1)} because a module used more than once (shared "
                    f"weights) has a row per call; the model has {total:,} parameters.\n")


@dataclass(frozen=True)
class RFRow:
    """One conv/pool layer: its settings, output size, jump and receptive field (input pixels)."""

    name: str
    op: str
    kernel: int
    stride: int
    dilation: int
    padding: int
    output_size: tuple[int, int]
    jump: float
    rf: float
    global_pool: bool = False


class ReceptiveFieldTable(list):
    """Rows of ``RFRow`` in execution order. ``final`` is the receptive field of the map the network pools
    globally last (its classifier's global pooling, or a flatten): how much of the image one position of
    that map sees. Branches count: a map that is the sum of a residual body and a shortcut sees what the
    body sees, even when the shortcut's conv runs after the body's. Without global pooling, it is the
    field of the last conv/pool layer."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        # (field, jump) of the map behind the model's output: the map itself when the output is a map, the
        # map pooled into it when the output is global; None where the output was not followed
        self.output_field: tuple[float, float] | None = None

    def _final(self) -> tuple[float, float]:
        if self.output_field is not None:
            return self.output_field
        rows = [r for r in self if not r.global_pool]
        if not rows:
            raise ValueError("the model has no conv or pool layer")
        return rows[-1].rf, rows[-1].jump

    @property
    def final(self) -> int:
        return int(self._final()[0])

    @property
    def final_jump(self) -> float:
        """The jump of that map: how many input pixels apart its neighbouring positions sit."""
        return self._final()[1]

    def __str__(self) -> str:
        header = ("layer", "op", "k", "s", "d", "p", "out", "jump", "RF")
        lines = [
            (r.name or "-", r.op, str(r.kernel), str(r.stride), str(r.dilation), str(r.padding),
             f"{r.output_size[0]}x{r.output_size[1]}", f"{r.jump:g}", f"{r.rf:g}" + (" (global)" if r.global_pool else ""))
            for r in self
        ]
        widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
        out = [fmt.format(*header), "-" * (sum(widths) + 2 * (len(widths) - 1))]
        out += [fmt.format(*l) for l in lines]
        out.append(f"final receptive field: {self.final} pixels")
        return "\n".join(out)

    __repr__ = __str__


_CONV = {"conv1d", "conv2d", "conv3d"}
_POOL = {"max_pool2d", "avg_pool2d", "lp_pool2d"}
_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d"}
_RESAMPLE = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}


def _interpolation_taps(func, args, kwargs, x: torch.Tensor) -> int:
    """How many neighbouring input columns one output of ``func(x, ...)`` (an interpolation) reads at most:
    the receptive field grows by (taps − 1) input jumps. Measured, not looked up by mode, because it
    depends on every argument: nearest reads 1, bilinear 2, bicubic 4 when upsampling or without
    antialiasing; area downsampling by r reads r, and ``antialias=True`` widens bilinear and bicubic
    to about 2r and 4r. The same call runs on a probe whose channel c is one at column c and zero
    elsewhere (interpolation is linear and separable): output (c, ..., j) is input column c's weight in
    output column j. The probe holds W × (the map's size) values: 32 K for a 32 × 32 map, 11 M at 224."""
    w = x.shape[-1]
    probe = torch.zeros(1, w, *x.shape[2:], device=x.device)
    columns = torch.arange(w, device=x.device)
    probe[0, columns, ..., columns] = 1.0
    call_args = (probe, *args[1:]) if args else ()
    call_kwargs = {k: v for k, v in kwargs.items() if k != "input"}
    if not args:
        call_kwargs["input"] = probe
    weights = func(*call_args, **call_kwargs)[0]                  # (input column, ..., output column)
    read = weights.abs().reshape(w, -1, weights.shape[-1]).amax(dim=1) > 1e-12   # (input column, output column)
    index = columns[:, None].expand_as(read)
    first = torch.where(read, index, w).amin(dim=0)
    last = torch.where(read, index, -1).amax(dim=0)
    return max(1, int((last - first + 1).max()))


def _side(v) -> int:
    """One side of a square kernel, stride, padding or dilation (an int or a tuple of equal ints)."""
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"receptive_field assumes square kernels, strides and paddings; got {tuple(v)}")
        return int(v[0])
    return int(v)


def _arg(args, kwargs, index: int, name: str, default):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


class _Tracker(TorchFunctionMode):
    """Carries (receptive field, jump, global?) along every tensor of one forward pass.

    A tensor is *global* once a reduction has pooled away its spatial extent (global pooling, the
    squeeze of an attention gate). Global context is reported as its own row but not folded into the
    local receptive field: where a local and a global tensor meet (``x * gate``), the local one counts.
    """

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.meta: dict[int, tuple[float, float, bool]] = {}
        self.keep: list[torch.Tensor] = []  # keep tensors alive so their ids stay unique
        self.rows = ReceptiveFieldTable()
        self.names = names

    def mark(self, t: torch.Tensor, rf: float, jump: float, is_global: bool = False,
             pooled: tuple[float, float] | None = None) -> None:
        """``pooled``: for a global tensor, the (field, jump) of the map pooled into it."""
        self.meta[id(t)] = (rf, jump, is_global, pooled)
        self.keep.append(t)

    def _row(self, op, k, s, d, p, out, jump, rf, is_global) -> None:
        self.rows.append(RFRow(self.names[-1] if self.names else "", op, k, s, d, p,
                               (int(out.shape[-2]), int(out.shape[-1])), jump, rf, is_global))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [self.meta[id(a)] for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor) and id(a) in self.meta]
        if not inputs:
            return out
        local = [m for m in inputs if not m[2]]
        is_global = not local
        rf = max(m[0] for m in (local or inputs))
        jump = max(m[1] for m in (local or inputs))
        name = getattr(func, "__name__", "")
        x = args[0] if args else kwargs.get("input")
        seen = (rf, jump)   # the local map going in: what a global pooling here pools
        if (not is_global and isinstance(out, torch.Tensor) and out.dim() <= 2 and isinstance(x, torch.Tensor)
                and x.dim() >= 4 and tuple(x.shape[-2:]) != (1, 1)):
            # the map's positions are gone (x.mean((2, 3)), x.flatten(1), x.amax((2, 3))): what follows is
            # global context, and a conv over the channels of that vector (ECA as x.mean((2, 3)).unsqueeze(1)
            # and a Conv1d) does not widen the field of any position
            is_global = True
        if isinstance(out, torch.Tensor) and out.dim() >= 3 and isinstance(x, torch.Tensor) and not is_global:
            squeezed = out.shape[-2:] == (1, 1) and x.dim() >= 3 and tuple(x.shape[-2:]) != (1, 1)
            if name in _CONV:
                weight = _arg(args, kwargs, 1, "weight", None)
                k = _side(weight.shape[-1])
                s = _side(_arg(args, kwargs, 3, "stride", 1))
                p = _arg(args, kwargs, 4, "padding", 0)
                d = _side(_arg(args, kwargs, 5, "dilation", 1))
                p = (d * (k - 1) // 2 if p == "same" else 0) if isinstance(p, str) else _side(p)
                rf, jump = rf + (effective_kernel(k, d) - 1) * jump, jump * s
                self._row("conv", k, s, d, p, out, jump, rf, False)
            elif name in _POOL or name in _ADAPTIVE:
                if name in _POOL:
                    # lp_pool2d(input, norm_type, kernel_size, stride=None) has no padding and its kernel one
                    # place later than max_pool2d(input, kernel_size, stride, padding, dilation) and avg_pool2d's
                    at = 2 if name == "lp_pool2d" else 1
                    k = _side(_arg(args, kwargs, at, "kernel_size", 1))
                    s = _arg(args, kwargs, at + 1, "stride", None)
                    s = k if s in (None, [], ()) else _side(s)
                    p = 0 if name == "lp_pool2d" else _side(_arg(args, kwargs, 3, "padding", 0))
                    d = _side(_arg(args, kwargs, 4, "dilation", 1)) if name == "max_pool2d" else 1
                    op = name.split("_")[0] + "pool"
                else:
                    k = s = x.shape[-1] // out.shape[-1]
                    p, d, op = 0, 1, name.split("_")[1] + "pool"
                rf, jump = rf + (effective_kernel(k, d) - 1) * jump, jump * s
                self._row(op, k, s, d, p, out, jump, rf, squeezed)
                is_global = squeezed
            elif name == "conv_transpose2d":  # an upsampling conv: outputs sit jump/stride apart
                weight = _arg(args, kwargs, 1, "weight", None)
                k = _side(weight.shape[-1])
                s = _side(_arg(args, kwargs, 3, "stride", 1))
                p = _side(_arg(args, kwargs, 4, "padding", 0))
                d = _side(_arg(args, kwargs, 7, "dilation", 1))
                rf, jump = rf + transposed_reach(k, s, d) * jump, jump / s
                self._row("convT", k, s, d, p, out, jump, rf, False)
            elif name == "pixel_unshuffle":   # each output holds an r×r block of inputs in its channels
                r = x.shape[-1] // out.shape[-1]
                rf, jump = rf + (r - 1) * jump, jump * r
                self._row("unshuffle", r, r, 1, 0, out, jump, rf, False)
            elif name == "pixel_shuffle":     # denser outputs, each a copy of one input: no new context
                jump = jump * x.shape[-1] / out.shape[-1]
            elif name in _RESAMPLE:           # new context where one output blends several inputs
                if x.dim() == 4 and out.shape[-2] * x.shape[-1] != out.shape[-1] * x.shape[-2]:
                    raise ValueError(f"receptive_field assumes square kernels, strides and paddings; got a resize of "
                                     f"{tuple(x.shape[-2:])} to {tuple(out.shape[-2:])}, by a different factor per axis")
                rf += (_interpolation_taps(func, args, kwargs, x) - 1) * jump
                jump = jump * x.shape[-1] / out.shape[-1]
            elif squeezed:  # x.mean((2, 3)) and friends: global context
                is_global = True
        pooled = None
        if is_global:   # pooled here (from a local map), or carried from the global inputs' own
            pooled = seen if local else max((m[3] for m in inputs if m[3] is not None), default=None)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.mark(t, rf, jump, is_global, pooled)
        return out


def receptive_field(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32),
                    print_table: bool = False) -> ReceptiveFieldTable:
    """The receptive field (and jump) after every conv/pool layer of ``model``, in execution order.

    One forward pass of a random ``(1, *input_size)`` batch in eval mode is watched; nothing is
    trained or changed. Rows name the module that ran the operation (``c2.1.body.1.0``). ``.final``
    is the receptive field of the map the network pools globally last (``ReceptiveFieldTable.final``);
    printing the table shows every row.

    After upsampling (pixel shuffle, a resize, a transposed conv) the jump is a fraction of a pixel and a
    conv's growth is counted in those fractions: exact for a factor of 2 with odd kernels (the kit's
    cases), a lower bound for 3 or more, where a 3×3 conv after a ×3 upsampling reaches one whole input
    pixel further, not two thirds of one (``empirical_receptive_field`` measures it).
    """
    _check_image_input(model, input_size)
    names: list[str] = []

    def enter(name: str):
        def hook(module, args) -> None:
            names.append(name)
        return hook

    def leave(module, args, output) -> None:
        names.pop()

    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(enter(name)))
        hooks.append(module.register_forward_hook(leave))
    # drawn from a generator of its own: the global one is left where it was, so a model built after this call
    # gets the same weights whether or not the cell that called it ran (or ran twice)
    x = torch.rand(1, *input_size, generator=torch.Generator().manual_seed(0)).to(_model_device(model))
    tracker = _Tracker(names)
    tracker.mark(x, 1.0, 1.0)
    try:
        with _eval_mode(model), torch.no_grad(), tracker:
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    followed = [tracker.meta[id(t)] for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and id(t) in tracker.meta]
    if followed:
        rf, jump, is_global, pooled = followed[0]
        tracker.rows.output_field = pooled if is_global else (rf, jump)
    if print_table:
        print(tracker.rows)
    return tracker.rows


def empirical_receptive_field(module: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32),
                              seed: int = 0) -> "np.ndarray":
    """Which input pixels actually influence the centre of ``module``'s output: the magnitude of the
    gradient of the centre output position (summed over channels) with respect to the input,
    summed over input channels. Returns an ``(H, W)`` array; zero outside the theoretical receptive field.

    Luo et al., "Understanding the Effective Receptive Field in Deep Convolutional Neural Networks",
    2016, https://arxiv.org/abs/1701.04128: the effective field is smaller than the theoretical one,
    Gaussian-like, concentrated at its centre.
    """
    _check_image_input(module, input_size)
    import numpy as np  # noqa: F401  (return type)

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, *input_size, generator=g).to(_model_device(module)).requires_grad_(True)
    with _eval_mode(module):
        out = module(x)
        h, w = out.shape[-2] // 2, out.shape[-1] // 2
        # the gradient with respect to the input alone: .backward() would also add one to every weight's
        # .grad, on a network the notebook goes on using, with each re-run of the cell
        (grad,) = torch.autograd.grad(out[0, :, h, w].sum(), x)
    return grad[0].abs().sum(0).cpu().numpy()


def mean_empirical_receptive_field(module: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32),
                                   inputs: int = 8) -> "np.ndarray":
    """``empirical_receptive_field`` averaged over ``inputs`` random inputs (seeds 0 to ``inputs - 1``):
    one input's gradient is noisy, their mean shows the field's shape (Luo et al. 2016 average too)."""
    if inputs < 1:
        raise ValueError(f"inputs must be at least 1, got {inputs}")
    return sum(empirical_receptive_field(module, input_size, seed=s) for s in range(inputs)) / inputs


def central_share(grad: "np.ndarray", side: int, centre: "int | None" = None) -> float:
    """The share of ``grad``'s total that lies in the ``side``×``side`` square around pixel
    (``centre``, ``centre``) (default: the middle of ``grad``): rows and columns from
    ``centre - side // 2`` on, clipped to the array. How concentrated an empirical receptive field is;
    an odd ``side`` centres the square exactly, and the image's own side takes all of it."""
    if side < 1:
        raise ValueError(f"side must be at least 1 pixel, got {side}")
    centre = grad.shape[0] // 2 if centre is None else centre
    lo = max(0, centre - side // 2)
    hi = centre - side // 2 + side
    return float(grad[lo:hi, lo:hi].sum() / grad.sum())


def stack_footprint(dilations: list[int], kernel: int = 3, size: int | None = None) -> "np.ndarray":
    """How many paths lead from the centre output of a stack of k×k convs with the given dilations
    to each input pixel (all weights 1, no non-linearity). Zeros inside the covered square are
    the *gridding* artifact of repeated equal dilations (Wang et al., "Understanding Convolution for
    Semantic Segmentation", 2018, https://arxiv.org/abs/1702.08502)."""
    span = 1 + sum(d * (kernel - 1) for d in dilations)
    size = size or span + 2
    x = torch.zeros(1, 1, size, size)
    x[0, 0, size // 2, size // 2] = 1.0
    w = torch.ones(1, 1, kernel, kernel)
    for d in dilations:  # a stack of all-ones kernels is symmetric: spreading the centre out = paths in
        x = torch.nn.functional.conv2d(x, w, padding=d * (kernel - 1) // 2, dilation=d)
    return x[0, 0].numpy()


@contextlib.contextmanager
def capture(model: nn.Module, predicate):
    """Record the outputs of every sub-module for which ``predicate(name, module)`` is true, during the
    forward passes run inside the ``with`` block: ``{name: [output, ...]}`` (detached, on the CPU).

    Example: the attention weights of every gate: ``capture(model, lambda n, m: n.endswith("gate"))``.
    """
    records: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in model.named_modules():
        if predicate(name, module):
            def hook(m, args, out, name=name):
                records.setdefault(name, []).append(out.detach().float().cpu())
            hooks.append(module.register_forward_hook(hook))
    try:
        yield records
    finally:
        for h in hooks:
            h.remove()


def outputs_over(model: nn.Module, name: str, loader, device: torch.device | str,
                 channels_last: bool = True) -> "tuple[torch.Tensor, np.ndarray]":
    """The outputs of the sub-module ``name`` for every batch of ``loader`` (eval mode, no gradients; the
    model's mode restored after), concatenated on the CPU, with the batches' labels: what an attention
    gate says about each image. ``loader`` yields ``(images, labels)``, already normalised."""
    import numpy as np

    from .training import _to_device

    if name not in dict(model.named_modules()):
        raise ValueError(f"{type(model).__name__} has no sub-module {name!r}; list them with "
                         "[n for n, _ in model.named_modules()]")
    labels = []
    with capture(model, lambda n, m: n == name) as records, torch.no_grad(), _eval_mode(model):
        for x, y in loader:
            model(_to_device(x, torch.device(device), channels_last))
            labels.append(np.asarray(y))
    return torch.cat(records[name]), np.concatenate(labels)


@dataclass
class GateStatistics:
    """What a channel gate (SE's excitations, N images x C channels) does per class. Each class's mean
    excitation, and its ``deviation`` from the mean over all images; per channel, how far the class means
    spread (``between``: their standard deviation over the classes) against how far one class's images
    spread (``within``: the standard deviation inside a class, averaged over the classes), and its mean
    level (``channel_means``): a fixed scale per channel is something a convolution could learn itself."""

    per_class: "np.ndarray"       # (classes, C)
    within: "np.ndarray"          # (C,)
    channel_means: "np.ndarray"   # (C,): the mean over all images

    @property
    def deviation(self) -> "np.ndarray":
        """(classes, C): each class's mean minus the mean over all images."""
        return self.per_class - self.channel_means

    @property
    def between(self) -> "np.ndarray":
        """(C,): how far a channel's class means spread (their standard deviation over the classes)."""
        return self.deviation.std(0)

    @property
    def class_sizes(self) -> "np.ndarray":
        """How much each class moves the gate: its mean |deviation| over the channels."""
        import numpy as np

        return np.abs(self.deviation).mean(1)

    def correlation(self) -> "np.ndarray":
        """(classes, classes): how alike two classes' deviations are (Pearson correlation over channels)."""
        import numpy as np

        return np.corrcoef(self.deviation)


def gate_statistics(excitations: "np.ndarray", labels: "np.ndarray", num_classes: int = 10) -> GateStatistics:
    """``GateStatistics`` of ``excitations`` (N x C, or N x C x 1 x 1 as SE returns them) for ``labels``."""
    import numpy as np

    weights = np.asarray(excitations, dtype=np.float64).reshape(len(excitations), -1)
    labels = np.asarray(labels)
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise ValueError(f"no images of class(es) {missing} among the {len(labels)} given; every class needs some")
    per_class = np.stack([weights[labels == c].mean(0) for c in range(num_classes)])
    within = np.stack([weights[labels == c].std(0) for c in range(num_classes)]).mean(0)
    return GateStatistics(per_class=per_class, within=within, channel_means=weights.mean(0))


def border_profile(grid: "np.ndarray") -> dict[str, float]:
    """Mean of a square map (a spatial gate's, say) over its border positions against its inner ones,
    and over each edge: ``border``, ``inner``, ``left``, ``right``, ``top``, ``bottom``. Where a map's
    shape comes from position, not content, this is where it shows."""
    import numpy as np

    grid = np.asarray(grid)
    if grid.ndim != 2 or min(grid.shape) < 3:
        raise ValueError(f"expected a 2-D map of at least 3x3 positions, got shape {grid.shape}")
    ring = np.ones_like(grid, dtype=bool)
    ring[1:-1, 1:-1] = False
    return {"border": float(grid[ring].mean()), "inner": float(grid[~ring].mean()),
            "left": float(grid[:, 0].mean()), "right": float(grid[:, -1].mean()),
            "top": float(grid[0].mean()), "bottom": float(grid[-1].mean())}


def macs_by_module(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> dict[str, int]:
    """Multiply-accumulates of one forward pass of one image, per convolution and linear layer
    (``{module name: MACs}``, in execution order; a module run twice counts twice). ``count_macs``
    is their sum; see it for what is counted."""
    _check_one_sample(input_size)
    counts: dict[str, int] = {}

    def hook(name: str):
        def conv_or_linear(m: nn.Module, args, out) -> None:
            if isinstance(m, nn.Linear):
                macs = out[0].numel() * m.in_features
            elif m.transposed:
                macs = args[0][0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
            else:
                macs = out[0].numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
            counts[name] = counts.get(name, 0) + macs
        return conv_or_linear

    try:
        _probe(model, [m.register_forward_hook(hook(name)) for name, m in model.named_modules()
                       if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))], input_size)
    except (ValueError, RuntimeError) as err:
        if len(input_size) == 4 and input_size[0] == 1 and _runs_on(model, input_size[1:]):
            # (1, 3, 32, 32): a batch of one given as one input, which the model takes without the 1
            raise ValueError(f"input_size is one input's shape without the batch dimension: {tuple(input_size[1:])}, "
                             f"not {tuple(input_size)} (the tools add the batch of one themselves)") from err
        raise
    return counts


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass of one image, counted over every convolution (1-D,
    2-D, 3-D, grouped, dilated, strided and transposed) and linear layer: the bulk of the work.
    BatchNorm, activations, pooling and the adds of residual connections are left out.

    A convolution does one ``(C_in/groups)·k²`` dot product per *output* value. A transposed
    convolution spreads every *input* value over a ``k²·(C_out/groups)`` patch, so it costs
    ``C_in·(C_out/groups)·k²`` per input pixel (``k²·C_in·C_out·H_in·W_in`` without groups): the direct
    (scatter) cost, which equals the zero-inserted equivalent's useful products when ``padding = 0``; with
    padding, the products that land in the cropped border are counted too.
    """
    return sum(macs_by_module(model, input_size).values())


@dataclass
class StageRow:
    name: str
    kind: str
    output: tuple[int, ...]
    params: int
    macs: int


class StageTable(list):
    """Rows of ``stages``; printing gives the table with a total line."""

    def __str__(self) -> str:
        wn = max([5] + [len(r.name) for r in self]) + 2
        wk = max([6] + [len(r.kind) for r in self]) + 2
        head = f"{'stage':<{wn}}{'layers':<{wk}}{'output':>14}{'parameters':>12}{'MACs':>12}{'share':>8}"
        rule = "-" * len(head)
        total_p, total_m = sum(r.params for r in self), sum(r.macs for r in self)
        lines = [head, rule]
        for r in self:
            out = " x ".join(str(v) for v in r.output)
            share = f"{100 * r.macs / total_m:.1f}%" if total_m else "-"
            lines.append(f"{r.name:<{wn}}{r.kind:<{wk}}{out:>14}{r.params:>12,}{r.macs:>12,}{share:>8}")
        lines += [rule, f"{'total':<{wn + wk + 14}}{total_p:>12,}{total_m:>12,}"]
        return "\n".join(lines)


def _layer_kinds(module: nn.Module) -> str:
    """The module's leaf layers by kind, e.g. "3 conv (2 dw), 3 bn" (what a stage is made of)."""
    convs = [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    parts = []
    if convs:
        dw = sum(1 for m in convs if m.groups > 1 and m.groups == m.in_channels)
        dil = sum(1 for m in convs if max(_side(d) for d in (m.dilation,)) > 1)
        extra = ", ".join(x for x in (f"{dw} dw" if dw else "", f"{dil} dilated" if dil else "") if x)
        parts.append(f"{len(convs)} conv" + (f" ({extra})" if extra else ""))
    for kind, label in ((nn.modules.batchnorm._BatchNorm, "bn"), (nn.Linear, "linear"),
                        (nn.modules.pooling._MaxPoolNd, "maxpool"), (nn.modules.pooling._AdaptiveAvgPoolNd, "gap"),
                        (nn.Dropout, "dropout")):
        n = sum(1 for m in module.modules() if isinstance(m, kind))
        if n:
            parts.append(f"{n} {label}")
    return ", ".join(parts) or type(module).__name__


def stages(model: nn.Module, input_size: tuple[int, ...] = (3, 32, 32), print_table: bool = True) -> StageTable:
    """A short summary: one row per top-level block of ``model`` (CifarNet's c1, c2, c3, c4, head)
    with what it is made of, its output shape for one image, its parameters and its
    multiply-accumulates (and their share of the total). Where torchsummary lists every layer,
    this shows where the parameters and the compute sit."""
    macs = macs_by_module(model, input_size)
    shapes: dict[str, tuple[int, ...]] = {}
    children = list(model.named_children())

    def record(name: str):
        def hook(m, args, out) -> None:
            if isinstance(out, torch.Tensor):
                shapes[name] = tuple(out.shape[1:])
        return hook

    _probe(model, [child.register_forward_hook(record(name)) for name, child in children], input_size)
    table = StageTable()
    for name, child in children:
        table.append(StageRow(name, _layer_kinds(child), shapes.get(name, ()),
                              sum(p.numel() for p in child.parameters()),
                              sum(v for k, v in macs.items() if k == name or k.startswith(name + "."))))
    if print_table:
        print(table)
    return table
