"""The course assignment, checked: design C1 C2 C3 C4 and an output block for CIFAR-10 under six rules.

``check(model)`` runs the model once on a ``1 × 3 × 32 × 32`` batch, watches every operation
(``TorchFunctionMode``: functional calls and layers used twice are seen too) and reports each rule
as a row: what it asks, what was measured, pass or fail, and for a failure a hint at the fix.

The rules:

1. fewer than 200,000 parameters;
2. no max-pooling (downsample with strided convolutions; the rule, as the assignment states it, forbids
   max-pooling only, so an average pool that downsamples passes it, though it learns nothing either);
3. at least one depthwise-separable convolution (a k×k conv with ``groups = C_in``, then a 1×1 conv);
4. at least one dilated convolution (``dilation > 1``);
5. global average pooling before the classifier;
6. a receptive field of more than 44 pixels (``receptive_field(model).final``).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

MAX_PARAMS = 200_000
MIN_RF = 45  # "more than 44"


@dataclass
class RuleResult:
    rule: str
    requirement: str
    measured: str
    passed: bool
    hint: str = ""


class Report(list):
    """``RuleResult`` rows; ``passed`` is true when every rule passes. Printing gives the table and,
    under it, a hint for each failed rule."""

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self)

    def __getitem__(self, key):
        if isinstance(key, str):
            for r in self:
                if r.rule == key:
                    return r
            raise KeyError(f"no rule {key!r}; the rules are {', '.join(r.rule for r in self)}")
        return super().__getitem__(key)

    def failed(self) -> list[str]:
        return [r.rule for r in self if not r.passed]

    def __str__(self) -> str:
        wr = max(len(r.rule) for r in self) + 2
        wq = max(len(r.requirement) for r in self) + 2
        wm = max(len(r.measured) for r in self) + 2
        lines = [f"{'rule':<{wr}}{'requirement':<{wq}}{'measured':<{wm}}verdict", "-" * (wr + wq + wm + 7)]
        lines += [f"{r.rule:<{wr}}{r.requirement:<{wq}}{r.measured:<{wm}}{'pass' if r.passed else 'FAIL'}" for r in self]
        hints = [f"* {r.rule}: {r.hint}" for r in self if not r.passed]
        verdict = "all rules pass" if self.passed else f"{len(hints)} rule(s) fail:"
        return "\n".join(lines + ["", verdict] + hints)

    __repr__ = __str__


@dataclass
class _Conv:
    in_ch: int
    out_ch: int
    kernel: tuple[int, int]
    dilation: int
    groups: int
    in_hw: tuple[int, int] = (0, 0)    # the map it reads
    out_hw: tuple[int, int] = (0, 0)   # the map it writes


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _Watcher(TorchFunctionMode):
    """Records convolutions, max-pooling and global pooling in one forward pass, and after which call the
    last map larger than 1×1 was made: a global pool is the network's only when no map follows it (the
    squeeze inside an SE, ECA or CBAM gate pools too, and its gate then rescales a map)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs: list[_Conv] = []
        self.max_pools: list[str] = []
        self.pools: list[tuple[int, str]] = []   # (call number, what pooled) of every global pool
        self.calls = 0
        self.last_map = -1                       # call number of the last op whose result is a map > 1x1
        # tensors on their way to a global pool (a map averaged over one of H, W, flattened, permuted or summed):
        # id -> (the tensor, a label per dim: "n" images, "c" channels, "s" positions, "x" a mix, "1" a dim of
        # size 1; and the factor its values carry: positions summed over what they were divided by, 1 for averages)
        self._partial: dict[int, tuple[torch.Tensor, tuple[str, ...], float]] = {}

    @property
    def global_pools(self) -> list[str]:
        """The global pools after which no map is made: what reaches the classifier."""
        return [name for call, name in self.pools if call > self.last_map]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.calls += 1
        name = getattr(func, "__name__", "")
        x = args[0] if args else kwargs.get("input")
        if isinstance(out, torch.Tensor) and out.dim() == 4 and tuple(out.shape[-2:]) != (1, 1):
            self.last_map = self.calls
        if name == "conv2d":
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            dilation = args[5] if len(args) > 5 else kwargs.get("dilation", 1)
            groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
            self.convs.append(_Conv(int(x.shape[1]), int(weight.shape[0]), tuple(weight.shape[-2:]),
                                    max(_pair(dilation)), int(groups), tuple(x.shape[-2:]), tuple(out.shape[-2:])))
        elif "max_pool" in name:
            # a max-pool that leaves a map downsamples, which the rule forbids; one down to 1x1 is a global
            # squeeze (CBAM's channel gate, written as its authors do), which is not downsampling
            pooled = out[0] if isinstance(out, tuple) else out
            if not (isinstance(pooled, torch.Tensor) and pooled.dim() >= 3 and all(n == 1 for n in pooled.shape[2:])):
                self.max_pools.append(name)
        elif isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor):
            try:
                self._watch_pooling(name, x, out, args, kwargs)
            except Exception:  # noqa: BLE001 - a call written in a way not foreseen: lose track of it, never fail
                self._partial.pop(id(out), None)
        return out

    @staticmethod
    def _window_covers(x: torch.Tensor, args, kwargs) -> bool:
        """Whether ``avg_pool2d(x, ...)``'s one window spans the whole map: ``F.avg_pool2d(x, 3)`` on a 4×4
        map also makes 1×1, from the top-left 3×3 alone."""
        kernel = args[1] if len(args) > 1 else kwargs["kernel_size"]
        padding = args[3] if len(args) > 3 else kwargs.get("padding", 0)
        (kh, kw), (ph, pw) = _pair(kernel), _pair(padding)
        return kh - ph >= x.shape[-2] and kw - pw >= x.shape[-1]

    def _watch_pooling(self, name: str, x: torch.Tensor, out: torch.Tensor, args, kwargs) -> None:
        """A global pool is an average over every spatial position of a map. Seen in these forms:
        ``adaptive_avg_pool2d(x, 1)``, ``avg_pool2d`` whose window covers the whole map, ``x.mean((2, 3))``
        (``torch.mean`` too), or in steps: ``x.mean(-1).mean(-1)`` (keepdim or not), ``x.flatten(2).mean(-1)``,
        ``x.view(n, c, -1).mean(2)``, channels moved last first (``x.permute(0, 2, 3, 1).mean((1, 2))``, a
        LayerNorm or linear layer on the channels between), or a sum over the positions divided by their number
        (``x.sum((2, 3)) / (h * w)``, ``/ h / w``, ``* (1 / (h * w))``, ``/=``).

        Each step's result is followed with a label per dim (in ``_partial``): images, channels, positions, or
        a mix of channels and positions (``x.permute(0, 2, 1, 3).reshape(n, h, -1)``), which no average pools;
        and the factor its values carry (the number of positions summed, over what they were divided by)."""
        if name in ("adaptive_avg_pool2d", "avg_pool2d"):
            if (x.dim() == 4 and tuple(x.shape[-2:]) != (1, 1) and out.dim() == 4 and tuple(out.shape[-2:]) == (1, 1)
                    and (name == "adaptive_avg_pool2d" or self._window_covers(x, args, kwargs))):
                self.pools.append((self.calls, name))
            return
        tracked = id(x) in self._partial and self._partial[id(x)][0] is x
        if tracked:
            labels, factor = self._partial[id(x)][1:]
        elif x.dim() == 4 and tuple(x.shape[-2:]) != (1, 1):
            labels, factor = ("n", "c", "s", "s"), 1.0                 # a map, N x C x H x W
        else:
            return
        rank = x.dim()
        if name == "permute":
            order = _dims(args[1:] if len(args) > 2 else args[1] if len(args) > 1 else kwargs["dims"])
            self._follow(out, tuple(labels[d % rank] for d in order), factor)
        elif name in ("transpose", "swapaxes", "swapdims"):
            a, b = _dims(list(args[1:3]) + [kwargs[k] for k in ("dim0", "dim1", "axis0", "axis1") if k in kwargs])
            swapped = list(labels)
            swapped[a % rank], swapped[b % rank] = labels[b % rank], labels[a % rank]
            self._follow(out, tuple(swapped), factor)
        elif name in ("flatten", "view", "reshape"):
            merged = _reshaped(labels, tuple(x.shape), tuple(out.shape))
            if merged is not None:
                self._follow(out, merged, factor)
        elif name in ("mean", "sum"):
            dims = args[1] if len(args) > 1 else kwargs.get("dim")
            dims = set(range(rank)) if dims is None else {d % rank for d in _dims(dims)}
            if any(labels[d] not in ("s", "1") for d in dims) or not any(labels[d] == "s" and x.shape[d] > 1 for d in dims):
                return                                             # over images, channels or a mix: pools no map
            if name == "sum":
                factor *= math.prod(x.shape[d] for d in dims)
            keepdim = out.dim() == rank
            kept = tuple("s" if d in dims else labels[d] for d in range(rank) if keepdim or d not in dims)
            self._follow(out, kept, factor, completes="mean over H, W")
        elif tracked and name in _SCALINGS and not math.isclose(factor, 1.0, rel_tol=1e-6):
            number = _number(args[1] if len(args) > 1 else kwargs.get("other"))   # a sum, scaled by a number
            if number:
                scaled = factor / number if "div" in name else factor * number
                self._follow(out, labels, scaled, completes="sum over H, W / (H * W)")
        elif tracked and out.dim() == rank and tuple(out.shape[:-1]) == tuple(x.shape[:-1]):
            # the same dims (an activation, a LayerNorm, a sum of two maps), or a linear layer on the last one:
            # channels stay channels; positions mixed by it are a mix
            last = labels[-1] if out.shape[-1] == x.shape[-1] or labels[-1] == "c" else "x"
            self._follow(out, labels[:-1] + (last,), factor)

    def _follow(self, out: torch.Tensor, labels: tuple[str, ...], factor: float, completes: str | None = None) -> None:
        """Keep following ``out`` while it has positions left to average or holds sums (``factor`` not 1);
        once it has neither, the step that made it (``completes``: its name) was the global pool."""
        if any(label == "s" and size > 1 for label, size in zip(labels, out.shape)) or \
                not math.isclose(factor, 1.0, rel_tol=1e-6):
            self._partial[id(out)] = (out, labels, factor)
        elif completes:
            self.pools.append((self.calls, completes))


_SCALINGS = ("div", "div_", "true_divide", "true_divide_", "__truediv__", "__itruediv__",
             "mul", "mul_", "__mul__", "__rmul__", "__imul__")


def _number(value) -> float | None:
    """A plain number (or a one-element tensor's), else None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dims(value) -> list[int]:
    """Dims as a call gives them: one int, or a sequence of ints (numpy's and 0-d tensors' too)."""
    if isinstance(value, (list, tuple, torch.Size)):
        return [operator.index(d) for d in value]
    return [operator.index(value)]


def _reshaped(labels: tuple[str, ...], before: tuple[int, ...], after: tuple[int, ...]) -> tuple[str, ...] | None:
    """The labels of a view, reshape or flatten's result, from its input's: each output dim is made of a run of
    input dims, and takes their label when they share one, "x" (a mix) when they do not. Size-1 dims count
    when they are an image or channel dim (a batch of one is still the batch); an output dim of size 1 takes
    the label of a size-1 input dim in its place, else "1". ``None`` when an input dim is split (not followed)."""
    out, k = [], 0
    for size in after:
        if size == 1:
            if k < len(before) and before[k] == 1:
                out.append(labels[k])
                k += 1
            else:
                out.append("1")
            continue
        kinds, product = set(), 1
        while product < size and k < len(before):
            product *= before[k]
            if before[k] > 1 or labels[k] in ("n", "c"):
                kinds.add(labels[k])
            k += 1
        if product != size:
            return None
        out.append(kinds.pop() if len(kinds) == 1 else "x")
    return tuple(out) if all(size == 1 for size in before[k:]) else None


def _separable_pairs(convs: list[_Conv]) -> int:
    """Depthwise convs (k×k, ``groups = C_in > 1``, one filter per channel) directly followed, among the
    convolutions run on maps, by a 1×1 conv that reads their output: their channels, on their map. Convs on
    a pooled 1×1 vector (an SE or ECA gate's) are not on a map: they mix no pixel's channels, so they neither
    count as the pointwise half nor stand between the halves (depthwise, SE, then 1×1, as in MobileNetV3)."""
    on_maps = [c for c in convs if c.in_hw != (1, 1)]
    pairs = 0
    for a, b in zip(on_maps, on_maps[1:]):
        depthwise = a.groups == a.in_ch > 1 and max(a.kernel) > 1
        pointwise = b.kernel == (1, 1) and b.groups == 1 and b.in_ch == a.out_ch and b.in_hw == a.out_hw
        pairs += depthwise and pointwise
    return pairs


def check(model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10) -> Report:
    """Check ``model`` against the assignment's rules; returns a ``Report`` (print it for the table)."""
    from .inspection import _eval_mode, _model_device, receptive_field

    params = sum(p.numel() for p in model.parameters())
    watcher = _Watcher()
    x = torch.zeros(1, *input_size, device=_model_device(model))
    try:
        with _eval_mode(model), torch.no_grad(), watcher:
            out = model(x)
    except Exception as error:  # the learner's model: say what failed, keep the cause
        raise ValueError(f"the model fails on a 1 x {' x '.join(map(str, input_size))} batch: "
                         f"{type(error).__name__}: {error}. Run it on torch.zeros(1, 3, 32, 32) to see where") from error
    if tuple(out.shape) != (1, num_classes):
        raise ValueError(f"the model should return {num_classes} class scores per image, shape (1, {num_classes}); "
                         f"it returned shape {tuple(out.shape)}. End with global pooling, flatten and nn.Linear(C, {num_classes})")
    table = receptive_field(model, input_size)
    local = [r for r in table if not r.global_pool]
    rf, jump = (table.final, table.final_jump) if local else (1, 1)
    dilated = [c for c in watcher.convs if c.dilation > 1 and max(c.kernel) > 1]
    pairs = _separable_pairs(watcher.convs)
    report = Report()
    report.append(RuleResult(
        "parameters", f"< {MAX_PARAMS:,}", f"{params:,}", params < MAX_PARAMS,
        f"{params - MAX_PARAMS + 1:,} too many. The widest stages cost most: a 1x1 conv has C_in x C_out weights, "
        "a 3x3 nine times that; narrow C4, or make a standard conv depthwise-separable (about 8x fewer weights)"))
    report.append(RuleResult(
        "no max-pooling", "0 max-pool layers", f"{len(watcher.max_pools)} max-pool call(s)", not watcher.max_pools,
        "downsample with a strided convolution instead: nn.Conv2d(C_in, C_out, 3, stride=2, padding=1) "
        "halves the size and learns what to keep"))
    report.append(RuleResult(
        "depthwise-separable", ">= 1 (k x k depthwise, then 1x1)", f"{pairs} found", pairs > 0,
        "replace a 3x3 conv by nn.Conv2d(C, C, 3, padding=1, groups=C) followed by nn.Conv2d(C, C_out, 1) "
        "(course_utils.layers.DepthwiseSeparableConv2d; notebook 03)"))
    report.append(RuleResult(
        "dilated convolution", ">= 1 conv with dilation > 1", f"{len(dilated)} found", bool(dilated),
        "give one 3x3 conv dilation=2 and padding=2: it keeps the map's size and spans 5x5 with 9 weights (notebook 04)"))
    report.append(RuleResult(
        "global average pooling", "before the classifier",
        ", ".join(sorted(set(watcher.global_pools))) or "none found", bool(watcher.global_pools),
        "end with nn.AdaptiveAvgPool2d(1), nn.Flatten() and one nn.Linear(C, 10) (or x.mean((2, 3)) in forward): "
        "the classifier then has C x 10 weights whatever the map's size"))
    report.append(RuleResult(
        "receptive field", f"> {MIN_RF - 1} pixels", f"{rf} pixels", rf >= MIN_RF,
        f"{MIN_RF - rf} pixel(s) short. After the last stride-2 layer each extra 3x3 conv adds {2 * jump:g} pixels "
        f"(2 x the jump, {jump:g}); a dilated one adds twice that (notebook 02)"))
    return report


def train_design(model: "nn.Module | Callable[[], nn.Module]", epochs: int | None = None, device: str | None = None,
                 data=None, log=print):
    """A short training run of a learner's design with the course recipe, shortened to ``epochs``
    (default: 5, or smoke mode's 2 epochs on its subset): the validation split held out, validation
    accuracy printed each epoch, the test set read once at the end. Returns the ``History``.

    ``model`` is best the function that builds the design (``my_network``, ``CifarNet``): it is built
    after the recipe's seed is set, so the run starts from the same weights however often, and after
    whatever, the cell runs, and two designs compare from seeded starts. A network already built starts
    from the weights it was built with, which depend on everything that drew random numbers before.

    Refuses a model that breaks a rule (it prints the report instead and returns None): the
    assignment is to design under the rules, then train."""
    from .config import TrainConfig
    from .data import load_for_environment
    from .experiment import train
    from .runtime import get_device, is_smoke

    report = check(model if isinstance(model, nn.Module) else model())   # a copy to check; train builds its own
    if not report.passed:
        print(report)
        print("train_design: fix the failing rule(s) first, then train")
        return None
    config = TrainConfig.for_environment(epochs=epochs if epochs is not None else (None if is_smoke() else 5))
    data = data if data is not None else load_for_environment()
    return train(model, data, config, get_device(device), log=log).history
