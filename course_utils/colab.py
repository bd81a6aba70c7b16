"""The first cell of every notebook: in Colab it fetches and installs the kit; anywhere else it does
nothing.

The repository's address lives in one place, ``pyproject.toml`` (``[project.urls] Repository``).
Whoever publishes or forks the kit changes it there and runs ``python -m course_utils.colab``, which
rewrites the first cell of every notebook from ``first_cell()`` (a test checks that they match, and
that the README's "Open in Colab" links use the same address).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .runtime import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
CLONE_DIR = "/content/course-kit"

_CELL = '''# Colab: fetch the course kit and install it. Anywhere else this cell does nothing.
# The address is set in pyproject.toml ([project.urls] Repository); a fork changes it there and runs
# python -m course_utils.colab, which rewrites this cell in every notebook.
import importlib.util, os, subprocess, sys
REPO = "{url}"
if "google.colab" in sys.modules and importlib.util.find_spec("course_utils") is None:
    if not os.path.isdir("{clone}"):  # an uploaded and unzipped copy is used as it is
        clone = subprocess.run(["git", "clone", "-q", "--depth", "1", REPO, "{clone}"], capture_output=True, text=True)
        if clone.returncode != 0:
            raise SystemExit(
                f"Could not clone the course kit from {{REPO}}: {{clone.stderr.strip()[-300:]}}\\n"
                "Ways out: set REPO above to the address of your copy of the kit, or upload the kit as a "
                "zip (Files panel), unzip it to {clone} and run this cell again.")
    kit = "{clone}"
    if not os.path.isfile(os.path.join(kit, "pyproject.toml")):  # GitHub's zip unpacks into a folder of its own
        inner = [d for d in os.listdir(kit) if os.path.isfile(os.path.join(kit, d, "pyproject.toml"))]
        if len(inner) != 1:
            raise SystemExit(
                f"{{kit}} holds no course kit (no pyproject.toml in it, nor in one folder inside it). Ways out: "
                f"delete it (!rm -rf {{kit}}) and run this cell again to clone, or unzip the kit so that "
                f"{{kit}}/pyproject.toml exists (!rm -rf {{kit}} && unzip -q course-kit-main.zip -d /content && "
                f"mv /content/course-kit-main {{kit}}), then run this cell again.")
        kit = os.path.join(kit, inner[0])
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", kit], capture_output=True, text=True)
    if install.returncode != 0:
        raise SystemExit(f"Could not install the course kit from {{kit}}: {{install.stderr.strip()[-500:]}}\\n"
                         f"Run this cell again (a passing network hiccup?), or install it by hand: !pip install -e {{kit}}")
    sys.path.insert(0, kit)'''


def repo_url(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` of ``pyproject.toml``."""
    text = pyproject.read_text()
    try:
        import tomllib

        url = tomllib.loads(text)["project"]["urls"]["Repository"]
    except ModuleNotFoundError:  # Python 3.10: no tomllib; the line is simple enough to read directly
        match = re.search(r'^Repository\s*=\s*"([^"]+)"', text, re.M)
        if match is None:
            raise KeyError("Repository") from None
        url = match.group(1)
    return url.rstrip("/")


def first_cell(url: str | None = None) -> str:
    """The first code cell's source, for the address ``url`` (default: ``repo_url()``)."""
    return _CELL.format(url=url or repo_url(), clone=CLONE_DIR)


def colab_link(notebook: str, url: str | None = None) -> str:
    """The "Open in Colab" address of ``notebooks/<notebook>`` on the main branch of a GitHub repository."""
    path = (url or repo_url()).removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}"


def sync_notebooks(folder: Path = NOTEBOOKS, url: str | None = None) -> list[Path]:
    """Rewrite the Colab cell (the first code cell, when it begins ``# Colab:``) of every notebook in
    ``folder``; a notebook without one (a new lesson) gets it inserted before its first code cell, or at its
    end if it has none, and keeps every cell it had. Returns the notebooks changed."""
    import uuid

    source, changed = first_cell(url), []
    for path in sorted(folder.glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
        first = nb["cells"][code[0]] if code else None
        if first is not None and "".join(first["source"]).startswith("# Colab:"):
            if "".join(first["source"]) == source:
                continue
            first["source"] = source.splitlines(True)
            first["outputs"], first["execution_count"] = [], None
        else:
            cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                    "source": source.splitlines(True)}
            if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5):
                cell["id"] = uuid.uuid4().hex[:8]   # nbformat 4.5 gives every cell an id
            nb["cells"].insert(code[0] if code else len(nb["cells"]), cell)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed


if __name__ == "__main__":
    for p in sync_notebooks():
        print(f"rewrote the first cell of {p.relative_to(REPO_ROOT)}")
    sys.exit(0)
