"""The committed notebooks, read as files: what a learner opening them sees before running anything.

No error, no stderr, no absolute path of the machine that ran them, no progress bar frozen at 0%, no
dead widget; every code cell but the Colab set-up cell executed.
"""
import json
import re
from pathlib import Path

import pytest

from course_utils.nbclean import WIDGET_VIEW, merge_streams, strip_widgets
from course_utils.runtime import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|tmp|Users|content|mnt)/\S+")
FROZEN_BAR = re.compile(r"\b0%\|")


def output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    data = output.get("data", {})
    return "".join(data.get("text/plain", "")) + "".join(data.get("text/html", ""))


def problems(notebook: dict) -> list[str]:
    found = []
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if cell.get("execution_count") is None and not source.startswith("# Colab:"):
            found.append(f"cell {i} was never executed")
        for out in cell.get("outputs", []):
            text = output_text(out)
            if out.get("output_type") == "error":
                found.append(f"cell {i}: error {out.get('ename')}")
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append(f"cell {i}: stderr {text[:60]!r}")
            if WIDGET_VIEW in out.get("data", {}):
                found.append(f"cell {i}: a widget output (run python -m course_utils.nbclean)")
            if FROZEN_BAR.search(text):
                found.append(f"cell {i}: a progress bar frozen at 0%")
            match = ABSOLUTE_PATH.search(text)
            if match:
                found.append(f"cell {i}: an absolute path {match.group(0)[:60]}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_outputs_are_clean(path):
    assert problems(json.loads(path.read_text(encoding="utf-8"))) == []


def test_the_scan_finds_each_kind_of_problem():
    bar = {"output_type": "display_data", "metadata": {},
           "data": {WIDGET_VIEW: {"model_id": "x"}, "text/plain": "epoch 1/3:   0%|          | 0/10"}}
    notebook = {"metadata": {"widgets": {"state": {}}}, "cells": [
        {"cell_type": "code", "execution_count": None, "source": ["x = 1"], "outputs": []},
        {"cell_type": "code", "execution_count": 2, "source": ["f()"], "outputs": [
            {"output_type": "error", "ename": "ValueError", "evalue": "", "traceback": []},
            {"output_type": "stream", "name": "stderr", "text": ["warning\n"]},
            {"output_type": "stream", "name": "stdout", "text": ["saved to /work/main/figures/x.png\n"]},
            bar]},
        {"cell_type": "code", "execution_count": None, "source": ["# Colab: set-up"], "outputs": []},
    ]}
    found = problems(notebook)
    assert found == ["cell 0 was never executed", "cell 1: error ValueError", "cell 1: stderr 'warning\\n'",
                     "cell 1: an absolute path /work/main/figures/x.png",
                     "cell 1: a widget output (run python -m course_utils.nbclean)",
                     "cell 1: a progress bar frozen at 0%"]
    # the cleaner removes the bar and the widget state, and nothing else
    assert strip_widgets(notebook) == 1 and "widgets" not in notebook["metadata"]
    assert [o["output_type"] for o in notebook["cells"][1]["outputs"]] == ["error", "stream", "stream"]
    assert "figures/x.png" in output_text(notebook["cells"][1]["outputs"][2])   # a relative path is fine
    assert not ABSOLUTE_PATH.search("written: figures/09_ablation.png and runs/x.json")


def test_the_cleaner_joins_a_cells_split_streams_and_keeps_their_text_and_order():
    out = lambda name, *lines: {"output_type": "stream", "name": name, "text": list(lines)}
    notebook = {"cells": [
        {"cell_type": "code", "source": [], "outputs": [
            out("stdout", "a\n"), out("stdout", "b\n", "c"), out("stdout", "d\n"),    # one print split in three
            out("stderr", "w\n"), out("stdout", "e\n"),
            {"output_type": "display_data", "metadata": {}, "data": {"text/plain": "<Figure>"}},
            out("stdout", "f\n")]},
        {"cell_type": "markdown", "source": ["x"]}]}
    assert merge_streams(notebook) == 2
    kept = notebook["cells"][0]["outputs"]
    assert [(o["output_type"], o.get("name")) for o in kept] == [
        ("stream", "stdout"), ("stream", "stderr"), ("stream", "stdout"), ("display_data", None), ("stream", "stdout")]
    assert kept[0]["text"] == ["a\n", "b\n", "cd\n"] and "outputs" not in notebook["cells"][1]
    assert merge_streams(notebook) == 0                       # already joined: nothing to do


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_split_streams(path):
    """What nbclean leaves: a re-run whose text is the same leaves the file the same."""
    assert merge_streams(json.loads(path.read_text(encoding="utf-8"))) == 0, "run python -m course_utils.nbclean"


def _parse_cell(source: str):
    import ast

    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


def assigned_names(source: str) -> set[str]:
    """The names a code cell binds at its top level (``x = ...``, ``a, b = ...``, ``for x in``, imports)."""
    import ast

    tree = _parse_cell(source)
    names = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For)):
            targets = [node.target]
        elif isinstance(node, ast.With):
            targets = [item.optional_vars for item in node.items if item.optional_vars]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        for target in targets:
            names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def trained_names_rebound_earlier(notebook: dict) -> list[str]:
    """For every cell that trains (calls ``run_training``), the names it binds that an earlier cell binds
    too: re-running that earlier cell after training (to show a table again, in class) would silently
    replace the trained object with an untrained one for every later cell."""
    found, earlier = [], {}
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        names = assigned_names(source)
        if "run_training(" in source:
            found += [f"cell {i} binds {n!r}, which cell {earlier[n]} binds too" for n in sorted(names & earlier.keys())]
        for n in names:
            earlier.setdefault(n, i)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_earlier_cell_rebinds_what_a_training_cell_produces(path):
    assert trained_names_rebound_earlier(json.loads(path.read_text(encoding="utf-8"))) == []


def test_the_rebinding_scan_finds_a_clobbered_model():
    cell = lambda src: {"cell_type": "code", "source": [src], "outputs": []}
    notebook = {"cells": [cell("model = CifarNet()\ntable = stages(model)"), cell("x, y = 1, 2"),
                          cell("result = run_training('cifarnet', config)\nhistory, model = result.history, result.model")]}
    assert trained_names_rebound_earlier(notebook) == ["cell 2 binds 'model', which cell 0 binds too"]
    notebook["cells"][0] = cell("net = CifarNet()\ntable = stages(net)")
    assert trained_names_rebound_earlier(notebook) == []


def inputs_read_after_training(notebook: dict) -> list[str]:
    """For every cell that trains (calls ``run_training``), the names it passes as the run's
    configuration or model name that a later cell reads again instead of the result's own
    (``result.config``): a learner who re-runs the recipe cell with another recipe after training (to
    read it, in class) would have those later cells describe a run that did not happen, and a check
    cell fail with a misleading message."""
    import ast

    found, watched = [], {}
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        tree = _parse_cell(source)
        for name in sorted(watched.keys() - assigned_names(source)):
            if any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) for n in ast.walk(tree)):
                found.append(f"cell {i} reads {name!r}, the input of the run in cell {watched[name]}")
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) == "run_training":
                args = call.args[1:2] + [k.value for k in call.keywords if k.arg == "config"]
                watched.update({a.id: i for a in args if isinstance(a, ast.Name)})
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_after_training_read_the_runs_own_config(path):
    assert inputs_read_after_training(json.loads(path.read_text(encoding="utf-8"))) == []


def test_the_config_scan_finds_a_cell_that_reads_the_recipe_again():
    cell = lambda src: {"cell_type": "code", "source": [src], "outputs": []}
    notebook = {"cells": [cell("config = TrainConfig.for_environment('auto')"),
                          cell("result = run_training('cifarnet', config, data=data)"),
                          cell("predict(result.model, loader, device, channels_last=config.channels_last)"),
                          cell("config = TrainConfig()\nprint(config)")]}
    assert inputs_read_after_training(notebook) == ["cell 2 reads 'config', the input of the run in cell 1"]
    notebook["cells"][2] = cell("predict(result.model, loader, device, channels_last=result.config.channels_last)")
    assert inputs_read_after_training(notebook) == []
    notebook["cells"][1] = cell("result = experiment.run_training('cifarnet', config=config)")
    notebook["cells"][2] = cell("assert len(result.history) == config.epochs")
    assert inputs_read_after_training(notebook) == ["cell 2 reads 'config', the input of the run in cell 1"]
