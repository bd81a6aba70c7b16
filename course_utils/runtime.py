"""Where the kit runs: device choice, seeding, smoke mode and the repository's folders.

Nothing here touches the network or the GPU at import time.
"""
from __future__ import annotations

import contextlib
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

#: The repository root (the folder holding ``course_utils/``), whatever the working directory.
REPO_ROOT = Path(__file__).resolve().parent.parent

SMOKE_ENV = "COURSE_SMOKE"
DATA_ENV = "COURSE_DATA_DIR"


def shown_path(path: "str | os.PathLike") -> str:
    """A path as the kit shows it (log lines, data sources, cards): relative to the repository when
    inside it, so no notebook output or committed file carries this machine's absolute path."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def is_smoke() -> bool:
    """True when ``COURSE_SMOKE`` is set to 1/true/yes: tiny data and few epochs, for CI on a CPU."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def device_named(name: str) -> torch.device:
    """``name`` as a device the kit trains on (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``), whether or not
    this machine has it; a ``ValueError`` listing the choices for any other name. (``get_device`` then checks
    that the device is there.)"""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'") from err
    if device.type not in ("cpu", "cuda", "mps"):   # torch knows more (xpu, meta, ...); the kit trains on these
        raise ValueError(f"device {name!r} is not one the kit trains on; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
    return device


def get_device(name: str | None = None) -> torch.device:
    """The device to train on: ``name`` if given (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``),
    else the first available of cuda, mps, cpu.

    Asking for a device that is not there raises a ``ValueError`` that says what is available.
    """
    if name is None or name == "auto":
        device, passed_over = auto_device()
        if passed_over is not None:
            warnings.warn(f"{passed_over}; training on the CPU meanwhile", stacklevel=2)
        return device
    device = device_named(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "cuda":
        missing = cuda_build_lacks_card(device.index)
        if missing is not None:
            raise ValueError(f"device {name!r} asked for, but {missing}; or use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use --device cpu or auto")
    return device


def auto_device() -> tuple[torch.device, str | None]:
    """What ``get_device("auto")`` picks (the first available of cuda, mps, cpu), and why it passed over the
    CUDA card (``cuda_build_lacks_card``'s words), None where it did not; ``doctor`` reports the reason."""
    passed_over = None
    if torch.cuda.is_available():
        passed_over = cuda_build_lacks_card()   # the current card, which "cuda" means
        if passed_over is None:
            return torch.device("cuda"), None
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), passed_over
    return torch.device("cpu"), passed_over


def cuda_build_lacks_card(index: int | None = None) -> str | None:
    """Why this PyTorch cannot run on CUDA card ``index`` (the current card if None; in words, with the fix),
    or None where it can.

    A CUDA wheel carries machine code for some compute capabilities (``torch.cuda.get_arch_list()``:
    ``sm_75`` ...) and perhaps PTX (``compute_XY``) that the driver compiles for newer cards. The rule
    applied, the general one (torch's own table has exceptions, such as Jetson boards): a card runs the
    code of an ``sm_XY`` of its own major version up to its own minor, or PTX of its capability or lower.
    Recent wheels dropped Pascal and Volta (a P100 is 6.0, a V100 7.0): torch only warns, says CUDA is
    available, and the first kernel fails with "no kernel image is available". Where the build or the
    card cannot be asked (ROCm, no driver, a simulated device) the answer is None: torch decides.
    """
    try:
        archs = list(torch.cuda.get_arch_list()) if torch.version.cuda else []
        index = torch.cuda.current_device() if index is None else index
        major, minor = torch.cuda.get_device_capability(index)
    except Exception:  # noqa: BLE001 - nothing to ask: let torch find out at the first kernel
        return None
    card = 10 * major + minor
    codes = [(m[1], int(m[2])) for m in (re.fullmatch(r"(sm|compute)_(\d+)[a-z]?", arch) for arch in archs) if m]
    if not codes or any(code <= card and (kind == "compute" or code // 10 == major) for kind, code in codes):
        return None
    try:
        card_name = torch.cuda.get_device_name(index)
    except Exception:  # noqa: BLE001
        card_name = f"cuda:{index}"
    return (f"this PyTorch ({torch.__version__}) has no GPU code for {card_name} (compute capability {major}.{minor}; "
            f"it was built for {' '.join(archs)}): install a PyTorch built for this card "
            "(https://pytorch.org/get-started/locally/: an older CUDA version's wheel)")


def cuda_device_context(device: torch.device | str):
    """A context in which ``device`` (``cuda:N``) is the current CUDA device, for code that uses the current
    device rather than the one it is given: the DataLoader's pin-memory thread pins on it, torchsummary
    builds its input on it. Elsewhere (a CPU, MPS, a plain ``cuda``) it does nothing."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        return torch.cuda.device(device)
    return contextlib.nullcontext()


#: bf16 runs on tensor cores from compute capability 8.0 (Ampere) on. ``torch.cuda.is_bf16_supported()``
#: also says True on older cards (a T4 is 7.5), where bf16 is emulated: slow, or refused by cuDNN.
BF16_MIN_CAPABILITY = (8, 0)


def cpu_name(cpuinfo: "str | os.PathLike" = "/proc/cpuinfo") -> str:
    """The processor's model name and the vector instructions PyTorch's kernels use on it, such as
    ``"AMD EPYC (AVX512)"``: run records name it, because CPU minutes only compare on the same kind of
    processor. Falls back to ``platform.processor()`` or the architecture where ``cpuinfo`` is missing."""
    import platform

    name = ""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def device_name(device: torch.device | str) -> str:
    """What ``device`` is, for a run record: the CUDA card's name, ``cpu_name()``, or the device type."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name() if device.type == "cpu" else device.type


def mixed_precision(device: torch.device | str, amp: bool = True) -> torch.dtype | None:
    """The autocast dtype training uses on ``device``, or None for fp32. One function decides, for
    ``fit``, ``evaluate``, ``predict`` and the benchmark:

    * CUDA with compute capability ≥ 8.0 (A100, H100, RTX 30xx and later): bfloat16;
    * older CUDA cards (T4 7.5, V100 7.0; Pascal too, not measured there: a P100 runs fp16 at twice its fp32
      rate, a GTX 10xx at a fraction of it): float16, with a gradient scaler (``needs_grad_scaler``);
    * CPU and MPS, or ``amp=False``: None (fp32).
    """
    device = torch.device(device)
    if not amp or device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.bfloat16 if torch.cuda.get_device_capability(index) >= BF16_MIN_CAPABILITY else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """float16 has a narrow exponent: small gradients underflow to 0 unless the loss is scaled first.
    bfloat16 keeps float32's exponent and needs no scaling."""
    return dtype == torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + GradScaler"}[dtype]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system keeps one (Linux), else all the
    machine's. A Slurm job or a container pinned to 4 of a 64-core host's cores gets 4; ``os.cpu_count()``
    would say 64 (and DataLoader warns when it is given more workers than the affinity allows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def loader_workers(device: torch.device, requested: int | None = None) -> int:
    """Data-loader processes: ``requested`` if given; else

    * 0 on a CPU: augmenting in other processes would only take cores from the training itself;
    * at most 2 on MPS: macOS starts workers by *spawning*, and each one unpickles its own copy of the
      image arrays, so many workers cost memory and start-up for little gain on a laptop;
    * ``min(8, cores)`` on CUDA, where the GPU otherwise waits for augmentation;

    ``cores`` being the ones this process may use (``usable_cores``).
    """
    if requested is not None:
        return requested
    cores = usable_cores()
    kind = torch.device(device).type
    return 0 if kind == "cpu" else min(2, cores) if kind == "mps" else min(8, cores)


def channels_last_on(device: torch.device | str, wanted: bool) -> bool:
    """Whether to run in the channels-last layout on ``device``: as ``wanted``, except on Apple's MPS, where
    BatchNorm's backward gives wrong gradients for channels-last input (weight gradients orders of magnitude
    off, training diverging within a few steps: pytorch/pytorch#175189, fixed in 2026, after releases the
    kit supports); there every batch goes in contiguous (``training._layout``) and the model stays as built."""
    return bool(wanted) and torch.device(device).type != "mps"


def loader_settings(device: torch.device | str, workers: int) -> dict:
    """How the loaders move data to ``device``: pinned memory and asynchronous copies only on CUDA
    (the only place they are safe and useful). The training loader's workers are kept from epoch to epoch
    on CUDA and MPS (each phase's until the phase ends: ``data.PhasedLoader``), where starting them each
    epoch would cost a short epoch's time; on a CPU they start anew
    each epoch, seeded from the epoch's seed (``training._reseed_epoch`` seeds the loader's generator, which
    draws their seeds), so a resumed run augments as the uninterrupted one did with any ``--workers``: kept
    workers would carry their augmentation streams over from the epochs before. The evaluation loaders (no
    augmentation: a batch is one vectorised normalisation) get workers only on CUDA, kept for the whole run,
    where they pin the next batch while the GPU works; elsewhere they load in the training process: on MPS
    each pass would otherwise *spawn* its workers again, each unpickling its own copy of the images, to save
    one normalisation per batch."""
    kind = torch.device(device).type
    cuda = kind == "cuda"
    return {"workers": workers, "pin_memory": cuda, "non_blocking": cuda,
            "persistent_train": workers > 0 and kind != "cpu", "eval_workers": workers if cuda else 0,
            "persistent_eval": workers > 0 and cuda}


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the ``with`` block with ``n`` intra-op threads (``torch.set_num_threads``), then restore the
    previous count, also when the block fails or is interrupted: a timing meant for one core (a data
    loader worker's view) must not leave every later cell of the kernel on one core."""
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def use_cudnn_autotuner(device: torch.device | str) -> bool:
    """On CUDA, let cuDNN time its convolution algorithms for each input shape once and keep the fastest
    (``cudnn.benchmark``), as training and the benchmark both do, so that the benchmark measures what
    training runs. Not where deterministic kernels were asked for (``seed_everything(seed,
    deterministic=True)``): the autotuner may pick another algorithm each run. Returns whether it is on;
    nothing changes off CUDA."""
    if torch.device(device).type != "cuda":
        return False
    if not torch.backends.cudnn.deterministic:
        torch.backends.cudnn.benchmark = True
    return bool(torch.backends.cudnn.benchmark)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA and MPS run asynchronously), so a timer that stops after
    this measures the work, not the queueing. Nothing to wait for on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices).

    ``deterministic=True`` also asks cuDNN for deterministic kernels (slower). On a CPU the same seed
    already gives the same run; on a GPU some kernels stay non-deterministic (see README).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def figures_root() -> Path:
    """``figures/`` at the repository root, or env ``COURSE_FIGURES_DIR`` if set: where full-size pictures
    and studies are (notebook 09 reads the recorded ablation study here, in smoke mode too)."""
    return Path(os.environ.get("COURSE_FIGURES_DIR") or REPO_ROOT / "figures").expanduser()


def figures_dir() -> Path:
    """Where this run writes its pictures (created on demand): ``figures_root()``, or its ``smoke/``
    subfolder (git-ignored) in smoke mode, so a quick test run never overwrites the pictures the README
    shows."""
    path = figures_root() / "smoke" if is_smoke() else figures_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Where run records and checkpoints go: env ``COURSE_RUNS_DIR`` if set (a Google Drive folder in
    Colab, say), else ``runs/`` at the repository root (git-ignored)."""
    chosen = os.environ.get("COURSE_RUNS_DIR")
    path = Path(chosen or REPO_ROOT / "runs").expanduser()
    if chosen and not path.parent.is_dir():
        # not created: in Colab an unmounted Drive path would land on the runtime's own disk, lost with it
        raise ValueError(f"COURSE_RUNS_DIR={chosen}: its parent folder {path.parent} does not exist (in Colab: is "
                         "Google Drive mounted? drive.mount('/content/drive')); create it, or unset COURSE_RUNS_DIR")
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment() -> str:
    """One line for the top of a notebook: device, smoke mode, library versions."""
    return f"device: {get_device()} | smoke mode: {is_smoke()} | torch {torch.__version__}"
