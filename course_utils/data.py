"""CIFAR-10, from wherever the learner has it, decoded once into memory; and its augmentations.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.

Where the data comes from, in the order tried (``root`` is the argument, else ``$COURSE_DATA_DIR``,
else ``data/`` at the repository root, whatever the working directory):

1. an image folder: ``root/train/<class>/*.png|jpg`` and ``root/test/<class>/...``;
2. torchvision's official archive, already extracted: ``root/cifar-10-batches-py/``;
3. a ``.tar.gz`` in ``root`` holding either of them (extracted once, next to itself);
4. torchvision's download of the official archive, when online.

With none of these, one ``DataNotFoundError`` says where it looked and how to provide the data.
Decoded images are cached as ``root/cifar10-decoded.npz`` so the next notebook starts in a second.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import uuid
import zlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .runtime import DATA_ENV, REPO_ROOT

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SIZE = 32
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_NAME = "cifar10-decoded.npz"
#: The validation split: 500 training images per class (5,000 in all), drawn with this seed. Fixed, so
#: every run, recipe and ablation variant is judged on the same images.
VAL_PER_CLASS = 500
VAL_SEED = 0
_CACHE_VERSION = 2  # 2: the cache records the fingerprint of the images it was built from


class DataNotFoundError(FileNotFoundError):
    """No copy of CIFAR-10 could be found or downloaded."""


class DataFormatError(ValueError):
    """A copy of CIFAR-10 was found but cannot be read as it is."""


def default_validation_per_class(class_counts: Sequence[int]) -> int:
    """How many training images of every class ``CIFAR10Data.with_validation`` holds out by default, given
    the training images per class: ``VAL_PER_CLASS`` (500), or a tenth of the smallest class (at least 1)
    for a smaller image folder."""
    return min(VAL_PER_CLASS, max(1, int(min(class_counts)) // 10))


@dataclass
class CIFAR10Data:
    """Both splits in memory: images ``(N, 32, 32, 3) uint8`` (HWC, RGB) and labels ``(N,) int64``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...] = CLASSES
    source: str = ""
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    mean: tuple[float, float, float] = field(init=False)
    std: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.mean, self.std = channel_stats(self.train_images)
        self.source = self.source.replace(str(REPO_ROOT), ".")  # no machine's absolute path in outputs

    def __repr__(self) -> str:
        val = "" if self.val_labels is None else f"val={len(self.val_labels)}, "
        return (
            f"CIFAR10Data(train={len(self.train_labels)}, {val}test={len(self.test_labels)}, "
            f"classes={len(self.classes)}, source={self.source!r})"
        )

    @property
    def has_validation(self) -> bool:
        return self.val_labels is not None

    def with_validation(self, per_class: int | None = None, seed: int = VAL_SEED) -> "CIFAR10Data":
        """Hold out ``per_class`` training images of every class (a seeded, stratified draw) as the
        validation split. Every decision (recipe, early comparisons, the ablation) is made on it; the
        test set gives one final number. Mean and std come from what is left for training.

        ``per_class`` defaults to ``VAL_PER_CLASS`` (500: 5,000 of CIFAR-10's 50,000 images), or to a
        tenth of the smallest class (at least 1) for a smaller image folder.
        """
        if self.has_validation:
            raise ValueError("this data already has a validation split; split the original data instead")
        counts = np.bincount(self.train_labels, minlength=len(self.classes))
        if per_class is None:
            per_class = default_validation_per_class(counts)
        if counts.min() < 2:
            raise ValueError(
                f"holding out a validation split needs at least 2 training images in every class (one to hold out, "
                f"one to train on); the smallest class here has {counts.min()}. Add images, or train without a "
                "validation split (--set validation=false, or TrainConfig(validation=False))"
            )
        if per_class < 1 or per_class >= counts.min():
            raise ValueError(
                f"a validation split of {per_class} per class needs more training images per class than that "
                f"(the smallest class has {counts.min()}); choose 1 to {counts.min() - 1}"
            )
        val = stratified_indices(self.train_labels, per_class, seed)
        keep = np.setdiff1d(np.arange(len(self.train_labels)), val)
        return CIFAR10Data(self.train_images[keep], self.train_labels[keep], self.test_images, self.test_labels,
                           self.classes, f"{self.source} (validation {len(val)} held out)",
                           val_images=self.train_images[val], val_labels=self.train_labels[val])

    def subset(self, train_per_class: int | None, test_per_class: int | None, seed: int = 0) -> "CIFAR10Data":
        """A stratified subset: the first ``n`` images of each class after a seeded shuffle.

        Mean and std are recomputed from the subset's train split.
        """
        tr = stratified_indices(self.train_labels, train_per_class, seed)
        te = stratified_indices(self.test_labels, test_per_class, seed)
        val = {}
        if self.has_validation:  # the validation split shrinks in proportion to the test split
            va = stratified_indices(self.val_labels, test_per_class, seed)
            val = dict(val_images=self.val_images[va], val_labels=self.val_labels[va])
        return CIFAR10Data(
            self.train_images[tr], self.train_labels[tr], self.test_images[te], self.test_labels[te],
            self.classes, f"{self.source} (subset {len(tr)}/{len(te)})", **val,
        )


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 HWC images, on the 0–1 scale.

    A chunk of images and one channel at a time (a float64 copy of tens of MB however large the data
    set), accumulating the sum and the sum of squares in float64: exact to float64 rounding, in one pass
    over the data."""
    channels = images.shape[-1]
    total, squares, n = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, channels)
        for c in range(channels):
            values = block[:, c].astype(np.float64)
            total[c] += values.sum()
            squares[c] += np.dot(values, values)
        n += len(block)
    mean = total / n
    var = np.maximum(squares / n - mean ** 2, 0.0)
    return tuple(float(m) / 255 for m in mean), tuple(float(v) / 255 for v in np.sqrt(var))


def stratified_indices(labels: np.ndarray, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` examples of every class (all of them when ``per_class`` is None)."""
    if per_class is None:
        return np.arange(len(labels))
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.permutation(idx)[:per_class])
    return np.sort(np.concatenate(picks))


# --------------------------------------------------------------------------------------------
# Finding and decoding the data
# --------------------------------------------------------------------------------------------

def default_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$COURSE_DATA_DIR``, else ``data/`` in the repository."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise DataNotFoundError(
                f"{DATA_ENV}={env!r} points to a folder that does not exist. Create it and put CIFAR-10 "
                f"there, or unset {DATA_ENV} to use {REPO_ROOT / 'data'}."
            )
        return path
    return REPO_ROOT / "data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``default_root(root)``, checked: a clear ``DataNotFoundError`` when a folder given by name does not
    exist (a typo is likelier than a wish to download there) or when the root is a file. ``load_cifar10``
    and ``doctor`` both ask here."""
    if root is not None and not Path(root).expanduser().exists():
        raise DataNotFoundError(
            f"CIFAR-10 not found: the data folder {root} does not exist (a typo?). Point it at the folder that "
            "holds your copy, or create the folder (empty, to let torchvision download into it) and try again."
        )
    root = default_root(root)
    if root.exists() and not root.is_dir():
        raise DataNotFoundError(
            f"CIFAR-10 not found: {root} is a file, not a folder. Point --data-dir (or {DATA_ENV}) at the folder "
            "that holds train/ and test/ (or the archive), not at a file in it."
        )
    return root


def load_cifar10(root: str | os.PathLike | None = None, download: bool = True, cache: bool = True,
                 classes: Sequence[str] | None = None) -> CIFAR10Data:
    """Load CIFAR-10 (both splits) into memory from the first source found; see the module docstring.

    An image folder must hold CIFAR-10's ten class folders (``CLASSES``): a misnamed one is an error,
    because the labels follow the folder names. For another data set in the same layout, name its
    classes with ``classes=(...)``: the folders must be exactly those, and label ``i`` is ``classes[i]``.
    """
    root = data_root(root)
    wanted = CLASSES if classes is None else tuple(classes)
    looked: list[str] = []

    if cache and (root / CACHE_NAME).is_file():
        data, built_from = _read_cache(root / CACHE_NAME)
        if data is not None and data.classes == wanted:
            now = _fingerprint(root)
            if now == built_from:
                return data
            warnings.warn(
                f"{CACHE_NAME} in {root} was built from images that are "
                + ("gone (no train/ + test/ folders or cifar-10-batches-py/ next to it): not using it"
                   if now is None else "no longer the same (a file was added, removed or changed): decoding again"),
                stacklevel=2)

    folder = _find_image_folder(root)
    looked.append(f"an image folder {root}/train/<class>/ and {root}/test/<class>/")
    if folder is None:
        _refuse_half_image_folder(root)
    if folder is not None:
        data = _from_image_folder(folder, wanted, custom=classes is not None)
        return _write_cache(root, data) if cache else data

    batches = root / "cifar-10-batches-py"
    looked.append(f"torchvision's extracted archive {batches}/")
    if batches.is_dir():
        try:
            data = _from_torchvision(root, download=False)
        except RuntimeError as err:  # torchvision's checksum test failed
            raise DataFormatError(
                f"{batches} is incomplete or corrupt ({err}). Delete it and extract cifar-10-python.tar.gz "
                "again, or let torchvision download it."
            ) from err
        return _write_cache(root, data) if cache else data

    archives = _archives(root)
    looked.append(f"a .tar.gz archive in {root}/")
    if len(archives) > 1:
        raise DataFormatError(_several_archives(root, archives))
    if archives:
        _extract(archives[0], root)
        return load_cifar10(root, download=download, cache=cache, classes=classes)

    if download:
        looked.append("torchvision's download of the official archive")
        root.mkdir(parents=True, exist_ok=True)
        data, reason = _download(root)
        if data is not None:
            return _write_cache(root, data) if cache else data
    else:
        reason = "download was turned off"

    raise DataNotFoundError(
        "CIFAR-10 not found. Looked for:\n  - " + "\n  - ".join(looked) + f"\nand {reason}.\n"
        "To fix it, either\n"
        f"  * put a copy in {root}: the official cifar-10-python.tar.gz ({OFFICIAL_PAGE}, 170 MB, copied on a "
        "USB stick or a shared drive) as it is, or a folder with train/<class>/ and test/<class>/ images, or a "
        ".tar.gz of one (an archive is extracted on first use), or\n"
        f"  * point {DATA_ENV} (or data_dir=... / --data-dir) at the folder that holds your copy, or\n"
        "  * go online once: torchvision downloads the official archive to that folder."
    )


def _archives(root: Path) -> list[Path]:
    """The .tar.gz / .tgz archives in ``root`` (not macOS's ``._name.tar.gz`` metadata beside one)."""
    if not root.is_dir():
        return []
    return [a for a in sorted(root.glob("*.tar.gz")) + sorted(root.glob("*.tgz")) if not _hidden(a)]


def _several_archives(root: Path, archives: list[Path]) -> str:
    return (f"{root} holds {len(archives)} archives ({', '.join(a.name for a in archives)}) and no extracted data; "
            "keep the one CIFAR-10 archive there (or extract the one you want yourself) and try again.")


def _hidden(path: Path) -> bool:
    """A dot-name: a staging folder, or what macOS writes beside files it copies (``._name.png``: AppleDouble
    metadata, not an image; ``.DS_Store``)."""
    return path.name.startswith(".")


def _candidate_folders(root: Path) -> list[Path]:
    """``root`` and its sub-folders that are not hidden: where a copy's ``train/`` and ``test/`` may sit."""
    return [root] + (sorted(p for p in root.iterdir() if p.is_dir() and not _hidden(p)) if root.is_dir() else [])


def _find_image_folder(root: Path) -> Path | None:
    """``root`` itself, or its only sub-folder, when it holds ``train/`` and ``test/``. Hidden folders are
    not candidates: a ``.extracting-*`` folder left by an extraction that was killed (a kernel restart, out of
    memory) holds a partial copy, which would otherwise be decoded and cached as the data."""
    for c in _candidate_folders(root):
        if (c / "train").is_dir() and (c / "test").is_dir():
            return c
    return None


def _refuse_half_image_folder(root: Path) -> None:
    """A ``DataFormatError`` when ``root`` (or its only candidate sub-folder) holds ``train/`` without
    ``test/`` or the other way round: a copy cut short. Without it the loader would go on to an archive or
    to torchvision's download, and train on another copy than the learner's without a word."""
    for c in _candidate_folders(root):
        have = [s for s in ("train", "test") if (c / s).is_dir()]
        # another data set beside the copy (imagenette's train/ and val/) is not a CIFAR-10 copy cut short
        if len(have) == 1 and any((c / have[0] / name).is_dir() for name in CLASSES):
            missing = "test" if have == ["train"] else "train"
            raise DataFormatError(
                f"{c} holds {have[0]}/ but no {missing}/: the copy is incomplete (an extraction or a copy cut short?). "
                f"Copy or extract the whole copy again over it, or move {c / have[0]} away: then an archive in "
                f"{root} is extracted on first use, or another source is used")


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list:
    """The archive's members if every one is a plain file or folder whose path stays inside the folder it is
    extracted to; else a ``DataFormatError`` naming the first that does not. What ``filter="data"`` checks,
    for the Pythons before 3.10.12 and 3.11.4 that lack the filter."""
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith(("/", "\\")) or Path(m.name).is_absolute() or ".." in parts or not (m.isfile() or m.isdir()):
            raise _unsafe_member(archive, m.name)
    return members


def _unsafe_member(archive: Path, name: str) -> DataFormatError:
    return DataFormatError(
        f"{archive} holds {name!r}, which is not a plain file or folder inside the archive's own folder; nothing "
        "was extracted. A CIFAR-10 archive holds only image folders: get the archive again from where it came.")


def _extract(archive: Path, root: Path) -> None:
    """Extract a .tar.gz all or nothing: into a temporary folder beside the data (safely: no paths
    outside it), moved into place only once the archive has been read to its end. A truncated or
    corrupt archive leaves nothing behind that a later run could mistake for data."""
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                if hasattr(tarfile, "data_filter"):   # Python 3.10.12, 3.11.4 and later
                    tar.extractall(staging, filter="data")
                else:
                    tar.extractall(staging, members=_safe_members(tar, archive))
        except getattr(tarfile, "FilterError", ()) as err:   # the "data" filter refused a member
            raise _unsafe_member(archive, err.tarinfo.name) from err
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise DataFormatError(
                f"{archive} could not be extracted ({type(err).__name__}: {err}); the archive is truncated or "
                "corrupt, and nothing was kept from it. Download or copy it again (its size and checksum should "
                "match the original), then retry."
            ) from err
        if _find_image_folder(staging) is None and not (staging / "cifar-10-batches-py").is_dir():
            raise DataFormatError(
                f"{archive} holds neither train/<class>/ + test/<class>/ folders nor torchvision's "
                "cifar-10-batches-py/. Check that it is a CIFAR-10 archive."
            )
        clashes = [e.name for e in staging.iterdir() if (root / e.name).exists()]
        if clashes:
            raise DataFormatError(f"extracting {archive} would overwrite {clashes} in {root}; move them away first")
        for entry in staging.iterdir():
            os.replace(entry, root / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


#: Seconds the download may go without an answer (to connect, or between two reads) before it gives up.
#: Proxies and captive portals accept a connection and then say nothing: without a limit the download
#: would wait for ever.
DOWNLOAD_TIMEOUT = 60.0

#: Where the official archive is published (for a copy made on another machine and carried over).
OFFICIAL_PAGE = "https://www.cs.toronto.edu/~kriz/cifar-10.html"


def _download(root: Path) -> tuple[CIFAR10Data | None, str]:
    """torchvision's download of the official archive into ``root``, giving up after ``DOWNLOAD_TIMEOUT``
    seconds without an answer. Returns the data, or None and the reason it failed; a partly downloaded
    archive is removed, so the next run does not mistake it for data."""
    from torchvision.datasets import CIFAR10

    partial = root / CIFAR10.filename
    existed = partial.exists()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)   # urllib (under torchvision) opens its sockets with it
    start = time.perf_counter()
    try:
        return _from_torchvision(root, download=True), ""
    except (OSError, RuntimeError) as err:  # URLError, SSL errors, timeouts, bad checksums
        if not existed:
            partial.unlink(missing_ok=True)
        timed_out = isinstance(err, TimeoutError) or isinstance(getattr(err, "reason", None), TimeoutError)
        if timed_out:
            return None, (f"the download from {CIFAR10.url} got no answer for {DOWNLOAD_TIMEOUT:g} s and was given up "
                          f"after {time.perf_counter() - start:.0f} s (a proxy or captive portal?)")
        certificates = "CERTIFICATE_VERIFY_FAILED" in str(err) and _python_org_on_macos()
        hint = ("; this Python from python.org has no certificates until you run 'Install Certificates.command' "
                f"in /Applications/Python {sys.version_info.major}.{sys.version_info.minor}/ (never turn the "
                "certificate check off instead)") if certificates else ""
        return None, f"the download from {CIFAR10.url} failed ({type(err).__name__}: {err}){hint}"
    finally:
        socket.setdefaulttimeout(previous)


def _python_org_on_macos() -> bool:
    """Whether this is python.org's installer build on macOS, the one Python that ships without a certificate
    store (and with 'Install Certificates.command' to add one). Homebrew's, conda's and Apple's own Pythons use
    the system's or certifi's certificates, so the hint would send their users to a script they do not have.
    ``base_prefix``, not ``prefix``: a virtual environment made from the framework build still uses its ssl."""
    return sys.platform == "darwin" and sys.base_prefix.startswith("/Library/Frameworks/Python.framework/")


def _from_torchvision(root: Path, download: bool) -> CIFAR10Data:
    from torchvision.datasets import CIFAR10

    train = CIFAR10(str(root), train=True, download=download)
    test = CIFAR10(str(root), train=False, download=download)
    return CIFAR10Data(
        np.ascontiguousarray(train.data), np.asarray(train.targets, dtype=np.int64),
        np.ascontiguousarray(test.data), np.asarray(test.targets, dtype=np.int64),
        tuple(train.classes), source=f"torchvision archive in {root}",
    )


def _from_image_folder(folder: Path, classes: tuple[str, ...] = CLASSES, custom: bool = False) -> CIFAR10Data:
    train_classes = _class_dirs(folder / "train", classes, custom)
    test_classes = _class_dirs(folder / "test", classes, custom)
    xtr, ytr = _decode_split(train_classes)
    xte, yte = _decode_split(test_classes)
    for split, labels in (("train", ytr), ("test", yte)):
        _check_counts(folder / split, labels, classes)
    return CIFAR10Data(xtr, ytr, xte, yte, classes, source=f"image folder {folder}")


#: Images per class in CIFAR-10's splits.
CIFAR10_PER_CLASS = {"train": 5000, "test": 1000}


def _check_counts(split: Path, labels: np.ndarray, classes: Sequence[str]) -> None:
    """Warn, naming them, when some classes hold fewer images than the others: the mark of a copy cut
    short (an interrupted copy or extraction). A folder with CIFAR-10's classes, all of one size but not
    CIFAR-10's 5,000 / 1,000 per class, is allowed with a warning that states the count."""
    counts = np.bincount(labels, minlength=len(classes))
    full = int(counts.max())
    short = {c: int(n) for c, n in zip(classes, counts) if n < full}
    expected = CIFAR10_PER_CLASS.get(split.name)
    if not short and tuple(classes) == CLASSES and expected and full != expected:
        warnings.warn(f"{split}: {full:,} images per class, not CIFAR-10's {expected:,}; fine for a subset or "
                      "another data set, otherwise copy the data again", stacklevel=4)
    if short:
        warnings.warn(
            f"{split}: " + ", ".join(f"{c} has {n}" for c, n in short.items()) + f" images, the other classes "
            f"{full}" + (f" (CIFAR-10: {expected:,} per class)" if expected else "") + ". A copy cut short? "
            "Copy or extract the data again if that is not what you meant.", stacklevel=4)


def _folders_in(split: Path) -> dict[str, Path]:
    """The candidate class folders of one split, by name: its sub-folders but hidden ones (what the loader
    reads, and what ``doctor`` checks)."""
    return {p.name: p for p in split.iterdir() if p.is_dir() and not _hidden(p)}


def _class_dirs(split: Path, classes: tuple[str, ...] = CLASSES, custom: bool = False) -> list[Path]:
    """The class folders of one split, in the order of ``classes`` (label i is ``classes[i]``)."""
    dirs = _folders_in(split)
    if not dirs:
        raise DataFormatError(f"{split} has no class sub-folders; expected {split}/<class>/*.png|jpg")
    missing = [c for c in classes if c not in dirs]
    unexpected = sorted(set(dirs) - set(classes))
    if missing or unexpected:
        what = "the classes you named" if custom else f"CIFAR-10's {len(CLASSES)} classes"
        fix = ("Rename or remove the folders, or name the classes you have with load_cifar10(..., classes=(...))"
               if not custom else "Rename the folders, or pass the classes the folders really hold")
        raise DataFormatError(
            f"{split} does not hold {what}: "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected {unexpected}" if unexpected else "")
            + f". Expected exactly: {', '.join(classes)}. The labels follow the folder names, so one wrong "
            f"name would shift every label after it. {fix}."
        )
    return [dirs[c] for c in classes]


def _eight_bit(im):
    """A 16-bit grayscale image (PIL modes ``I;16*``, or ``I`` as 16-bit PNGs open with some Pillows) scaled
    to 8 bits (mode ``L``): ``convert("RGB")`` would clip every value above 255 to white instead. An ``I``
    image whose values fit in 8 bits, and every other image, as it is."""
    from PIL import Image

    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    values = np.asarray(im, dtype=np.float64)
    if im.mode == "I" and values.max(initial=0) <= 255:
        return Image.fromarray(values.astype(np.uint8), "L")
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")


def _decode_split(class_dirs: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    images, labels, skipped, converted = [], [], [], []
    for label, d in enumerate(class_dirs):
        files = sorted(f for f in d.iterdir() if f.is_file())
        count = 0
        for f in files:
            if f.suffix.lower() not in IMAGE_EXTENSIONS or _hidden(f):
                skipped.append(f.name)
                continue
            try:
                with Image.open(f) as im:
                    if im.mode != "RGB" or im.size != (IMAGE_SIZE, IMAGE_SIZE):
                        converted.append(f"{f.name} ({im.mode}, {im.size[0]}x{im.size[1]})")
                        im = _eight_bit(im).convert("RGB")
                        if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                            im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                    images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as err:
                raise DataFormatError(
                    f"{f} is not a readable image ({err}). Delete or replace it, then load again."
                ) from err
            labels.append(label)
            count += 1
        if count == 0:
            raise DataFormatError(
                f"class folder {d} holds no images ({IMAGE_EXTENSIONS}); every class needs images. "
                "Copy its images again, or extract the archive again."
            )
    if skipped:
        apple = " (._ files are macOS metadata: COPYFILE_DISABLE=1 tar ... makes an archive without them)" \
            if any(name.startswith("._") for name in skipped) else ""
        warnings.warn(f"skipped {len(skipped)} non-image file(s), e.g. {skipped[:3]}{apple}", stacklevel=3)
    if converted:
        warnings.warn(
            f"converted {len(converted)} image(s) to 32x32 RGB, e.g. {converted[:3]}", stacklevel=3
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _fingerprint(root: Path) -> str | None:
    """A digest of what a cache in ``root`` is built from: every file of the image folder (relative path,
    size, modification time) or of torchvision's ``cifar-10-batches-py/``; None when neither is there.
    Stat-ing the files is far cheaper than decoding them again."""
    folder = _find_image_folder(root)
    batches = root / "cifar-10-batches-py"
    tops = [folder / "train", folder / "test"] if folder is not None else [batches] if batches.is_dir() else []
    if not tops:
        return None
    entries = []
    pending = [(top, os.path.relpath(top, root)) for top in tops]
    while pending:  # os.scandir: one stat per file, no path arithmetic per file
        folder_path, rel = pending.pop()
        with os.scandir(folder_path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, f"{rel}/{entry.name}"))
                else:
                    st = entry.stat()
                    entries.append(f"{rel}/{entry.name}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _write_cache(root: Path, data: CIFAR10Data) -> CIFAR10Data:
    path = root / CACHE_NAME
    # a name of its own per process: two notebooks decoding at once never write the same temporary file
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")
    try:
        np.savez(tmp, version=_CACHE_VERSION, source=data.source, classes=np.array(data.classes),
                 fingerprint=np.array(_fingerprint(root) or ""),
                 xtr=data.train_images, ytr=data.train_labels, xte=data.test_images, yte=data.test_labels)
        os.replace(tmp, path)
    except OSError as err:  # a read-only data folder is fine: we just decode again next time
        warnings.warn(f"could not write the decoded cache {path}: {err}", stacklevel=2)
        tmp.unlink(missing_ok=True)
    return data


def _read_cache(path: Path) -> tuple[CIFAR10Data | None, str | None]:
    """The cached data and the fingerprint it was built from; ``(None, None)`` for an old or unreadable
    cache (empty, truncated, damaged: any failure warns once and the images are decoded again)."""
    try:
        with open(path, "rb") as f, np.load(f) as z:  # our own handle: closed even when np.load fails
            if int(z["version"]) != _CACHE_VERSION:
                return None, None
            data = CIFAR10Data(z["xtr"], z["ytr"], z["xte"], z["yte"], tuple(str(c) for c in z["classes"]),
                               source=str(z["source"]) + " (decoded cache)")
            return data, str(z["fingerprint"]) or None
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, ValueError, ...: all mean "decode again"
        warnings.warn(f"ignoring unreadable cache {path} ({type(err).__name__}); decoding the images again",
                      stacklevel=3)
        return None, None


#: CIFAR-10's per-channel statistics on the official PNG-equivalent data (training split, 0–1 scale), as
#: widely quoted; the kit computes its own from whatever copy it reads (``CIFAR10Data.mean``/``.std``).
OFFICIAL_MEAN = (0.4914, 0.4822, 0.4465)
OFFICIAL_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------
# Augmentation (albumentations 2.x)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentConfig:
    """The course's augmentation, in one place. Probabilities are per image; their defaults are the
    course recipe's (``config.TrainConfig``: a test keeps the two equal)."""

    flip_p: float = 0.5
    shift: float = 0.1          # translate up to ±10% of the side (±3 px)
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 15.0        # degrees
    affine_p: float = 0.5
    hole: int = 16              # one 16x16 hole (Cutout, DeVries & Taylor 2017)
    dropout_p: float = 0.25     # the course recipe's (and the fast one's; the long recipe's is 0.1)
    crop: int | None = None     # then a random crop x crop window (progressive resizing); None: whole images


def hole_fill(mean: Sequence[float]) -> tuple[float, float, float]:
    """The coarse-dropout hole's colour: the dataset mean (per channel, 0–1 scale) on the 0–255 pixel scale
    the transform sees, since it runs before Normalize, rounded to whole grey levels as uint8 images hold
    them (0.4465 → 114; a cast to uint8 would truncate 113.9 to 113). After Normalize the hole is 0 to
    within half a grey level. Notebooks and exercises that draw the hole by hand take it from here."""
    if len(mean) != 3 or any(not 0.0 <= m <= 1.0 for m in mean):
        raise ValueError(f"hole_fill takes the mean per RGB channel on the 0-1 scale (CIFAR10Data.mean), got {mean}")
    return tuple(float(round(255.0 * m)) for m in mean)


def train_transforms(mean: Sequence[float], std: Sequence[float], config: AugmentConfig = AugmentConfig(),
                     to_tensor: bool = True, normalize: bool = True):
    """The course's train pipeline: HorizontalFlip, shift-scale-rotate (``Affine``), CoarseDropout with one
    16×16 hole filled with the dataset mean, a random ``config.crop``-sided crop when one is set
    (progressive resizing), Normalize (and ``ToTensorV2`` unless ``to_tensor=False``).

    ``mean`` and ``std`` are per channel on the 0–1 scale (``CIFAR10Data.mean``/``.std``). The hole is
    filled *before* Normalize, so its fill is the mean on the 0–255 pixel scale (``hole_fill``: rounded to
    whole grey levels, as uint8 images hold): after Normalize it becomes 0 to within half a grey level, the
    value the network sees on average.

    ``normalize=False`` stops after CoarseDropout and returns uint8 HWC images: the loaders do that and
    normalise whole batches at once (``BatchNormalize``), a fraction of the per-image cost.
    """
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2

    _check_stats(mean, std)
    fill = hole_fill(mean)
    steps = [
        A.HorizontalFlip(p=config.flip_p),
        # keep_ratio=False (albumentations' default, said here): each axis scales by its own factor, so the
        # aspect ratio jitters too; 1.x's ShiftScaleRotate drew one (keep_ratio=True). Every recorded run
        # trained with this.
        A.Affine(translate_percent=(-config.shift, config.shift), scale=config.scale, keep_ratio=False,
                 rotate=(-config.rotate, config.rotate), border_mode=cv2.BORDER_REFLECT_101, p=config.affine_p),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(config.hole, config.hole),
                        hole_width_range=(config.hole, config.hole), fill=fill, p=config.dropout_p),
    ]
    if config.crop is not None:  # last, so the hole and the affine border are drawn on the whole image
        steps.append(A.RandomCrop(height=config.crop, width=config.crop))
    if normalize:
        steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    if to_tensor and normalize:
        steps.append(ToTensorV2())
    return A.Compose(steps)


def test_transforms(mean: Sequence[float], std: Sequence[float], to_tensor: bool = True):
    """The test pipeline: Normalize only (and ``ToTensorV2``)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    _check_stats(mean, std)
    steps = [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0)]
    if to_tensor:
        steps.append(ToTensorV2())
    return A.Compose(steps)


test_transforms.__test__ = False  # not a pytest test, despite its name


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need one value per RGB channel, got mean={mean}, std={std}")
    if any(m > 1.0 for m in mean) or any(s <= 0 or s > 1.0 for s in std):
        raise ValueError(
            f"mean and std must be on the 0-1 scale (e.g. CIFAR10Data.mean), got mean={mean}, std={std}"
        )


class AlbumentationsDataset(Dataset):
    """Images in memory (``(N, H, W, 3) uint8``) and labels, passed through an albumentations pipeline."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return image, int(self.labels[i])


class BatchNormalize:
    """A loader's ``collate_fn``: stack a batch of uint8 HWC images (as the augmentation leaves them),
    scale to 0–1 and normalise per channel, in one vectorised step for the whole batch.

    The result is a float tensor shaped ``(N, 3, H, W)`` whose memory is laid out channels-last (it is
    the NHWC batch, permuted): the layout the course's models train in, with no copy to get there.
    Done here once per batch, not per image in the augmentation pipeline.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        _check_stats(mean, std)
        self.mean = torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, 3, 1, 1)

    def __call__(self, batch):
        labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
        return self.normalize(np.stack([b[0] for b in batch])), labels

    def normalize(self, images: np.ndarray) -> torch.Tensor:
        """An ``(N, H, W, 3) uint8`` array, without labels: the same scaling and normalisation."""
        return unit_tensor(images).sub_(self.mean).div_(self.std)


def unit_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3) uint8`` → ``(N, 3, H, W)`` float in [0, 1]: the NHWC batch permuted, so its memory
    stays channels-last."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def _seed_worker(worker_id: int) -> None:
    """Give each loader worker its own, reproducible augmentation stream."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    np.random.seed(seed)
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def eval_loader(images: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float],
                batch_size: int = 1000, num_workers: int = 0, device: torch.device | str = "cpu") -> DataLoader:
    """An unshuffled, unaugmented loader (validation or test): normalisation only, done per batch."""
    from .runtime import loader_settings

    how = loader_settings(device, num_workers)   # workers only on CUDA (see loader_settings)
    return DataLoader(AlbumentationsDataset(images, labels), batch_size=batch_size, shuffle=False,
                      num_workers=how["eval_workers"], pin_memory=how["pin_memory"],
                      persistent_workers=how["persistent_eval"],
                      collate_fn=BatchNormalize(mean, std))


def make_loaders(data: CIFAR10Data, batch_size: int = 128, num_workers: int = 0, augment: bool = True,
                 seed: int = 0, device: torch.device | str = "cpu", test_batch_size: int = 1000,
                 augment_config: AugmentConfig = AugmentConfig(), drop_last: bool = False
                 ) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders. The train loader shuffles with its own seeded generator and augments
    each image with albumentations; both normalise whole batches (``BatchNormalize``).
    ``val_loader(data)`` gives the validation split's loader."""
    train = make_train_loader(data, batch_size, num_workers, augment, seed, device, augment_config, drop_last)
    test = eval_loader(data.test_images, data.test_labels, data.mean, data.std, test_batch_size, num_workers, device)
    return train, test


def check_crop_size(crop: int | None, side: int, setting: str = "crop", whole: str = "None", note: str = "") -> None:
    """A clear error when a random ``crop``-sided crop does not fit ``side``-pixel images; ``None`` (whole
    images) always fits. ``setting`` and ``whole`` name the setting and its whole-image value as the caller
    spells them (``AugmentConfig(crop=None)`` here, ``--set crop_size=none`` on the command line); ``note``
    is added after the sizes."""
    if crop is not None and not 1 <= crop <= side:
        raise ValueError(f"{setting}={crop} does not fit these {side}x{side} images{note}: choose a crop size "
                         f"from 1 to {side}, or {setting}={whole} for whole images")


def make_train_loader(data: CIFAR10Data, batch_size: int = 128, num_workers: int = 0, augment: bool = True,
                      seed: int = 0, device: torch.device | str = "cpu", augment_config: AugmentConfig = AugmentConfig(),
                      drop_last: bool = False) -> DataLoader:
    """The training loader of ``make_loaders``: shuffled by its own seeded generator, each image augmented
    (``augment_config``), whole batches normalised at once."""
    if augment:
        check_crop_size(augment_config.crop, data.train_images.shape[1], setting="crop", whole="None")
    train_tf = train_transforms(data.mean, data.std, augment_config, to_tensor=False, normalize=False) if augment else None
    if train_tf is not None:
        train_tf.set_random_seed(seed)
    train_ds = AlbumentationsDataset(data.train_images, data.train_labels, train_tf)
    from .runtime import loader_settings

    how = loader_settings(device, num_workers)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=generator,
                      worker_init_fn=_seed_worker if num_workers > 0 else None, num_workers=num_workers,
                      pin_memory=how["pin_memory"], persistent_workers=how["persistent_train"],
                      collate_fn=BatchNormalize(data.mean, data.std))


def _stop_kept_workers(loader: DataLoader) -> None:
    """Shut down the workers a ``persistent_workers`` loader keeps between passes (its iterator, which
    DataLoader keeps in ``_iterator``); iterating it again starts new ones."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None


class PhasedLoader:
    """A training loader that changes with the epoch: ``phases`` is a list of ``(first_epoch, loader)``
    pairs (0-based, the first at epoch 0, in increasing order), and each loader serves from its first
    epoch until the next phase's. ``set_epoch(epoch)`` (``training.fit`` calls it before each epoch, as
    for a ``DistributedSampler``) picks the phase; iterating, ``len``, ``dataset`` and ``generator`` then
    refer to that phase's loader. All phases have the same images and batch size, so the same number of
    steps per epoch (OneCycle counts on it).

    ``experiment.prepare`` builds up to three: random crops (progressive resizing, ``TrainConfig.crop_size``:
    smaller images, so cheaper steps, then whole images, so the network ends on the resolution it is tested
    at; Touvron et al. 2019, "Fixing the train-test resolution discrepancy", arXiv:1906.06423; Tan & Le
    2021, EfficientNetV2's progressive learning, arXiv:2104.00298), whole augmented images, and a clean
    tail (``TrainConfig.clean_fraction``).
    """

    def __init__(self, phases: "Sequence[tuple[int, DataLoader]]") -> None:
        phases = list(phases)
        starts = [start for start, _ in phases]
        if not phases or starts[0] != 0:
            raise ValueError(f"the first phase must start at epoch 0, got phases starting at {starts or 'none'}")
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"phases must start at increasing epochs, got {starts}")
        lengths = [len(loader) for _, loader in phases]
        if len(set(lengths)) > 1:
            raise ValueError(f"the phases need the same number of batches per epoch, got {lengths}: build every "
                             "phase's loader from the same images with the same batch_size and drop_last")
        self.phases = phases
        self.current = phases[0][1]

    def set_epoch(self, epoch: int) -> None:
        """Serve ``epoch`` from its phase's loader. The phases before it have ended: their kept workers
        (``persistent_workers``, on CUDA and MPS) are stopped, so that a run does not hold every phase's
        workers to its end (8 per phase on a CUDA machine)."""
        if epoch < 0:
            raise ValueError(f"epochs count from 0, got {epoch}")
        self.current = [loader for start, loader in self.phases if start <= epoch][-1]
        for start, loader in self.phases:
            if start < epoch and loader is not self.current:
                _stop_kept_workers(loader)

    def __iter__(self):
        return iter(self.current)

    def __len__(self) -> int:
        return len(self.current)

    @property
    def dataset(self):
        return self.current.dataset

    @property
    def generator(self):
        return self.current.generator

    @property
    def drop_last(self) -> bool:
        return self.current.drop_last


def val_loader(data: CIFAR10Data, batch_size: int = 1000, num_workers: int = 0,
               device: torch.device | str = "cpu") -> DataLoader | None:
    """The validation split's loader (normalised with the training split's statistics), or None
    when ``data`` has no validation split (see ``CIFAR10Data.with_validation``)."""
    if not data.has_validation:
        return None
    return eval_loader(data.val_images, data.val_labels, data.mean, data.std, batch_size, num_workers, device)


def load_for_environment(root: str | os.PathLike | None = None) -> CIFAR10Data:
    """``load_cifar10(root)``, cut to the smoke-mode stratified subset when ``COURSE_SMOKE=1``."""
    from .config import SMOKE_TEST_PER_CLASS, SMOKE_TRAIN_PER_CLASS
    from .runtime import is_smoke

    data = load_cifar10(root)
    return data.subset(SMOKE_TRAIN_PER_CLASS, SMOKE_TEST_PER_CLASS) if is_smoke() else data


def torchvision_train_transforms(mean: Sequence[float], std: Sequence[float], config: AugmentConfig = AugmentConfig()):
    """The same train pipeline with ``torchvision.transforms.v2``, for comparison: flip,
    ``RandomAffine`` (applied with ``affine_p``), ``RandomErasing`` of exactly one 16×16 square filled
    with the mean (scale = 256/1024, ratio 1), ``Normalize``. Takes an HWC uint8 array, returns a CHW tensor.

    Four differences remain, all in the affine: the uncovered border is reflected in albumentations and
    filled with the mean here (v2 has no reflect mode for affine); v2 draws one scale for both axes where
    the course's ``Affine`` draws one per axis; v2 shifts by whole pixels only; and v2 resamples with the
    nearest pixel (``RandomAffine``'s default, kept) where albumentations interpolates bilinearly. The
    flip is the same, and so is the hole: both keep it inside the image and place it uniformly.
    """
    from torchvision.transforms import v2

    _check_stats(mean, std)
    area = config.hole * config.hole / (IMAGE_SIZE * IMAGE_SIZE)
    return v2.Compose([
        v2.ToImage(),
        v2.RandomHorizontalFlip(p=config.flip_p),
        v2.RandomApply([v2.RandomAffine(degrees=config.rotate, translate=(config.shift, config.shift),
                                        scale=config.scale, fill=[round(255 * m) for m in mean])], p=config.affine_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomErasing(p=config.dropout_p, scale=(area, area), ratio=(1.0, 1.0), value=list(mean)),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])
