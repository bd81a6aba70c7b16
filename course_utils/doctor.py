"""``python -m course_utils doctor``: what an instructor runs first in class.

It says which device training will use and why, the precision and compile choices that follow, the
loader workers, where the data was found (or what to do), the library versions, whether notebook
progress bars will render as widgets, whether the shipped weights are intact, and whether the notebooks
import this repository's own files (an editable install). It trains nothing
and reads no image: it takes a second. ``diagnose()`` returns the findings; ``main`` prints them and
returns 0 when the kit can train here, 1 when something must be fixed first. A line marked ``note``
does not stop training but asks for a look (no data yet: the first run downloads it, which needs the
internet).
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass


@dataclass
class Finding:
    topic: str
    text: str
    ok: bool = True
    note: bool = False   # training can go ahead, but read this first (printed "note", not "ok")

    @property
    def tag(self) -> str:
        return "FIX" if not self.ok else "note" if self.note else "ok"


def _versions() -> Finding:
    """The libraries training needs, with their versions; one missing stops training (the augmentation needs
    albumentations, the data download torchvision)."""
    from importlib.metadata import PackageNotFoundError, version

    parts, missing = [f"python {platform.python_version()}"], False
    for name in ("torch", "torchvision", "albumentations"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} MISSING (pip install -r requirements.txt)")
            missing = True
    return Finding("versions", ", ".join(parts), ok=not missing)


def _installs() -> list:
    """Where ``course_utils`` is installed, as ``(folder, editable)`` pairs, resolved. Editable installs
    (``pip install -e``) name the repository pip's ``direct_url.json`` records; other installs (``pip install .``,
    or a record without ``direct_url.json``) name the package folder they put in site-packages. The
    repository's own ``course_utils.egg-info``, seen when Python runs in its root, is the source tree, not an
    install, and is left out by the caller (its folder is the one imported)."""
    import json
    from importlib.metadata import distributions
    from pathlib import Path

    found = []
    for dist in distributions():
        if (dist.metadata["Name"] or "").replace("-", "_").lower() != "course_utils":
            continue
        try:
            info = json.loads(dist.read_text("direct_url.json") or "{}")
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        url = info.get("url", "")
        if (info.get("dir_info") or {}).get("editable") and url.startswith("file:"):
            found.append((_path_of_file_url(url), True))
        else:
            found.append((Path(dist.locate_file("course_utils")).resolve(), False))
    return found


def _path_of_file_url(url: str):
    """The folder a ``file:`` URL names, decoded once (``url2pathname`` decodes ``%XX``: a clone named
    ``a%20b`` stays that), with a Windows share's server kept (``file://server/share/kit``)."""
    from pathlib import Path
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parts = urlparse(url)
    raw = parts.path if parts.netloc in ("", "localhost") else f"//{parts.netloc}{parts.path}"
    return Path(url2pathname(raw)).resolve()


def _kit_finding() -> Finding:
    """Which copy of ``course_utils`` runs, and whether the notebooks run the same. requirements.txt installs
    the repository editable (``-e .``), so the notebooks run its own files. A copy installed by ``pip install .``
    keeps its old code after a ``git pull`` or an exercise's edit (and ``python -m course_utils`` in the
    repository's root imports the root's files, so the copy the notebooks import is found among the installs),
    a kit that is not installed imports only from the repository's root (not from notebooks/), and with two
    clones the notebooks import the one installed, whichever folder ``doctor`` ran in."""
    from pathlib import Path

    import course_utils

    here = Path(course_utils.__file__).resolve().parent
    fix = "From the repository's root: pip install -e . (the notebooks then run its own files)"
    if {"site-packages", "dist-packages"} & set(here.parts):
        return Finding("kit", f"course_utils runs from a copy installed in {here.parent} (by pip install . or an "
                              f"older install): a git pull or an edit in the repository does not reach it. {fix}",
                       note=True)
    installs = _installs()
    editable = sorted({folder for folder, is_editable in installs if is_editable})
    copies = sorted({folder for folder, is_editable in installs
                     if not is_editable and folder != here and (folder / "__init__.py").is_file()})
    if here.parent in editable:
        return Finding("kit", "course_utils from this repository, installed editable: the notebooks run its files")
    if editable:
        return Finding("kit", f"this is the kit in {here.parent}, but the one installed (editable) is in "
                              f"{', '.join(map(str, editable))}: the notebooks import that one. To use this one: "
                              "pip install -e . from its root", note=True)
    if copies:
        return Finding("kit", f"this is the kit in {here.parent}, but the notebooks import a copy installed in "
                              f"{', '.join(str(c.parent) for c in copies)} (by pip install . or an older install), "
                              f"which a git pull or an edit here does not reach. {fix}", note=True)
    return Finding("kit", f"course_utils imported from {here.parent}, which is not installed: notebooks opened in "
                          "notebooks/ will not find it. From the repository's root: pip install -r requirements.txt",
                   note=True)


def _device_findings(device_name: str | None) -> list[Finding]:
    import torch

    from .config import TrainConfig, choose_recipe
    from .runtime import auto_device, cpu_name, get_device, loader_workers, mixed_precision, precision_name

    passed_over = None
    try:
        if device_name in (None, "auto"):   # a card this PyTorch cannot run: said below, as a finding
            device, passed_over = auto_device()
        else:
            device = get_device(device_name)
    except ValueError as err:
        return [Finding("device", str(err), ok=False)]
    unusable = [] if passed_over is None else [Finding("gpu", f"{passed_over}; until then auto trains on the CPU",
                                                       ok=False)]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        what = f"{device} ({torch.cuda.get_device_name(index)}, compute capability {major}.{minor})"
    elif device.type == "mps":
        what = "mps (Apple GPU)"
    else:
        what = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    recipe = choose_recipe("auto", str(device))
    config = TrainConfig.recipe(recipe)
    dtype = mixed_precision(device, config.amp)
    why = {None: "full precision: mixed precision is for CUDA GPUs",
           torch.bfloat16: "bf16 tensor cores (capability 8.0 or newer)",
           torch.float16: "fp16 with loss scaling: this card has no native bf16 (before capability 8.0)"}[dtype]
    if device.type == "cuda" and config.compile:
        from .training import compile_unavailable

        reason = compile_unavailable(device)
        compile_note = (f"torch.compile off: {reason}" if reason is not None
                        else "torch.compile on (a failed first compile falls back to eager)")
    else:
        compile_note = "torch.compile off (only used on CUDA)"
    return unusable + [
        Finding("device", what),
        Finding("recipe", f"auto picks '{recipe}' here: {config.describe(str(device)).splitlines()[0]}"),
        Finding("precision", f"{precision_name(dtype)} ({why}); {compile_note}"),
        _loader_finding(loader_workers(device), device.type),
    ]


#: Loader workers hand their batches to the training process through shared memory (/dev/shm on
#: Linux), each keeping up to 2 batches ready (DataLoader's prefetch_factor): the largest is an
#: evaluation batch of 1,000 normalised float32 images, 1000 x 3 x 32 x 32 x 4 bytes.
_LARGEST_BATCH_BYTES = 1000 * 3 * 32 * 32 * 4
_PREFETCH = 2


def _shared_memory_bytes(path: str = "/dev/shm") -> "int | None":
    """The size of the shared-memory filesystem, or None where there is none to read (not Linux)."""
    import os

    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_blocks * st.f_frsize


def _loader_finding(workers: int, device_type: str) -> Finding:
    text = f"{workers} worker process(es)"
    if device_type == "cpu":
        return Finding("loader", text + " (augmentation in the training process: a CPU's cores train)")
    shm = _shared_memory_bytes() if workers else None
    need = workers * _PREFETCH * _LARGEST_BATCH_BYTES
    if shm is not None and shm < need:  # Docker's default is 64 MB: workers would die with a bus error
        return Finding("loader", text + f"; /dev/shm holds {shm / 2**20:.0f} MB, less than the {need / 2**20:.0f} MB "
                                        "their batches can need at once: start the container with --shm-size=1g, "
                                        "or train with --workers 0", ok=False)
    return Finding("loader", text)


#: The size of torchvision's CIFAR-10 download (cifar-10-python.tar.gz, 170,498,071 bytes), in MB.
DOWNLOAD_MB = 170


def _data_finding(data_dir: str | None) -> Finding:
    from .data import (CACHE_NAME, CLASSES, DataFormatError, DataNotFoundError, _archives, _find_image_folder,
                       _folders_in, _refuse_half_image_folder, _several_archives, data_root)
    from .runtime import shown_path

    try:
        root = data_root(data_dir)   # the checks load_cifar10 makes first: a folder that is missing or a file
    except DataNotFoundError as err:
        return Finding("data", str(err), ok=False)
    folder = _find_image_folder(root) if root.is_dir() else None
    if folder is None:
        try:   # train/ without test/: the loader refuses it, so training cannot start
            _refuse_half_image_folder(root)
        except DataFormatError as err:
            return Finding("data", str(err), ok=False)
    if folder is not None:
        for split in ("train", "test"):  # the folders' names only: no image is read
            have = set(_folders_in(folder / split))
            missing = [c for c in CLASSES if c not in have]
            extra = sorted(have - set(CLASSES))
            if missing:
                return Finding("data", f"{shown_path(folder / split)} lacks the class folder(s) {', '.join(missing)}"
                                       + (f" (and has {', '.join(extra)}, not a CIFAR-10 class)" if extra else "")
                                       + ": every split needs CIFAR-10's ten class folders; extract the whole "
                                         "copy again", ok=False)
            if extra:   # the loader refuses them too: the labels follow the folder names
                return Finding("data", f"{shown_path(folder / split)} has {', '.join(extra)} beside CIFAR-10's ten "
                                       "class folders: move it out of the split (the labels follow the folder "
                                       "names)", ok=False)
        cached = " (decoded cache present)" if (root / CACHE_NAME).is_file() else " (decoded on first use, then cached)"
        return Finding("data", f"image folder {shown_path(folder)}{cached}")
    if (root / "cifar-10-batches-py").is_dir():
        return Finding("data", f"torchvision's archive {shown_path(root / 'cifar-10-batches-py')}")
    archives = _archives(root)
    if len(archives) > 1:
        return Finding("data", _several_archives(shown_path(root), archives), ok=False)
    if archives:
        return Finding("data", f"archive {archives[0].name} in {shown_path(root)} (extracted on first use)")
    return Finding("data", f"no CIFAR-10 copy in {shown_path(root)} yet: the first run downloads it with torchvision "
                           f"({DOWNLOAD_MB} MB, needs the internet). Offline, put a copy there first: the official "
                           "cifar-10-python.tar.gz as it is (extracted on first use), or an image folder "
                           "(train/<class>/, test/<class>/) or a .tar.gz of one; or set COURSE_DATA_DIR", note=True)


def _widgets_finding() -> Finding:
    if importlib.util.find_spec("ipywidgets") is None:
        return Finding("widgets", "ipywidgets missing: notebook progress bars print as text "
                                  "(pip install ipywidgets)", ok=True)
    return Finding("widgets", "ipywidgets installed: progress bars render as widgets in JupyterLab and Colab")


def _weights_finding() -> Finding:
    from .pretrained import PretrainedError, WEIGHTS_DIR, card, sha256

    try:
        info = card("cifarnet")
    except PretrainedError as err:   # training does not need them; the notebooks' pictures of a trained net do
        return Finding("weights", str(err), note=True)
    path = WEIGHTS_DIR / info["file"]
    if not path.is_file() or sha256(path) != info["sha256"]:
        return Finding("weights", f"{path.name} is missing or altered: load_pretrained will refuse it; "
                                  "git checkout -- course_utils/weights", note=True)
    return Finding("weights", f"cifarnet: {info['final_test_acc']:.2f}% test accuracy, trained in "
                              f"{info['train_minutes']} min on {info['device']}"
                              + (f" ({info['device_name']})" if info.get("device_name") not in (None, "", info["device"]) else "")
                              + " (load_pretrained('cifarnet'))")


def diagnose(device: str | None = None, data_dir: str | None = None) -> list[Finding]:
    """Everything ``doctor`` checks, as findings; ``ok=False`` marks what stops training here."""
    return [_versions(), _kit_finding(), *_device_findings(device), _data_finding(data_dir),
            _widgets_finding(), _weights_finding()]


def main(device: str | None = None, data_dir: str | None = None, print_fn=print) -> int:
    findings = diagnose(device, data_dir)
    for f in findings:
        print_fn(f"{f.tag:<4} {f.topic:<9} {f.text}")
    blocked = [f.topic for f in findings if not f.ok]
    notes = [f.topic for f in findings if f.ok and f.note]
    if blocked:
        print_fn(f"not ready: fix {', '.join(blocked)} first (the lines marked FIX)")
    else:
        print_fn("ready: python -m course_utils train"
                 + (f" (read the line{'s' if len(notes) > 1 else ''} marked note first: {', '.join(notes)})" if notes else ""))
    return 1 if blocked else 0
