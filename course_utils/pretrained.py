"""Shipped weights: the recorded CifarNet, committed beside its card, loaded with its hash checked.

``load_pretrained("cifarnet")`` returns the trained network in eval mode; ``card("cifarnet")`` says how
it was trained (recipe, seed, epochs, device, minutes, validation and test accuracy, torch version)
and holds the SHA-256 of the weights file. The file is read with ``weights_only=True`` (no code runs)
and only after its hash matches the card, so a truncated, altered or swapped file is refused with a
message instead of giving a network that silently scores less.

``export_pretrained(run_record)`` writes both files from a finished run (``python -m course_utils
export``). Notebooks that need a trained network for pictures (attention maps, mistakes, the
confusion matrix) load it instead of training one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_write_bytes, atomic_write_text, load_checkpoint
from .runtime import REPO_ROOT

#: Where shipped weights live: inside the package, so an installed kit has them too.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class PretrainedError(FileNotFoundError):
    """Shipped weights that are missing, altered, or do not fit their model."""


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _paths(name: str, folder: Path | None) -> tuple[Path, Path]:
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    return folder / f"{name}.pt", folder / f"{name}.json"


def available(folder: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped networks (those with a card)."""
    folder = Path(folder) if folder is not None else WEIGHTS_DIR
    return sorted(p.stem for p in folder.glob("*.json"))


def _shipped_name(name: str, folder: str | os.PathLike | None) -> str:
    """``name`` as the shipped card spells it: like ``get_model``, names are case-insensitive
    (``"CifarNet"`` is ``cifarnet``), whatever the file system's own rule."""
    shipped = available(folder)
    return name if name in shipped else next((s for s in shipped if s.lower() == name.lower()), name)


#: What a card must hold: what ``load_pretrained`` checks and builds with, and what ``doctor`` reports.
CARD_FIELDS = ("model", "file", "sha256", "final_test_acc", "train_minutes", "device")


def card(name: str = "cifarnet", folder: str | os.PathLike | None = None) -> dict:
    """The card of a shipped network: how it was trained and what it scored."""
    _, card_path = _paths(_shipped_name(name, folder), folder)
    if not card_path.is_file():
        names = available(folder)
        raise PretrainedError(
            f"no shipped weights named {name!r} (no {card_path.name} in {card_path.parent}); "
            f"available: {', '.join(names) or 'none'}. Reinstall the kit, or train one with "
            "python -m course_utils train and export it with python -m course_utils export."
        )
    try:
        info = json.loads(card_path.read_text())
        missing = [k for k in CARD_FIELDS if k not in info]
    except (ValueError, TypeError) as err:   # not JSON (truncated, merge markers), or not an object
        missing, info = [f"readable JSON ({err})"], None
    if missing:
        raise PretrainedError(
            f"{card_path} is damaged: it lacks {', '.join(missing)}. Restore it from the repository "
            "(git checkout -- course_utils/weights) or reinstall the kit.")
    return info


def load_pretrained(name: str = "cifarnet", folder: str | os.PathLike | None = None,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """The shipped, trained ``name`` network in eval mode on ``map_location`` (``"cuda"`` puts it on the
    GPU), its file's SHA-256 checked against the card."""
    from .models import get_model

    name = _shipped_name(name, folder)
    info = card(name, folder)
    weights, _ = _paths(name, folder)
    if not weights.is_file():
        raise PretrainedError(
            f"{weights} is missing, though its card {weights.with_suffix('.json').name} is there. "
            "Restore it from the repository (git checkout -- course_utils/weights) or reinstall the kit."
        )
    digest = sha256(weights)
    if digest != info["sha256"]:
        raise PretrainedError(
            f"{weights} does not match its card: SHA-256 {digest[:16]}… instead of {info['sha256'][:16]}…. "
            "The file was changed or damaged: restore it (git checkout -- course_utils/weights) or reinstall the kit."
        )
    model = get_model(info["model"])
    load_checkpoint(weights, model, map_location=map_location)
    return model.to(map_location).eval()   # on the device asked for, ready for its inputs


#: A full CIFAR-10 run trains on 45,000 images (the validation split held out) or 50,000, and is tested on 10,000.
FULL_TRAIN_IMAGES, FULL_TEST_IMAGES = 45_000, 10_000
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _require_finished_full_run(record: dict, what: str) -> None:
    """A clear error unless ``record`` describes a finished, full-size run (what ``what`` needs)."""
    if record.get("interrupted") or record.get("epochs") != record.get("epochs_planned"):
        raise ValueError(f"this run did not finish; {what} a run whose every planned epoch completed")
    if record.get("smoke"):
        raise ValueError(f"this is a smoke-mode run (a tiny subset, a few epochs); {what} a full run")
    config = record.get("config", {})
    if config.get("train_per_class") is not None or config.get("test_per_class") is not None:
        raise ValueError(f"this run trained on a subset (--subset); {what} a full-size run")
    data = record.get("data") or {}
    if data.get("train") is not None and (data["train"] < FULL_TRAIN_IMAGES or data.get("test", 0) < FULL_TEST_IMAGES):
        raise ValueError(f"this run trained on {data['train']:,} images and was tested on {data.get('test', 0):,} "
                         f"({data.get('source', 'its data')}), not on CIFAR-10's {FULL_TRAIN_IMAGES:,} or more and "
                         f"{FULL_TEST_IMAGES:,}; {what} a full CIFAR-10 run")


def export_pretrained(record: dict | str | os.PathLike, name: str | None = None,
                      folder: str | os.PathLike | None = None, recipe: str | None = None,
                      force: bool = False) -> tuple[Path, Path]:
    """Write the weights of a finished run (its JSON run record, or the record's dict) and their card.

    Only the weights go in (no optimizer, no history), so the file stays under 1 MB for CifarNet.
    ``recipe`` names the recipe for a record written before records named it. Weights already shipped
    under ``name`` are replaced only with ``force=True`` (the CLI's ``--force``).
    """
    from .models import get_model

    if not isinstance(record, dict):
        path = Path(record)
        if not path.is_file():
            raise ValueError(f"no run record at {path}; train first (python -m course_utils train), then pass its .json")
        try:
            loaded = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a run record ({err}); pass the .json that train printed "
                             "(\"run record: ...\")") from None
        if not isinstance(loaded, dict) or "model" not in loaded:
            raise ValueError(f"{path} is not a run record (no model named in it); pass the .json that train printed "
                             "(\"run record: ...\")")
        record = {**loaded, "record_path": str(path)}
        if path.with_suffix(".pt").is_file():  # the checkpoint beside the record, wherever runs/ was copied to
            record["checkpoint"] = str(path.with_suffix(".pt"))
    _require_finished_full_run(record, "export")
    name = name or record["model"]
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"the name to ship under must be a plain name (letters, digits, _ and -), got {name!r}")
    weights, card_path = _paths(name, folder)
    if weights.exists() and not force:
        raise ValueError(f"{weights} already holds shipped weights; pass force=True (--force) to "
                         "replace them, or --name to ship these under another name")
    model = get_model(record["model"])
    state = load_checkpoint(record["checkpoint"], model)
    saved_test = state.get("history", {}).get("test_acc", [None])[-1]
    if state.get("epoch") != record["epochs"] or saved_test != record.get("final_test_acc"):
        raise ValueError(f"{record['checkpoint']} is not the run this record describes (epoch {state.get('epoch')}, "
                         f"final test accuracy {saved_test}); was it overwritten by a later run of the same name? "
                         "(A fresh run keeps the one it replaces as <name>.finished-<time>.pt, with its record.)")
    shipped = io.BytesIO()   # the file's bytes first: its card is made from them before either is written
    torch.save({"format": state["format"], "model_class": state["model_class"], "model": model.state_dict()}, shipped)
    payload = shipped.getvalue()
    keep = ("model", "parameters", "recipe", "device", "device_name", "threads", "precision", "layout", "ran_on", "epochs",
            "train_seconds",
            "final_val_acc", "final_test_acc", "final_test_acc_flip_tta", "config", "data", "finished_at")
    info = {k: record.get(k) for k in keep}
    info["data"] = _without_machine_paths(info["data"])
    info["recipe"] = info.get("recipe") or recipe
    if info["recipe"] == "auto":  # name what auto chose on the run's device
        info["recipe"] = "fast" if str(record["device"]).startswith("cuda") else "course"  # as choose_recipe does
    info.update(torch=record.get("versions", {}).get("torch"), train_minutes=round(record["train_seconds"] / 60, 1),
                run_record=Path(record["record_path"]).name if record.get("record_path") else None,
                file=weights.name, bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    # the weights, then their card; weights replaced (--force) but left without their card would fail their
    # hash check, so a card that cannot be written puts the weights they replaced back. Those are kept aside
    # by a rename, which needs no space: a full disk, the likely reason the card failed, cannot stop it
    before = weights.with_name(f".{weights.name}.before-export")
    had = weights.is_file()
    if had:
        os.replace(weights, before)
    try:
        atomic_write_bytes(payload, weights)
        atomic_write_text(json.dumps(info, indent=2) + "\n", card_path)
    except BaseException:
        if had:
            os.replace(before, weights)
        else:
            weights.unlink(missing_ok=True)
        raise
    if had:
        before.unlink()
    return weights, card_path


#: An absolute path inside a string (POSIX, home-relative or a Windows drive), spaces in its folders' names
#: included (``/home/Ada Lovelace/data``), up to the `` (`` of a remark after it or the end of the string.
_ABSOLUTE = re.compile(r"(?<![\w.])(?:~|[A-Za-z]:)?[/\\][^()]*?(?=\s*\(|\s*$)")


def _without_machine_paths(data: dict) -> dict:
    """``data`` (a record's ``"data"`` entry) with the folders of every absolute path in its ``source``
    replaced by ``…`` (``image folder /home/ada/cifar10`` → ``image folder …/cifar10``): a published file
    names no folder of the machine that made it."""
    if not isinstance(data, dict) or not isinstance(data.get("source"), str):
        return data
    def last_part(match: re.Match) -> str:
        return "…/" + re.split(r"[/\\]", match.group(0).rstrip("/\\"))[-1]

    return {**data, "source": _ABSOLUTE.sub(last_part, data["source"])}


def publish_record(record: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """Copy a finished full-size run's JSON record into the repository (default ``figures/runs/``), so
    that the README's results table cites a file every clone has (``runs/`` is local and git-ignored).

    The copy is the record itself, with the paths of this machine reduced to ``runs/<file>``: a
    published record names no absolute path. Refuses an unfinished, smoke-mode or subset run."""
    path = Path(record)
    if not path.is_file():
        raise ValueError(f"no run record at {path}; train first (python -m course_utils train), then pass its .json")
    data = json.loads(path.read_text())
    _require_finished_full_run(data, "publish")
    for key in ("checkpoint", "record_path"):
        if data.get(key):
            data[key] = f"runs/{Path(data[key]).name}"
    if "data" in data:
        data["data"] = _without_machine_paths(data["data"])
    out = Path(folder) if folder is not None else REPO_ROOT / "figures" / "runs"
    return atomic_write_text(json.dumps(data, indent=2) + "\n", out / path.name)
