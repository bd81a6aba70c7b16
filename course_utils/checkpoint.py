"""Checkpoints that survive a crash: written atomically, read with ``weights_only=True``.

A write goes to a temporary file in the same folder, is flushed to disk (fsync), then renamed over
the old checkpoint: a save that dies midway leaves the last good checkpoint untouched.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

FORMAT = "course_utils.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, of another format, or of another model."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file, fsync, rename)."""
    return _atomic_write(path, "wb", lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically, as ``atomic_save`` does."""
    return _atomic_write(path, "wb", lambda f: f.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, as ``atomic_save`` does: a reader never sees half
    a file, and an interrupted write leaves the old file (or none) in place."""
    return _atomic_write(path, "w", lambda f: f.write(text))


def _atomic_write(path: str | os.PathLike, mode: str, write: Callable[[Any], Any]) -> Path:
    """``write`` the open temporary file, fsync it, rename it over ``path``, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        try:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint is an ordinary file
        except OSError:
            pass   # a drive without permissions (FAT, exFAT, some network shares): the file is written all the same
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **state: Any) -> Path:
    """Save the model's weights and any extra state (optimizer, scheduler, history, epoch...)."""
    payload = {"format": FORMAT, "model_class": type(model).__name__, "model": model.state_dict(), **state}
    return atomic_save(payload, path)


def _load_failure(err: Exception) -> str:
    """torch.load's error in a few words: its type and first sentence. An unpickling error's own advice
    (load again with weights_only=False) is left out: that would run whatever code the file holds."""
    if isinstance(err, pickle.UnpicklingError):
        return type(err).__name__
    first = str(err).split(". ")[0].split("\n")[0]
    return f"{type(err).__name__}: {first[:150]}"


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint (``weights_only=True``: no code runs) and, if ``model`` is given, load its weights.

    Raises ``CheckpointError`` with a clear reason for a missing, corrupt or mismatched file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; check the path, or start without resume")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors all mean the same thing here
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({_load_failure(err)}). It may be truncated, from another "
            "program, or hold objects other than tensors and plain values, which weights_only=True refuses to "
            "unpickle so that no code in a file runs; delete it to start afresh."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a course_utils checkpoint (format {FORMAT!r} expected)")
    if not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{path} holds no weights (no 'model' state dict): it is damaged or was not written "
                              "by course_utils; delete it to start afresh")
    if model is not None:
        load_weights(payload, model, path)
    return payload


def load_weights(payload: dict, model: nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint's weights (``load_checkpoint(path)``'s result) into ``model``, after checking that
    they fit it: ``CheckpointError`` naming the class or the tensors that differ, before anything is loaded."""
    path = Path(path)
    saved = payload.get("model_class")
    if saved != type(model).__name__:
        raise CheckpointError(
            f"{path} holds a {saved}, but the model given is a {type(model).__name__}; "
            f"build a {saved} to load it, or start without resume"
        )
    current = model.state_dict()
    weights = payload["model"]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(current[k].shape)}"
        for k, v in weights.items() if k in current and current[k].shape != v.shape
    ]
    missing = sorted(set(current) - set(weights))
    unexpected = sorted(set(weights) - set(current))
    if mismatched or missing or unexpected:
        detail = "; ".join(mismatched[:3] + [f"missing {missing[:3]}"] * bool(missing)
                           + [f"unexpected {unexpected[:3]}"] * bool(unexpected))
        raise CheckpointError(
            f"{path} does not fit this {type(model).__name__} (another width or version?): {detail}. "
            "Build the model it was saved from (its run record names the model and config), or start without resume"
        )
    model.load_state_dict(weights)
