"""End to end: the notebooks open, render and run in JupyterLab in a real (headless) Chromium.

Starts JupyterLab on 127.0.0.1 with a token, opens the data-analysis notebook and a convolution
notebook, runs all cells through the UI ("Run" → "Run All Cells"), waits for every cell to finish and
checks the page: no error output, the tqdm progress widget rendered, at least one image shown. A
screenshot goes to pytest's temporary folder, so running the tests leaves the tree as it was; with
``COURSE_REFRESH_SCREENSHOT=1`` it replaces figures/jupyterlab.png, the one the README shows.

Needs Debian's ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package (no browser
download): ``.ci/run`` installs both. Without them the test is skipped, saying which is missing (in CI it fails).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from course_utils.runtime import REPO_ROOT

CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]
NOTEBOOKS = ["notebooks/01_data_analysis.ipynb", "notebooks/04_dilated.ipynb"]

PROGRESS = ".jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .widget-progress"


def _requirements() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; no browser download needed)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set COURSE_CHROMIUM)"
    if not (REPO_ROOT / "data").exists() and not os.environ.get("COURSE_DATA_DIR"):
        return "no CIFAR-10 copy in data/ or $COURSE_DATA_DIR for the notebooks to read"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from conftest import in_ci

    missing = _requirements()
    if missing and in_ci():   # .ci/run installs both: their absence there is a broken setup, not a reason to pass
        pytest.fail(f"{missing}; .ci/run installs Chromium and Playwright, so in CI the browser test must run")
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("lab")
    # serve a copy of the notebooks, so that JupyterLab's autosave never rewrites the committed ones
    root = work / "root"
    shutil.copytree(REPO_ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port, token = _free_port(), secrets.token_hex(16)
    # answer the "official Jupyter news?" question up front (Never), so its toast never covers a cell
    settings = work / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = {**os.environ, "COURSE_SMOKE": "1", "JUPYTER_CONFIG_DIR": str(work / "config"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(work / "settings")}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--allow-root",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("JupyterLab exited: " + (work / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail("JupyterLab did not start in 60 s: " + (work / "lab.log").read_text()[-2000:])
    yield url, token
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


def _run_notebook(page, url: str, token: str, notebook: str, timeout_s: float = 420) -> dict:
    page.goto(f"{url}/lab/tree/{notebook}?reset&token={token}")  # reset: no tabs restored from earlier
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # a fresh profile may ask which kernel to use: accept the default
    dialog = page.locator(".jp-Dialog button.jp-mod-accept")
    try:
        dialog.first.click(timeout=5_000)
    except Exception:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    try:  # the "notified about official Jupyter news?" toast would cover the screenshot
        page.locator(".jp-Notification-Toast").get_by_role("button", name="No").click(timeout=3_000)
    except Exception:
        pass
    page.locator(".jp-Notebook").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = page.evaluate("""() => {
            const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                .map(p => p.textContent.trim());
            return {prompts, busy: !!document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='busy']")};
        }""")
        done = state["prompts"] and all(p.startswith("[") and p[1:-2].isdigit() for p in state["prompts"])
        if done and not state["busy"]:
            break
        time.sleep(1)
    else:
        pytest.fail(f"{notebook}: cells did not finish in {timeout_s:.0f} s: {state}")
    return page.evaluate("""() => {
        const PROGRESS_SELECTOR = '""" + PROGRESS + """';
        return {
        errors: [...document.querySelectorAll(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")]
            .map(e => e.textContent.slice(0, 500)),
        tracebacks: [...document.querySelectorAll('.jp-OutputArea-output')].filter(e => e.textContent.includes('Traceback'))
            .length,
        images: document.querySelectorAll(".jp-OutputArea-output img, .jp-RenderedImage img").length,
        progress: document.querySelectorAll(PROGRESS_SELECTOR).length,
        widgetClasses: [...new Set([...document.querySelectorAll('.jp-OutputArea-output *')]
            .flatMap(e => [...e.classList]).filter(c => c.includes('widget') || c.includes('progress')))].slice(0, 30),
        missingWidgets: [...document.querySelectorAll('.jp-OutputArea-output')]
            .filter(e => e.textContent.includes('IProgress not found') || e.textContent.includes('Error displaying widget')).length,
    }}""")


def test_notebooks_run_in_jupyterlab(lab, browser, tmp_path):
    url, token = lab
    results = {}
    for nb in NOTEBOOKS:
        page = browser.new_page()
        results[nb] = _run_notebook(page, url, token, nb)
        if nb == NOTEBOOKS[0]:
            bars = page.locator(PROGRESS)
            if bars.count():
                bars.first.scroll_into_view_if_needed()
            refresh = os.environ.get("COURSE_REFRESH_SCREENSHOT", "").lower() in {"1", "true", "yes"}
            shot = REPO_ROOT / "figures" / "jupyterlab.png" if refresh else tmp_path / "jupyterlab.png"
            if refresh:   # the README shows this one: nothing may cover it
                assert page.locator(".jp-Notification-Toast").count() == 0, "a notification toast covers the screenshot"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        page.close()
    for nb, r in results.items():
        assert r["errors"] == [] and r["tracebacks"] == 0, f"{nb}: error output on the page: {r}"
        assert r["images"] >= 1, f"{nb}: no image output rendered: {r}"
        assert r["missingWidgets"] == 0, f"{nb}: a widget failed to render: {r}"
    assert results[NOTEBOOKS[0]]["progress"] >= 1, f"the tqdm progress widget did not render: {results}"


def test_conv_explorer_sliders_redraw_in_jupyterlab(lab, browser):
    """Notebook 02's convolution explorer in a real browser: the sliders render, and setting one (the
    stride, typed into its readout as a learner can) reruns the cell's function: the printed output
    size and the picture change to match the arithmetic (5x5 input, 3x3 kernel, padding 1)."""
    url, token = lab
    page = browser.new_page()
    try:
        r = _run_notebook(page, url, token, "notebooks/02_convolution_arithmetic.ipynb")
        assert r["errors"] == [] and r["tracebacks"] == 0 and r["missingWidgets"] == 0, r
        explorer = page.locator(".widget-interact").first
        explorer.scroll_into_view_if_needed()
        # the widget renders in steps (sliders, then their labels, then the function's output): wait for each
        page.wait_for_function("() => document.querySelector('.widget-interact').innerText.includes('output 3x3')",
                               timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('.widget-interact .widget-slider .widget-label')]"
                               ".filter(l => l.textContent.trim()).length === 5", timeout=60_000)
        labels = [t.strip() for t in explorer.locator(".widget-slider .widget-label").all_text_contents()]
        assert labels == ["input", "kernel", "stride", "padding", "dilation"], labels
        before = explorer.locator("img").first.get_attribute("src")
        stride = explorer.locator(".widget-slider").nth(2).locator(".widget-readout")
        stride.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("1")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('.widget-interact').innerText.includes('output 5x5')",
                               timeout=60_000)
        text = explorer.inner_text()
        assert "neighbouring outputs are 1 pixel(s) apart" in text and "output 3x3" not in text, text
        page.wait_for_function("(old) => { const i = document.querySelector('.widget-interact img');"
                               " return i && i.getAttribute('src') !== old; }", arg=before, timeout=60_000)
    finally:
        page.close()
