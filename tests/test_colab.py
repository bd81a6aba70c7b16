"""The first cell of every notebook, as Colab runs it: a stub ``google.colab`` module, intercepted
subprocess calls, and the exact commands asserted; a failed clone stops with one message."""
import json
import subprocess
import sys
import types

import pytest

from course_utils import colab
from course_utils.runtime import REPO_ROOT


def test_every_notebook_starts_with_the_generated_cell():
    source = colab.first_cell()
    notebooks = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 10
    for path in notebooks:
        cell = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert "".join(cell["source"]) == source, f"{path.name}: run python -m course_utils.colab"
        assert cell["outputs"] == []
    assert f'REPO = "{colab.repo_url()}"' in source


def test_the_address_comes_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.urls]\nRepository = "https://github.com/me/fork/"\n')
    assert colab.repo_url(tmp_path / "pyproject.toml") == "https://github.com/me/fork"
    assert colab.colab_link("01_data_analysis.ipynb", "https://github.com/me/fork") == (
        "https://colab.research.google.com/github/me/fork/blob/main/notebooks/01_data_analysis.ipynb")


def test_readme_links_every_notebook_to_colab_at_that_address():
    readme = (REPO_ROOT / "README.md").read_text()
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        assert colab.colab_link(path.name) in readme, path.name
    # the Quick start's clone is the same address: a fork that changes pyproject.toml sees this test fail
    [clone] = [line for line in readme.splitlines() if line.startswith("git clone ")]
    assert clone.split()[2] == colab.repo_url() and clone.endswith(f"&& cd {colab.repo_url().rsplit('/', 1)[1]}")


class Recorder:
    def __init__(self, clone_rc=0, stderr="", pip_rc=0):
        self.calls, self.clone_rc, self.stderr, self.pip_rc = [], clone_rc, stderr, pip_rc

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        rc = self.clone_rc if cmd[:2] == ["git", "clone"] else self.pip_rc
        if kwargs.get("check") and rc:
            raise subprocess.CalledProcessError(rc, cmd)
        return subprocess.CompletedProcess(cmd, rc, "", self.stderr if rc else "")


@pytest.fixture
def in_colab(monkeypatch):
    import importlib.util
    import os

    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "course_utils" else real_find_spec(name, *a))
    real_isdir, real_isfile = os.path.isdir, os.path.isfile
    monkeypatch.setattr(os.path, "isdir", lambda p: False if p == colab.CLONE_DIR else real_isdir(p))
    # the clone holds the kit (its pyproject.toml), as a real clone would
    monkeypatch.setattr(os.path, "isfile", lambda p: True if p == f"{colab.CLONE_DIR}/pyproject.toml" else real_isfile(p))
    monkeypatch.setattr(sys, "path", list(sys.path))


def run_cell(monkeypatch, recorder):
    monkeypatch.setattr(subprocess, "run", recorder)
    exec(colab.first_cell("https://github.com/me/fork"), {})


def test_in_colab_the_cell_clones_and_installs_the_kit(in_colab, monkeypatch):
    rec = Recorder()
    run_cell(monkeypatch, rec)
    assert rec.calls == [
        ["git", "clone", "-q", "--depth", "1", "https://github.com/me/fork", colab.CLONE_DIR],
        [sys.executable, "-m", "pip", "install", "-q", "-e", colab.CLONE_DIR],
    ]
    assert sys.path[0] == colab.CLONE_DIR


def test_a_failed_clone_stops_with_one_message_and_the_ways_out(in_colab, monkeypatch):
    rec = Recorder(clone_rc=128, stderr="fatal: repository 'https://github.com/me/fork/' not found")
    with pytest.raises(SystemExit) as stop:
        run_cell(monkeypatch, rec)
    message = str(stop.value)
    assert "Could not clone the course kit from https://github.com/me/fork" in message and "not found" in message
    assert "set REPO above" in message and "upload the kit as a zip" in message
    assert len(rec.calls) == 1  # nothing installed after a failed clone


def test_a_zip_unpacked_one_folder_deep_is_found_and_a_folder_without_the_kit_is_named(in_colab, monkeypatch):
    """GitHub's zip unpacks into course-kit-main/: the cell installs from that folder; a folder with no kit
    in it (empty, another project) stops with the commands that fix it, before pip fails on it."""
    import os

    monkeypatch.setattr(os.path, "isdir", lambda p: p == colab.CLONE_DIR)       # uploaded: no clone
    inner = f"{colab.CLONE_DIR}/course-kit-main"
    monkeypatch.setattr(os.path, "isfile", lambda p: p == f"{inner}/pyproject.toml")
    monkeypatch.setattr(os, "listdir", lambda p: ["course-kit-main", "__MACOSX"] if p == colab.CLONE_DIR else [])
    rec = Recorder()
    run_cell(monkeypatch, rec)
    assert rec.calls == [[sys.executable, "-m", "pip", "install", "-q", "-e", inner]] and sys.path[0] == inner
    monkeypatch.setattr(os, "listdir", lambda p: [])
    with pytest.raises(SystemExit, match=r"holds no course kit \(no pyproject.toml in it.*!rm -rf /content/course-kit.*"
                                         r"!rm -rf /content/course-kit && unzip -q course-kit-main.zip -d /content && "
                                         r"mv /content/course-kit-main /content/course-kit\), then run this cell again"):
        run_cell(monkeypatch, Recorder())


def test_a_failed_install_stops_with_pips_own_error(in_colab, monkeypatch):
    rec = Recorder(pip_rc=1, stderr="ERROR: Could not find a version that satisfies the requirement albumentations")
    with pytest.raises(SystemExit) as stop:
        run_cell(monkeypatch, rec)
    assert "Could not install the course kit from /content/course-kit: ERROR: Could not find a version" in str(stop.value)
    assert "!pip install -e /content/course-kit" in str(stop.value)


def test_outside_colab_the_cell_does_nothing(in_colab, monkeypatch):
    """Everything as in Colab (the kit not installed, no clone yet) but google.colab: the cell clones and
    installs nothing, so it is safe to run on a learner's own machine without the kit installed."""
    monkeypatch.delitem(sys.modules, "google.colab")
    rec = Recorder()
    run_cell(monkeypatch, rec)
    assert rec.calls == []


def test_sync_rewrites_the_colab_cell_and_gives_a_new_lesson_one_without_losing_a_cell(tmp_path):
    import shutil

    from course_utils.runtime import REPO_ROOT

    shutil.copy(REPO_ROOT / "notebooks" / "01_data_analysis.ipynb", tmp_path / "01.ipynb")
    lesson = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "markdown", "id": "t", "metadata": {}, "source": ["# 13 · A new lesson"]},
        {"cell_type": "code", "id": "c", "execution_count": 1, "metadata": {}, "outputs": [],
         "source": ["from course_utils import CifarNet\n", "CifarNet()"]}]}
    (tmp_path / "13.ipynb").write_text(json.dumps(lesson))
    url = "https://github.com/me/fork"
    assert colab.sync_notebooks(tmp_path, url) == [tmp_path / "01.ipynb", tmp_path / "13.ipynb"]
    for name in ("01.ipynb", "13.ipynb"):
        nb = json.loads((tmp_path / name).read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert "".join(first["source"]) == colab.first_cell(url), name
    new = json.loads((tmp_path / "13.ipynb").read_text())["cells"]
    assert [c["cell_type"] for c in new] == ["markdown", "code", "code"] and new[2] == lesson["cells"][1]
    assert len({c["id"] for c in new}) == 3
    before = len(json.loads((tmp_path / "01.ipynb").read_text())["cells"])
    assert colab.sync_notebooks(tmp_path, url) == []              # in step: nothing to rewrite, nothing added
    assert len(json.loads((tmp_path / "01.ipynb").read_text())["cells"]) == before
