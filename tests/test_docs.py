"""The README and docs/results.md as a reader follows them: every relative link and picture points at a
file of the repository, and every ``#anchor`` at a heading of the page it names (GitHub's anchors)."""
import re
from functools import lru_cache

import pytest

from course_utils.runtime import REPO_ROOT

from conftest import committed_output

DOCS = ("README.md", "docs/results.md")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=None)   # read once per page, not once per link to it
def anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)   # a '#' in a code block is no heading
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def links(path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_github_anchor_matches_githubs_rule():
    assert github_anchor("Data: online or offline") == "data-online-or-offline"
    assert github_anchor("On a GPU: one H200, partly measured") == "on-a-gpu-one-h200-partly-measured"
    assert github_anchor("Recipes, screened") == "recipes-screened"


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    page = REPO_ROOT / doc
    checked = 0
    for target in links(page):
        if re.match(r"[a-z]+:", target):       # https:, mailto: ...: not this repository's
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.is_file(), f"{doc}: link to {target!r}, but {file.relative_to(REPO_ROOT)} does not exist"
        if anchor:
            assert anchor in anchors(file), f"{doc}: link to {target!r}, but {file.name} has no heading with that anchor"
        checked += 1
    assert checked >= 10, f"{doc}: only {checked} relative links found"


def test_the_readme_points_to_every_recorded_run():
    """The front page keeps the headline runs; the rest is one link away, and every committed record
    (run and benchmark) is cited by its file name in one of the two, so none sits there unexplained."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert "](docs/results.md)" in readme and len(readme.splitlines()) < 600
    cited = readme + (REPO_ROOT / "docs" / "results.md").read_text()
    records = sorted((REPO_ROOT / "figures" / "runs").rglob("*.json"))
    assert len(records) >= 60   # the committed runs are there to check
    assert [p.name for p in records if p.name not in cited] == []


def _notebook_minutes(path) -> float:
    """Minutes from the first cell's start to the last cell's end in a committed notebook's metadata."""
    import json
    from datetime import datetime

    stamps = [c["metadata"]["execution"] for c in json.loads(path.read_text())["cells"]
              if c.get("metadata", {}).get("execution")]
    start = datetime.fromisoformat(stamps[0]["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(stamps[-1]["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds() / 60


def test_readme_time_in_class_is_computed_from_the_committed_runs():
    """The README's minutes per notebook come from the notebooks' own cell timestamps, and notebook 07's
    first-run training from the ablation study's record of the same two runs."""
    import csv
    import inspect
    import json

    minutes = {p.name[:2]: _notebook_minutes(p) for p in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
    assert len(minutes) == 12
    others = {k: v for k, v in minutes.items() if k != "11"}
    longest = max(others, key=others.get)
    prose = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert max(others.values()) < 2
    assert (f"Every notebook but 11 ran top to bottom in under 2 minutes (the longest, {longest}, in "
            f"{others[longest]:.1f}") in prose
    if longest == "06":   # its saved run shared the cores, and both the notebook and the README say so
        assert "its saved run trained on one thread while two training runs shared the cores" in prose
        cells = json.loads((REPO_ROOT / "notebooks/06_pixel_shuffle.ipynb").read_text())["cells"]
        assert "ran on one thread while two training runs shared the cores" in " ".join(
            " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())
    assert f"Notebook 11 trains CifarNet live: {minutes['11']:.1f} minutes in all" in prose
    rows = {r["variant"]: r for r in csv.DictReader(open(REPO_ROOT / "figures/09_ablation_runs.csv")) if r["seed"] == "1"}
    se, cbam = (float(rows[v]["train_seconds"]) / 60 for v in ("se", "cbam"))
    assert rows["se"]["epochs"] == rows["cbam"]["epochs"] == "4"
    assert (f"the ablation study's one-thread runs of the same two took {se:.1f} and {cbam:.1f} minutes on the AVX2 "
            "machine") in prose
    # notebook 07's own epoch lines (read back or trained, they print each epoch's seconds)
    log = committed_output("07_channel_attention", "epoch   1/4", source="trained_model(name")
    per_model = [sum(float(s) for s in re.findall(r"^epoch +\d/4 .* ([\d.]+) s$", block, flags=re.M))
                 for block in re.split(r"^(?=\w+, seed 1:)", log, flags=re.M) if block.strip().startswith(("se,", "cbam,"))]
    assert len(per_model) == 2
    assert (f"SE and CBAM for 4 epochs each, {per_model[0] / 60:.1f} and {per_model[1] / 60:.1f} minutes by the epoch "
            "lines it prints") in prose
    study = json.loads((REPO_ROOT / "figures/09_ablation_time.json").read_text())
    assert (f"`COURSE_FIGURES_DIR=fresh python -m course_utils ablate --jobs 2` ({study['wall_minutes']:.1f} minutes for its "
            f"{study['runs']} runs") in prose and study["jobs"] == 2
    from course_utils.assignment import train_design
    assert inspect.signature(train_design).parameters["epochs"].default is None
    assert "(default: 5," in train_design.__doc__ and "trains for 5 epochs of the course recipe (an eighth of" in prose
    # and it does: the run train_design starts, watched (nothing trains), outside smoke mode
    from course_utils import experiment
    from course_utils.config import TrainConfig
    from course_utils.models import CifarNet

    seen = []

    def watch(model, data, config, device, log=print):
        seen.append(config)
        raise RuntimeError("watched, not trained")

    original = experiment.train
    experiment.train = watch
    try:
        with pytest.raises(RuntimeError, match="watched"):
            train_design(CifarNet, data=object(), device="cpu")
    finally:
        experiment.train = original
    assert seen[0].epochs == 5 == TrainConfig().epochs // 8
    notebook_07 = (REPO_ROOT / "notebooks/07_channel_attention.ipynb").read_text()
    assert 'trained_model(name, data, config, device) for name in (\\"se\\", \\"cbam\\")' in notebook_07


def _imported_libraries(folder) -> tuple[set[str], set[str]]:
    """Top-level names of the modules ``folder``'s Python files import absolutely (the standard library's
    and the package's own left out): those imported unconditionally, and those imported in a ``try`` that
    catches ImportError (each with a fallback: tomllib before Python 3.11, ipywidgets for the sliders)."""
    import ast
    import sys

    def names(nodes) -> set[str]:
        found = set()
        for node in (n for top in nodes for n in ast.walk(top)):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        return found

    every, guarded = set(), set()
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        every |= names([tree])
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                    for h in node.handlers):
                guarded |= names(node.body)
    ours = set(sys.stdlib_module_names) | {folder.name}
    guarded -= ours
    return every - ours - guarded, guarded


def _declared(lines) -> dict[str, str]:
    """``{distribution (lower case): its version floor}`` from requirement strings."""
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(?:>=\s*([0-9.]+))?", line)
        if m and not line.startswith("-"):
            out[m[1].lower()] = m[2] or ""
    return out


# imported but installed by the library they serve: cv2 only for albumentations' border-mode constants
# (albumentations requires opencv-python-headless itself)
_THROUGH = {"cv2": "albumentations"}


def test_every_library_the_package_imports_is_declared_in_both_requirement_files():
    """A library ``course_utils`` imports directly is a dependency of its own (not one that happens to come
    with torchvision), named in pyproject.toml (``pip install .``, which requirements.txt's ``-e .`` runs);
    one imported with a fallback needs no declaration (ipywidgets, in requirements.txt for the notebooks;
    tomllib, standard from Python 3.11); a library both files name has the same version floor in both."""
    from importlib.metadata import packages_distributions

    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")   # no tomllib on Python 3.10
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M)[1]
    in_pyproject = _declared(re.findall(r'"([^"]+)"', block))
    in_requirements = _declared((REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    distributions = packages_distributions()
    required, guarded = _imported_libraries(REPO_ROOT / "course_utils")
    assert {"torch", "albumentations", "PIL", "cv2"} <= required and "ipywidgets" in guarded   # the scan sees them
    for name in sorted(required):
        owners = {d.lower() for d in distributions.get(name, [name])}
        if name in _THROUGH:
            owners = {_THROUGH[name]}
        assert owners & in_pyproject.keys(), f"course_utils imports {name} ({owners}); declare it in pyproject.toml"
    assert "ipywidgets" in in_requirements      # optional for the package, installed for the notebooks
    assert "-e ." in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()  # brings pyproject's
    for dist, floor in in_pyproject.items():
        if dist in in_requirements:
            assert in_requirements[dist] == floor, f"{dist}: pyproject.toml says >={floor}, requirements.txt differs"
