"""Exercises that answer back: every check accepts its solution, rejects wrong answers without
printing the right one, and every notebook's exercise list matches the registry (hint and CPU time
shown in the notebook, a check cell where the answer can be checked)."""
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import exercises, solutions
from course_utils.exercises import EXERCISES, check, hint
from course_utils.models import CifarNetConfig
from course_utils.runtime import REPO_ROOT

from conftest import skip_without_real_data

CHECKED = [k for k, e in EXERCISES.items() if e.check is not None]

WRONG = {  # plausible mistakes, each of which the check must reject
    "02.1": [2, 5],
    "02.2": [6, 8],
    "02.3": [37, 17],
    "03.1": [(11, 7), (12, 6), (9, 25)],
    "04.1": [(31, (1, 3, 10)), (15, (1, 2, 4)), (27, (1, 2, 9)), (25, (1, 3, 9))],
    "04.2": [77, 79],
    "04.3": [lambda d: 1, lambda d: 2 * d, lambda d: d - 1],
    "05.1": [0, 1],
    "06.1": [(12, 3), (6, 6), (3, 6), (48, 3)],
    "07.1": [0, 2 * 16, 2 * 224 * 14 + 14 + 224],   # 6,510: r = 16, the table's gate, not the r = 8 asked for
    "10.1": [(128, 128), (64, 129), (256, 129), (256, 257)],
    "10.2": [CifarNetConfig().c4 * 16 * 10 + 10, CifarNetConfig().c3 * 10 + 10, CifarNetConfig().c3 * 64 * 10],
    "12.1": [nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(8, 10)),
             nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))],
}


@pytest.fixture
def synthetic_data(monkeypatch, image_folder):
    """01.1 on a tiny image folder where class 7's images are made the brightest."""
    from course_utils import data as data_module

    real = data_module.load_cifar10

    def fake(*args, **kwargs):
        d = real(image_folder, download=False)
        d.train_images[d.train_labels == 7] = 250
        return d

    monkeypatch.setattr(data_module, "load_cifar10", fake)
    solutions.brightest_class.cache_clear()
    yield real(image_folder, download=False).classes[7]
    solutions.brightest_class.cache_clear()


def _solution(exercise_id):
    return solutions.solution(exercise_id)


@pytest.mark.parametrize("exercise_id", [k for k in CHECKED if k != "01.1"])
def test_each_check_accepts_its_solution(exercise_id, capsys):
    assert check(exercise_id, _solution(exercise_id)) is True
    assert capsys.readouterr().out.startswith(f"{exercise_id}: right: ")


@pytest.mark.parametrize("exercise_id", sorted(WRONG))
def test_each_check_rejects_wrong_answers_without_giving_the_answer(exercise_id, capsys):
    right = _solution(exercise_id)
    for wrong in WRONG[exercise_id]:
        assert check(exercise_id, wrong) is False, wrong
        out = capsys.readouterr().out
        assert out.startswith(f"{exercise_id}: not yet: ")
        # the right number is not printed; nor, for a pair wrong in every part, any number of the right pair
        # (where one part is right, the message may say what that part implies: "dilations (1, 3, 9) span ...")
        numbers = [right] if isinstance(right, int) else []
        if isinstance(right, tuple) and isinstance(wrong, tuple) and all(w != r for w, r in zip(wrong, right)):
            numbers = [v for v in right if isinstance(v, int)]
        for n in numbers:
            assert not re.search(rf"(?<![\d.]){n}(?![\d.])", out), out


def test_every_checked_exercise_has_wrong_answers_in_this_test():
    assert set(CHECKED) - {"01.1"} == set(WRONG)


def test_the_brightest_class_check_computes_from_the_data(synthetic_data, capsys):
    assert check("01.1", synthetic_data.upper()) is True
    assert check("01.1", "airplane" if synthetic_data != "airplane" else "cat") is False
    assert synthetic_data not in capsys.readouterr().out.split("not yet")[-1]


def test_answers_follow_the_kit():
    """Computed answers, against independent arithmetic."""
    from course_utils.models import CifarNetConfig

    c4 = CifarNetConfig().c4
    assert _solution("07.1") == 2 * c4 * (c4 // 8) + c4 // 8 + c4    # r = 8, not the 16 of section 1's table
    assert _solution("03.1") == (12, 7)                      # 1/(1/12 + 1/9) = 5.14 >= 5 > 1/(1/11 + 1/9)
    assert _solution("02.1") == 4 and _solution("05.1") == 2 and _solution("06.1") == (12, 6)
    assert _solution("10.1") == (2 * 64, 2 * 64 + 1)
    assert _solution("10.2") == CifarNetConfig().c3 * 8 * 8 * 10 + 10   # C3's map is 8x8 on a 32x32 image
    # 02.2: r += (k - 1) * jump, jump *= s over (3, 1), (3, 2), ...: 3, 5, 9, 13, 21, 29, 45; 45 is the first past 32
    assert _solution("02.2") == 7
    # 02.3: C1 to C3 see 37 pixels in theory (3 + 2 + 4 + 8 + 4 + 8 + 8, the arithmetic notebook's table), more
    # than the 32-pixel image: the non-zero gradient of the centre output spans the whole image
    assert _solution("02.3") == 32
    # and working it out leaves the learner's random stream alone: notebook 02 builds its CifarNet from it
    state = torch.random.get_rng_state()
    assert _solution("02.3") == 32 and torch.equal(torch.random.get_rng_state(), state)
    # 04.2: C2's dilated 3x3 conv sits where the jump is 2; dilation 3 spans 7 pixels of its input instead
    # of 5, so the final field of 77 grows by (7 - 5) * 2
    assert _solution("04.2") == 77 + (7 - 5) * 2


def test_no_answer_no_check_and_bad_input_say_so(capsys):
    assert check("02.1", None) is None
    assert "no answer yet: replace None by your answer (an int)" in capsys.readouterr().out
    assert check("03.2", 1.0) is None
    assert "no automatic check" in capsys.readouterr().out
    assert check("04.1", 27) is False
    assert "cannot check this answer: answer should be (largest field" in capsys.readouterr().out
    assert check("02.1", "4") is False
    assert "should be a number" in capsys.readouterr().out
    with pytest.raises(KeyError, match="no exercise '4.1'.*e.g. 01.1.*Did you mean '04.1'"):
        check("4.1", 4)
    with pytest.raises(KeyError, match=r"no exercise '99.9'.*e.g. 01.1, [^?]*$"):   # nothing to suggest
        check("99.9", 4)
    assert hint("04.1").startswith("04.1 hint: ") and "CPU" in capsys.readouterr().out


def _notebook_exercises():
    """{exercise id: the item's markdown} from every notebook's "## Exercises" section, and the ids its
    check cells call."""
    items, checked = {}, set()
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        number = path.name[:2]
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            text = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and "## Exercises" in text:
                section = text.split("## Exercises", 1)[1]
                for n, item in re.findall(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", section, re.S | re.M):
                    items[f"{number}.{n}"] = " ".join(item.split())
            if cell["cell_type"] == "code":
                checked |= set(re.findall(r'check\("(\d\d\.\d)"', text))
    return items, checked


def test_every_notebook_exercise_is_registered_with_its_hint_and_cpu_time():
    items, checked = _notebook_exercises()
    assert set(items) == set(EXERCISES)
    for exercise_id, text in items.items():
        e = EXERCISES[exercise_id]
        assert f"*Hint:* {e.hint}" in text, exercise_id
        assert f"*CPU:* {e.runtime}" in text, exercise_id
    assert checked == set(CHECKED)   # a check cell for each checkable exercise, in its notebook


def test_every_exercise_without_a_check_has_a_worked_note_and_check_points_to_it(capsys):
    """The notebooks say worked answers for instructors are in course_utils.solutions: a checked exercise
    has a solution there, every other one a note, and check() names the note."""
    unchecked = {i for i, e in EXERCISES.items() if e.check is None}
    assert unchecked == set(solutions.NOTES)
    assert all(len(note) > 80 for note in solutions.NOTES.values())
    for exercise_id in sorted(unchecked):
        assert check(exercise_id, "anything") is None
        assert f"course_utils.solutions.NOTES['{exercise_id}']" in capsys.readouterr().out


def test_the_notes_numbers_are_the_kits():
    """The counts and fields the notes quote, computed from the kit."""
    from course_utils.assignment import check as rules
    from course_utils.inspection import receptive_field
    from course_utils.layers import DepthwiseSeparableConv2d, Residual
    from course_utils.models import CifarNet, count_parameters

    notes = solutions.NOTES
    # 03.3: C2's residual body made separable, the dilation kept; the design still passes every rule
    net = CifarNet()
    c = net.config.c1
    net.c2[0] = Residual(DepthwiseSeparableConv2d(c, c), DepthwiseSeparableConv2d(c, c, dilation=2))
    before, after = count_parameters(CifarNet()), count_parameters(net)
    assert all(r.passed for r in rules(net))
    assert f"{before - after:,} fewer, {after:,} in all against {before:,}" in notes["03.3"]
    # 09.1: no dilation in C2, the same parameters, a smaller field
    plain = CifarNet(CifarNetConfig(c2_dilation=1))
    assert count_parameters(plain) == before
    assert f"gives {receptive_field(plain).final} pixels against CifarNet's {receptive_field(CifarNet()).final}" in notes["09.1"]
    # 12.2: the smallest design the note names passes every rule
    tiny = CifarNet(CifarNetConfig(stem=4, c1=4, c3=8, c4=8))
    assert all(r.passed for r in rules(tiny))
    assert f"pass every rule with {count_parameters(tiny):,} parameters" in notes["12.2"]


def test_the_05_3_note_kernel_is_exactly_nearest_neighbour_upsampling():
    import torch.nn.functional as F

    from course_utils.layers import TransposedUpsample

    up = TransposedUpsample(1, 1, 2, kernel_size=3)
    taps = torch.tensor([0.0, 1.0, 1.0])
    with torch.no_grad():
        up.conv.weight.copy_(torch.outer(taps, taps).view(1, 1, 3, 3))
        up.conv.bias.zero_()
    x = torch.randn(2, 1, 7, 7)
    torch.testing.assert_close(up(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    assert "[0, 1, 1] x [0, 1, 1]" in solutions.NOTES["05.3"]


def test_the_10_3_note_gradients_are_measured_on_section_5s_batch():
    """Notebook 10's section 5 batch (128 of a stratified 1,000 training images, seed 0, drawn by a seeded
    permutation so that all ten classes mix), real data; the 20-layer numbers are the notebook's own."""
    from course_utils import blocks
    from course_utils.data import load_cifar10, stratified_indices

    try:
        data = load_cifar10(download=False)
    except FileNotFoundError:
        skip_without_real_data("CIFAR-10 is not in data/ (CI extracts it; see README, Data)")
    if len(data.train_labels) != 50_000:
        skip_without_real_data(f"data/ holds {len(data.train_labels):,} training images, not CIFAR-10's 50,000")
    if not data.source.startswith("image folder"):   # the note's numbers are the offline JPEG copy's
        skip_without_real_data(f"the note was measured on the offline JPEG copy (an image folder); this one is "
                               f"{data.source!r}")
    pick = stratified_indices(data.train_labels, 1000, seed=0)
    batch = torch.randperm(len(pick), generator=torch.Generator().manual_seed(0))[:128]   # as section 5 draws it
    x = blocks.normalized_tensor(data.train_images[pick], data.mean, data.std)[batch]
    y = torch.from_numpy(data.train_labels[pick])[batch]
    assert len(set(y.tolist())) == 10
    g = {}
    for depth in (20, 40):
        for residual in (False, True):
            torch.manual_seed(0)
            g[depth, residual] = blocks.gradient_norms(blocks.ConvStack(depth, residual=residual), x, y)
    note = solutions.NOTES["10.3"]
    assert (f"first-layer gradient grows from {g[20, False][0]:.2f} at 20 layers to {g[40, False][0]:.1f} at 40"
            in note)
    ratio = {k: v.max() / v.min() for k, v in g.items()}
    assert f"from {ratio[20, False]:.0f} to {ratio[40, False]:.0f}" in note
    assert f"goes from {g[20, True][0]:.2f} to {g[40, True][0]:.2f}, its ratio from {ratio[20, True]:.1f} to {ratio[40, True]:.1f}" in note


def test_the_11_notes_quote_their_records():
    import json

    from course_utils.runtime import REPO_ROOT

    runs = REPO_ROOT / "figures" / "runs"
    val = {name: json.loads((runs / f"{name}.json").read_text())["final_val_acc"]
           for name in ("baseline-full-e40-s1", "cifarnet-full-e40-s1", "cifarnet-full-e15-s1", "cifarnet-full-e40-s1-whole",
                        "baseline-full-e40-s1-whole")}
    note = solutions.NOTES["11.1"]
    crops = val["cifarnet-full-e40-s1"] - val["baseline-full-e40-s1"]
    whole = val["cifarnet-full-e40-s1-whole"] - val["baseline-full-e40-s1-whole"]
    assert f"{val['baseline-full-e40-s1']:.2f}% on validation" in note and f"CifarNet's {val['cifarnet-full-e40-s1']:.2f}%" in note
    assert f"{crops:.1f} points; on whole images throughout, {val['baseline-full-e40-s1-whole']:.2f}% against " \
           f"{val['cifarnet-full-e40-s1-whole']:.2f}%" in note and f"{whole:.1f} points" in note
    cost = {m: val[f"{m}-full-e40-s1-whole"] - val[f"{m}-full-e40-s1"] for m in ("baseline", "cifarnet")}
    assert f"cost BaselineNet {cost['baseline']:.1f} points and CifarNet nothing" in note and cost["cifarnet"] <= 0
    assert f"worth {whole:.0f} to {crops:.0f} points" in note.replace("four", "4").replace("six", "6")
    assert (f"{val['cifarnet-full-e15-s1']:.2f}% against {val['cifarnet-full-e40-s1-whole']:.2f}% on validation"
            in solutions.NOTES["11.3"])
    # 11.2: the hole at 0.1 against the recipe's 0.25, the means of the README's screen (3 seeds each)
    mean = {suffix: sum(json.loads((runs / f"cifarnet-full-e40-s{s}-{suffix}.json").read_text())["final_val_acc"]
                        for s in (1, 2, 3)) / 3 for suffix in ("x6d2118", "notail")}
    assert f"({mean['x6d2118']:.2f}% against {mean['notail']:.2f}%)" in solutions.NOTES["11.2"]
