"""Exercises that answer back: every notebook's exercises with a hint, the time they take on a CPU and,
where the answer is a number, a shape or a function, a check.

In a notebook::

    from course_utils.exercises import check, hint
    hint("04.2")                 # a nudge, not the answer
    check("04.2", my_answer)     # right or wrong, and why, without printing the answer

The reference answers live in ``course_utils.solutions`` (for instructors; the tests check that every
solution passes its own check and that wrong answers fail). Where an answer depends on the network or
the data, the check computes it from the kit, so it stays right when CifarNet's widths change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

#: A check returns (right?, why): the why explains without giving the answer away.
Check = Callable[[Any], "tuple[bool, str]"]


@dataclass(frozen=True)
class Exercise:
    id: str                      # "<notebook>.<number>", e.g. "04.1"
    hint: str
    runtime: str                 # on a 2-core CPU
    answer_kind: str = ""        # what check() expects, e.g. "an int"; "" = no automatic check
    check: Check | None = None


def _number(answer: Any, name: str = "answer") -> float:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise TypeError(f"{name} should be a number, got {type(answer).__name__} {answer!r}")
    return answer


def _compare(answer: Any, truth: float, what: str, unit: str = "") -> tuple[bool, str]:
    value = _number(answer)
    if value == truth:
        return True, f"that is {what}"
    direction = "too large" if value > truth else "too small"
    return False, f"{value:g}{unit} is {direction} for {what}"


# ---- answers computed from the kit (so they follow the course models) --------------------------------

def _padding_same_5x5_d2() -> int:
    from .arithmetic import effective_kernel

    return (effective_kernel(5, 2) - 1) // 2


def _stride_stack_passes_image() -> int:
    from .arithmetic import receptive_field_of_stack

    for layer, (rf, _) in enumerate(receptive_field_of_stack([(3, 1), (3, 2)] * 5), start=1):
        if rf > 32:
            return layer
    raise AssertionError("the stack never passes 32 pixels")


def _c1_c3_field_extent() -> int:
    import numpy as np
    from torch import nn

    from .inspection import empirical_receptive_field
    from .models import CifarNet

    import torch

    with torch.random.fork_rng():   # its own weights, seeded: the learner's random stream is left as it was
        torch.manual_seed(0)
        net = CifarNet()
    grad = empirical_receptive_field(nn.Sequential(net.c1, net.c2, net.c3), (3, 32, 32))
    rows, cols = np.nonzero(grad)
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


def _smallest_c_out(ratio: float, kernel: int) -> int:
    """The smallest C_out whose separable k×k conv saves at least ``ratio`` times the weights."""
    c = 1
    while _saving(c, kernel) < ratio:
        c += 1
    return c


def _saving(c_out: int, kernel: int) -> float:
    """Weights of a standard k×k conv over those of its separable version, C_in large: 1 / (1/C_out + 1/k²)."""
    return 1.0 / (1.0 / c_out + 1.0 / kernel**2)


def _cifarnet_c2_dilation_3_rf() -> int:
    from .inspection import receptive_field
    from .models import CifarNet, CifarNetConfig

    return int(receptive_field(CifarNet(CifarNetConfig(c2_dilation=3))).final)


def _unshuffle_channels_and_rf() -> tuple[int, int]:
    """PixelUnshuffle(2) on 3×32×32, then a 3×3 conv: the unshuffle acts like a 2×2 stride-2 window (each
    output position holds one 2×2 block, neighbours 2 pixels apart), so the conv's field follows."""
    import torch
    from torch import nn

    from .arithmetic import receptive_field_of_stack

    channels = nn.PixelUnshuffle(2)(torch.zeros(1, 3, 32, 32)).shape[1]
    rf, _ = receptive_field_of_stack([(2, 2), (3, 1)])[-1]
    return int(channels), int(rf)


def _se_in_c4_params() -> int:
    from .layers import SqueezeExcitation
    from .models import CifarNetConfig

    return sum(p.numel() for p in SqueezeExcitation(CifarNetConfig().c4, reduction=8).parameters())


def _batchnorm_counts() -> tuple[int, int]:
    """Learnable parameters and buffer values of ``BatchNorm2d(64)``: γ and β per channel; running mean
    and variance per channel plus the batch counter."""
    from torch import nn

    bn = nn.BatchNorm2d(64)
    return sum(p.numel() for p in bn.parameters()), sum(b.numel() for b in bn.buffers())


def _flatten_head_params() -> int:
    """Weights and biases of a flatten + linear classifier on CifarNet's C3 output (c3 × 8 × 8 → 10)."""
    import torch
    from torch import nn

    from .models import CifarNet

    net = CifarNet().eval()
    with torch.no_grad():
        c, h, w = nn.Sequential(net.c1, net.c2, net.c3)(torch.zeros(1, 3, 32, 32)).shape[1:]
    return c * h * w * 10 + 10


# ---- the checks ---------------------------------------------------------------------------------------

def _check_01_1(answer: Any) -> tuple[bool, str]:
    from .solutions import brightest_class

    if not isinstance(answer, str):
        raise TypeError(f"answer should be a class name (a string), got {type(answer).__name__}")
    right = brightest_class()
    if answer.strip().lower() == right:
        return True, "that class has the highest mean pixel value over its 5,000 training images"
    return False, f"{answer!r} is not the brightest on average: compare the per-class means of all 5,000 images"


def _check_02_3(answer: Any) -> tuple[bool, str]:
    ok, why = _compare(answer, _c1_c3_field_extent(), "the extent of the non-zero gradient", " pixels")
    if ok:
        return True, why + ": smaller than the theoretical field, which reaches past the 32-pixel image into the padding"
    return False, why + " (measure rows.max() - rows.min() + 1 of np.nonzero(grad))"


def _check_03_1(answer: Any) -> tuple[bool, str]:
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise TypeError("answer should be a pair (C_out for k = 3, C_out for k = 5)")
    truth = (_smallest_c_out(5, 3), _smallest_c_out(5, 5))
    for value, right, k in zip(answer, truth, (3, 5)):
        _number(value)
        if value != right:
            saving = _saving(value, k) if value >= 1 else 0.0
            return False, (f"with k = {k}, C_out = {value:g} saves {saving:.2f}x: look for the smallest C_out that "
                           "saves at least 5x (the ratio is 1 / (1/C_out + 1/k^2))")
    return True, "those are the smallest widths that save at least 5x; the saving can never pass k^2 (9 or 25)"


def _check_04_1(answer: Any) -> tuple[bool, str]:
    from .inspection import stack_footprint

    if not (isinstance(answer, (tuple, list)) and len(answer) == 2 and isinstance(answer[1], (tuple, list))):
        raise TypeError("answer should be (largest field, (d1, d2, d3)), e.g. (15, (1, 2, 4))")
    field, dilations = answer
    _number(field, "the field")
    if len(dilations) != 3 or any(not isinstance(d, int) or d < 1 for d in dilations):
        return False, "give three positive integer dilations, one per 3x3 layer"
    paths = stack_footprint(list(dilations))
    span = 1 + 2 * sum(dilations)
    inner = paths[paths.shape[0] // 2 - span // 2: paths.shape[0] // 2 + span // 2 + 1,
                  paths.shape[1] // 2 - span // 2: paths.shape[1] // 2 + span // 2 + 1]
    if (inner == 0).any():
        return False, f"dilations {tuple(dilations)} leave holes in their {span}x{span} field (see stack_footprint)"
    if field != span:
        return False, f"dilations {tuple(dilations)} span {span} pixels, not {field:g}"
    if span < 27:
        return False, f"{tuple(dilations)} has no holes, but a larger gap-free field exists: three layers can add up " \
                      "to 3^3 distinct offsets"
    return True, "27 distinct offsets is all three 3-tap layers can make, so 27 is the most without holes; " \
                 "31 would need 31 offsets"


def _check_04_3(answer: Any) -> tuple[bool, str]:
    from .arithmetic import conv_output_size

    if not callable(answer):
        raise TypeError("answer should be a function of the dilation, e.g. lambda d: ...")
    for d in range(1, 9):
        p = answer(d)
        if not isinstance(p, int) or p < 0:
            return False, f"for dilation {d} your padding is {p!r}: it must be a non-negative integer"
        if conv_output_size(32, 3, 1, p, d) != 32:
            return False, f"with dilation {d} and padding {p} a 3x3 conv maps 32 to {conv_output_size(32, 3, 1, p, d)}"
    return True, "the dilated 3x3 spans 2d + 1 pixels, so it needs d pixels of padding on each side"


def _check_06_1(answer: Any) -> tuple[bool, str]:
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise TypeError("answer should be a pair (channels, receptive field of the next 3x3 conv)")
    channels, rf = _unshuffle_channels_and_rf()
    if answer[0] != channels:
        return False, f"{answer[0]} channels is wrong: PixelUnshuffle(2) moves each 2x2 block of every channel into channels"
    if answer[1] != rf:
        return False, (f"{answer[1]} pixels is wrong for the field: each unshuffled position sees a 2x2 block and "
                       "neighbours are 2 pixels apart (jump 2)")
    return True, "4x the channels at half the size, and a 3x3 conv then sees 3 blocks of 2 pixels per side"


def _check_10_1(answer: Any) -> tuple[bool, str]:
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise TypeError("answer should be a pair (learnable parameters, buffer values)")
    learned, buffers = _batchnorm_counts()
    if answer[0] != learned:
        return False, f"{answer[0]} learnable parameters is wrong: count what the optimiser updates, per channel"
    if answer[1] != buffers:
        return False, f"{answer[1]} buffer values is wrong: list bn.named_buffers(), there are three buffers"
    return True, "γ and β per channel are learned; the running mean and variance per channel and the batch " \
                 "counter are buffers: saved with the model, updated in training mode, never by the optimiser"


def _check_12_1(answer: Any) -> tuple[bool, str]:
    from torch import nn

    from .assignment import check as assignment_check

    if not isinstance(answer, nn.Module):
        raise TypeError(f"answer should be your network (an nn.Module), got {type(answer).__name__}")
    try:
        report = assignment_check(answer)
    except ValueError as error:
        return False, str(error)
    if report.passed:
        return True, "every rule passes: now train it (train_design) and compare designs on validation accuracy"
    return False, f"{', '.join(report.failed())} still fail(s): print(check(model)) from course_utils.assignment for hints"


def _simple(truth: Callable[[], float], what: str, unit: str = "", extra: str = "") -> Check:
    def check(answer: Any) -> tuple[bool, str]:
        ok, why = _compare(answer, truth(), what, unit)
        return ok, why + (extra if ok else "")
    return check


EXERCISES: dict[str, Exercise] = {e.id: e for e in (
    Exercise("01.1", "mask the images with `data.train_labels == c` and take `.mean()` for each `c` in `range(10)`",
             "a few seconds", "a class name (str)", _check_01_1),
    Exercise("01.2", "draw indices with `np.random.default_rng(0).choice(50_000, 1_000, replace=False)`; "
             "compare with `data.mean` and `data.std` channel by channel", "a few seconds"),
    Exercise("01.3", "`import albumentations as A`; `A.Compose([A.CoarseDropout(num_holes_range=(1, 1), "
             "hole_height_range=(16, 16), hole_width_range=(16, 16), fill=hole_fill(data.mean), p=1.0)])` "
             "(`from course_utils.data import hole_fill`: the mean on the 0–255 scale; without `fill` the hole is "
             "black) and `plots.augmentation_preview`", "a few seconds"),
    Exercise("02.1", "the dilated kernel spans d(k − 1) + 1 pixels; \"same\" needs half of (span − 1) on each side",
             "instant", "an int", _simple(_padding_same_5x5_d2, "the padding that keeps the size")),
    Exercise("02.2", "`receptive_field_of_stack([(3, 1), (3, 2)] * 5)` gives the field after every layer",
             "instant", "an int (the layer, counting from 1)",
             _simple(_stride_stack_passes_image, "the first layer whose field passes 32 pixels")),
    Exercise("02.3", "use `empirical_receptive_field` as in section 6 and `np.nonzero` on the result",
             "a few seconds", "an int (pixels)", _check_02_3),
    Exercise("03.1", "the saving is 1 / (1/C_out + 1/k²): solve for C_out and round up", "instant",
             "a pair (C_out for k = 3, C_out for k = 5)", _check_03_1),
    Exercise("03.2", "`forward_ms(layer, x, repeats=50)` (imported at the top), with `x` of batch 1 and of batch 256",
             "about a minute"),
    Exercise("03.3", "build the residual body from `DepthwiseSeparableConv2d`, the second with `dilation=2` (`train_design` "
             "refuses a design that breaks one of the assignment's rules, which notebook 12 lists and checks); "
             "`count_parameters` before and after; "
             "train both a few epochs with `train_design` (`from course_utils.assignment import train_design`: it takes a "
             "module; `run_training` takes a registered model's name)", "about 5 minutes"),
    Exercise("04.1", "each layer adds one of 3 offsets (−d, 0, +d); three layers make at most 3³ sums",
             "instant", "(largest field, (d1, d2, d3))", _check_04_1),
    Exercise("04.2", "`CifarNet(CifarNetConfig(c2_dilation=3))` and `receptive_field(...).final`", "a few seconds",
             "an int (pixels)", _simple(_cifarnet_c2_dilation_3_rf, "CifarNet's final receptive field with dilation 3",
                                        " pixels", "; the output size does not change: the padding grows with the dilation")),
    Exercise("04.3", "put s = 1, k = 3 and n_out = n into the output-size formula and solve for p", "instant",
             "a function of the dilation (lambda d: ...)", _check_04_3),
    Exercise("05.1", "a transposed conv's output is (n − 1)·s − 2p + k + output_padding", "instant", "an int",
             _simple(lambda: 15 - ((5 - 1) * 3 - 2 * 1 + 3), "the output_padding that gives 15x15")),
    Exercise("05.2", "`x = torch.randn(1, 1, 8, 8, requires_grad=True)`, `conv = nn.Conv2d(1, 1, 3, 2, 1, bias=False)`, "
             "`g = torch.randn_like(conv(x))`, then `torch.testing.assert_close`", "instant"),
    Exercise("05.3", "target: `F.interpolate(x, scale_factor=2, mode='nearest')`; MSE loss; Adam, lr 1e-2", "about a minute"),
    Exercise("06.1", "`PixelUnshuffle(r)` turns C × H × W into C·r² × H/r × W/r; then think of the jump", "instant",
             "a pair (channels, receptive field in pixels)", _check_06_1),
    Exercise("06.2", "`icnr_` initialises one sub-kernel and copies it to the r² sub-pixel positions", "on paper"),
    Exercise("06.3", "target: `F.interpolate(x, scale_factor=2, mode='bilinear')` (`import torch.nn.functional as F` first: "
             "this notebook has not); same optimiser and seed for both",
             "about a minute"),
    Exercise("07.1", "`SqueezeExcitation(C, reduction=8)` has two 1×1 convs, C → C/r → C (r = 8 here; section 1's table "
             "used 16), with biases", "instant", "an int",
             _simple(_se_in_c4_params, "the parameter count of one SE gate with r = 8 on C4")),
    Exercise("07.2", "a softmax over channels sums to 1: can every channel stay fully on?", "on paper"),
    Exercise("07.3", "`with capture(trained[\"se\"], lambda n, m: n.endswith('gate')) as excitations:` around forward "
             "passes collects every SE gate's excitations (a `with` block: it records only the passes inside it)",
             "a few minutes"),
    Exercise("08.1", "`A.Affine(rotate=(-45, 45))` in the pipeline; `plots.augmentation_preview`", "a few seconds"),
    Exercise("08.2", "`A.Compose([A.PadIfNeeded(40, 40), A.RandomCrop(32, 32), ...])`; compare the previews", "a few seconds"),
    Exercise("08.3", "`pipeline_throughput(transform, images)` (imported at the top) for each pipeline", "about a minute"),
    Exercise("09.1", "`no_dilation = Variant(\"no-dilation\", \"dilation\", \"What does C2's dilation buy?\", "
             "model={\"c2_dilation\": 1})`; `Variant` imports from `course_utils.ablation`", "about 20 minutes on two cores (6 runs of about 7 minutes, two at a time: "
             "`jobs=2`)"),
    Exercise("09.2", "`read_csv` (imported at the top), then pair the rows by seed", "instant"),
    Exercise("09.3", "`compare_to_reference` (imported at the top) on each study's runs CSV: do the seed ranges separate at 4 "
             "and at 20 epochs, and in which direction?", "about 3 hours on two cores (9 runs of about half an "
             "hour each, two at a time)"),
    Exercise("10.1", "`bn = nn.BatchNorm2d(64)` (a new one: the `bn` above has 4 channels), then "
             "`sum(p.numel() for p in bn.parameters())`, and the same over `bn.buffers()`", "instant",
             "a pair (learnable parameters, buffer values)", _check_10_1),
    Exercise("10.2", "flatten C3's output (channels × 8 × 8) into one linear layer to 10 classes, with biases",
             "instant", "an int", _simple(_flatten_head_params, "the parameter count of a flatten + linear head on C3",
                                          extra="; global average pooling on C3 would need 64 times fewer weights")),
    Exercise("10.3", "`blocks.ConvStack(40, residual=False)` and `blocks.gradient_norms` as in section 5",
             "about a minute"),
    Exercise("12.1", "fix one rule at a time and re-run the check: replace each max-pool by a stride-2 conv, make a "
             "C3 or C4 conv depthwise-separable, dilate one conv in C2", "instant", "your network (an nn.Module)",
             _check_12_1),
    Exercise("12.2", "the receptive-field rule sets a minimum depth; `count_parameters` and `train_design` for two widths",
             "about 5 minutes for two designs of CifarNet's cost (longer for costlier ones)"),
    Exercise("12.3", "`train_design(CifarNet)` (`from course_utils.models import CifarNet`); `stages(my_network())` "
             "and `stages(CifarNet())` (`from course_utils import stages`) show where the parameters and MACs sit",
             "about 5 minutes for two designs of CifarNet's cost (longer for costlier ones)"),
    Exercise("11.1", "`baseline = run_training(\"baseline\", config, data=load_cifar10())` (a new name: the cells above "
             "read `result`, `history` and `model`); compare `baseline.history.final_val_acc` with "
             "`result.history.final_val_acc`", "about as long as the run above (README, Results: 14.9 against 14.1 minutes on the same cores)"),
    Exercise("11.2", "`from dataclasses import replace`, then `replace(config, dropout_p=0.0)`; from a terminal, in the background: "
             "`python -m course_utils train --set dropout_p=0 --no-progress`", "as long as the run above"),
    Exercise("11.3", "`plots.training_curves` of both runs side by side", "half as long as the run above"),
)}


def _get(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        notebook, _, number = str(exercise_id).partition(".")
        padded = f"{notebook.zfill(2)}.{number}"
        did_you = f" Did you mean {padded!r}?" if padded in EXERCISES else ""
        raise KeyError(f"no exercise {exercise_id!r}: ids are '<notebook>.<number>', e.g. "
                       f"{', '.join(list(EXERCISES)[:4])}, ...{did_you}")
    return EXERCISES[exercise_id]


def hint(exercise_id: str) -> str:
    """Print (and return) the hint and the expected CPU time of an exercise."""
    e = _get(exercise_id)
    text = f"{e.id} hint: {e.hint} (on a 2-core CPU: {e.runtime})"
    print(text)
    return text


def check(exercise_id: str, answer: Any) -> bool | None:
    """Say whether ``answer`` is right, and why, without printing the right answer. Returns True or
    False, or None where the exercise has no automatic check or no answer was given yet."""
    e = _get(exercise_id)
    if e.check is None:
        print(f"{e.id}: no automatic check (the answer is an observation or a plot); "
              f"instructors find a worked note in course_utils.solutions.NOTES[{e.id!r}]")
        return None
    if answer is None:
        print(f"{e.id}: no answer yet: replace None by your answer ({e.answer_kind})")
        return None
    try:
        ok, why = e.check(answer)
    except TypeError as error:
        print(f"{e.id}: cannot check this answer: {error}")
        return False
    print(f"{e.id}: {'right' if ok else 'not yet'}: {why}")
    return ok

