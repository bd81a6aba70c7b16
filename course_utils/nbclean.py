"""Keep live widgets out of committed notebooks.

A tqdm bar in a notebook is an ipywidget. Saved to a file it is only a reference to a widget that no
longer exists, plus a text fallback captured when the bar was *created*: so an executed notebook
commits every bar frozen at "0%", which then reads as a run that never started. The numbers that
matter are printed as lines (the epoch lines of ``fit``, the images/s of ``one_pass``), so the bars
can go: ``python -m course_utils.nbclean [notebook ...]`` removes every widget output (and the saved
widget state) from the given notebooks, all of ``notebooks/`` by default. The live bars still render
while a notebook runs in JupyterLab or Colab.

It also joins a cell's consecutive pieces of the same stream into one output, as Jupyter shows them
and as nbval compares them: how many pieces a cell's printing arrives in depends on timing (a slow
loop flushes more often), and a re-run should not change the file where the text is the same.
Everything else stays as it was.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def strip_widgets(notebook: dict) -> int:
    """Remove widget outputs and saved widget state from ``notebook`` (in place); how many were removed."""
    removed = 0
    for cell in notebook.get("cells", []):
        outputs = cell.get("outputs")
        if not outputs:
            continue
        kept = [o for o in outputs if WIDGET_VIEW not in o.get("data", {})]
        removed += len(outputs) - len(kept)
        cell["outputs"] = kept
    notebook.get("metadata", {}).pop("widgets", None)  # the state of widgets whose views are gone
    return removed


def merge_streams(notebook: dict) -> int:
    """Join consecutive stream outputs of the same name (stdout, stderr) within each cell of
    ``notebook`` (in place), keeping the text and its order; how many outputs were merged away."""
    merged = 0
    for cell in notebook.get("cells", []):
        kept = []
        for out in cell.get("outputs") or []:
            last = kept[-1] if kept else None
            if (out.get("output_type") == "stream" and last is not None and last.get("output_type") == "stream"
                    and last.get("name") == out.get("name")):
                text = "".join(last["text"]) + "".join(out["text"])
                last["text"] = text.splitlines(keepends=True)
                merged += 1
            else:
                kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    return merged


def clean(path: str | Path) -> int:
    """Strip widgets from the notebook file at ``path`` and join split streams, rewriting the file only
    if something changed. Returns how many widget outputs were removed."""
    path = Path(path)
    notebook = json.loads(path.read_text(encoding="utf-8"))
    had_state = "widgets" in notebook.get("metadata", {})
    removed = strip_widgets(notebook)
    merged = merge_streams(notebook)
    if removed or had_state or merged:
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return removed


def main(argv: list[str] | None = None) -> int:
    from .runtime import REPO_ROOT

    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])] or sorted(
        (REPO_ROOT / "notebooks").glob("*.ipynb"))
    for p in paths:
        n = clean(p)
        if n:
            print(f"{p.name}: removed {n} widget output(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
