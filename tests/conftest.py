"""Shared fixtures: a tiny CIFAR-like image folder the tests make themselves (no real data needed)."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils.arithmetic import conv_params
from course_utils.data import CLASSES

torch.set_num_threads(1)


def write_image_folder(root, train_per_class=6, test_per_class=3, ext="png", seed=0):
    """Write random 32x32 RGB images as root/train/<class>/*.ext and root/test/<class>/*.ext.
    Each class gets its own mean colour so a model can learn something."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.array([(c * 25) % 256, (c * 70) % 256, 255 - c * 25], dtype=np.int16)
                img = np.clip(base + rng.integers(-20, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:04d}.{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_image_folder(tmp_path / "cifar")


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch, tmp_path):
    """Every test runs offline and away from the repository's own files: runs and figures go to the
    test's temporary folder (subprocesses inherit the variables), and a download of CIFAR-10 is refused
    instead of fetching 170 MB on a networked machine."""
    monkeypatch.delenv("COURSE_DATA_DIR", raising=False)
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    monkeypatch.setenv("COURSE_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "runs"))
    # any download goes to a port nothing listens on: refused at once, never to the internet
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/tests-never-download/cifar-10-python.tar.gz")


def committed_output(notebook: str, marker: str, source: str = "") -> str:
    """The text output of the one code cell of ``notebooks/<notebook>.ipynb`` (as committed) that prints
    ``marker`` (and whose source holds ``source``): what the README and docs quote from a notebook."""
    import json

    from course_utils.runtime import REPO_ROOT

    cells = json.loads((REPO_ROOT / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    texts = ["".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" and source in "".join(c["source"])
             for o in c.get("outputs", [])]
    [text] = [t for t in texts if marker in t]
    return text


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to true, 1 or yes, as ``.ci/run`` sets it); ``CI=false`` is not."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_without_real_data(reason: str) -> None:
    """Skip a test that needs the real CIFAR-10 copy in data/; in CI (``CI`` set, as ``.ci/run`` runs)
    fail instead: CI extracts the offline copy, so its absence there is a broken setup, not a reason to
    go green without the kit's accuracy checks."""
    if in_ci():
        pytest.fail(f"{reason}; CI extracts the offline copy into data/ (.ci/run), so this run's setup is broken")
    pytest.skip(reason)


def conv_bn(cin, cout, k=3, groups=1):
    """Parameters of a bias-free conv and its BatchNorm (a scale and a shift per channel)."""
    return conv_params(cin, cout, k, groups=groups, bias=False) + 2 * cout


def separable(cin, cout):
    """Parameters of a depthwise-separable conv: depthwise 3x3 + BN, then pointwise 1x1 + BN."""
    return conv_bn(cin, cin, 3, groups=cin) + conv_bn(cin, cout, 1)


class CardContext:
    """Stands in for ``runtime.cuda_device_context`` where no second card exists: ``current`` is the stack of
    devices made current, so a test reads which card was current while the code under test ran."""

    def __init__(self):
        self.current: list[torch.device] = []

    @contextlib.contextmanager
    def __call__(self, device):
        self.current.append(torch.device(device))
        try:
            yield
        finally:
            self.current.pop()
