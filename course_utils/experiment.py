"""One training run, end to end: data, model, fit, and a JSON run record. The CLI and the
full-training notebook both call ``run_training``, so they train the same way."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .checkpoint import CheckpointError, atomic_write_text
from .config import LEARNING_SETTINGS, TrainConfig, choose_recipe
from .data import (AugmentConfig, CIFAR10Data, PhasedLoader, check_crop_size, load_cifar10, make_loaders,
                   make_train_loader, val_loader)
from .models import count_parameters, get_model
from .runtime import (cuda_device_context, device_name, get_device, is_smoke, loader_settings, loader_workers,
                      mixed_precision, precision_name, runs_dir, seed_everything, shown_path, use_cudnn_autotuner)
from .training import History, evaluate, fit, layout_name, predict


def _finished(history: History, config: TrainConfig) -> bool:
    return not history.interrupted and len(history) == config.epochs


class RunNotFinished(RuntimeError):
    """The test set asked for after a run that stopped early: it is read once, after the last epoch."""


@dataclass
class RunResult:
    model: torch.nn.Module
    history: History
    data: CIFAR10Data
    config: TrainConfig
    device: torch.device
    record: dict
    record_path: Path
    checkpoint: Path
    test_loader: torch.utils.data.DataLoader
    _predictions: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        """Whether every epoch of the run trained (not stopped early)."""
        return _finished(self.history, self.config)

    def require_finished(self) -> None:
        """Raise ``RunNotFinished`` unless the run finished: whatever reads the test set after training
        (``predictions``, for per-class accuracy and the confusion matrix) calls it first, so a run stopped
        early is continued, not scored."""
        if not self.finished:
            raise RunNotFinished(
                f"the run stopped after epoch {len(self.history)} of {self.config.epochs}, and the test set is read "
                "only after the last one: set RESUME = True in the training cell and run it again (or python -m "
                "course_utils train --resume) to finish the run, then run this cell")

    def predictions(self):
        """This finished run's test-set predictions and true labels (NumPy arrays), with the run's layout and
        precision, on its card; computed once per result and kept. The cells that draw per-class accuracy,
        the confusion matrix and the mistakes each ask for them, so after the training cell runs again
        (a new result) none of them can draw the previous model's predictions."""
        self.require_finished()
        if self._predictions is None:
            with cuda_device_context(self.device):
                self._predictions = predict(self.model, self.test_loader, self.device,
                                            channels_last=self.config.channels_last, amp=self.config.amp)
        return self._predictions


def _no_nan(value):
    """NaN (an accuracy not measured yet) as null: strict JSON readers reject a bare NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


#: What a run's name does not spell out but its weights depend on. Two runs that differ in any of these
#: get different checkpoint files (a short fingerprint in the name), so ``train --lr 0.05`` never
#: continues or replaces the ``--lr 0.1`` run. Left out: what the name already says (epochs, batch,
#: seed, subset) and what does not change what is learned (workers, layout, compile, test_each_epoch).
_NAMELESS = LEARNING_SETTINGS + ("amp",)


#: Settings added after runs were published, with the value that does nothing: left out of the fingerprint at
#: that value, so the names of the runs recorded before them still hold.
_LATER = {"clean_fraction": 0.0, "ema_decay": 0.0}


#: The recipes whose runs get plain names: the course recipe and the fast one (told apart by the batch in
#: the name). The long recipe is the course recipe with more epochs and a smaller coarse-dropout hole, a
#: setting no name spells out, so its runs carry the hole's fingerprint like any other changed setting:
#: were it plain too, a long run and a course run of the same length would share one checkpoint file.
_PLAIN_RECIPES = ("course", "fast")


def _fingerprint(config: TrainConfig) -> str:
    """"" for the settings of the course or the fast recipe (``_PLAIN_RECIPES``) at that recipe's batch size,
    else 6 hex digits of the others (a setting in ``_LATER`` only when it is not at its no-op value). The
    batch size is in the name already; matching it here keeps the fast recipe at the course batch, or the
    course recipe at the fast batch, from taking the other recipe's plain name."""
    def settings(c: TrainConfig) -> dict:
        return {k: getattr(c, k) for k in _NAMELESS if k not in _LATER or getattr(c, k) != _LATER[k]}

    mine = settings(config)
    plain = (TrainConfig.recipe(r) for r in _PLAIN_RECIPES)
    if any(config.batch_size == r.batch_size and mine == settings(r) for r in plain):
        return ""
    return "-x" + hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:6]


def size_name(config: TrainConfig) -> str:
    """The data size in a run's name: ``full``, or ``sub{N}`` for N training images per class (``--subset``),
    then ``-t{M}`` where the test and validation splits are cut to M per class (smoke mode), so a smoke run
    and a ``--subset`` run of the same length never share a checkpoint or an ablation folder."""
    size = "full" if config.train_per_class is None else f"sub{config.train_per_class}"
    return size if config.test_per_class is None else f"{size}-t{config.test_per_class}"


def checkpoint_path(model_name: str, config: TrainConfig, folder: Path | None = None) -> Path:
    """Where a run's checkpoint lives (``folder``, default ``runs/``): one file per (model, size
    (``size_name``), epochs, batch size, seed, other settings). The batch size is named only when it is not the course recipe's,
    so ``cifarnet-full-e15-s1.pt`` is a course run and ``cifarnet-full-e15-b512-s1.pt`` a fast one; a
    run whose other settings are not the course or fast recipe's at that recipe's batch size (another
    learning rate, optimizer, augmentation, a batch size of neither; the long recipe's smaller hole too)
    ends in a fingerprint of them: ``cifarnet-full-e15-s1-x3fa9c2.pt``."""
    size = size_name(config)
    batch = "" if config.batch_size == TrainConfig.batch_size else f"-b{config.batch_size}"
    name = f"{model_name}-{size}-e{config.epochs}{batch}-s{config.seed}{_fingerprint(config)}.pt"
    return (folder or runs_dir()) / name


def holds_out_validation(data: CIFAR10Data, config: TrainConfig) -> bool:
    """Whether a run of ``config`` on ``data`` holds the validation split out of ``data``'s training
    images: it asks for one and ``data`` does not hold one already."""
    return config.validation and not data.has_validation


def split(data: CIFAR10Data, config: TrainConfig) -> CIFAR10Data:
    """The images a run of ``config`` uses: the validation split held out (if ``config.validation``),
    then the stratified subset it asks for."""
    if holds_out_validation(data, config):
        data = data.with_validation()
    if config.train_per_class is not None or config.test_per_class is not None:
        data = data.subset(config.train_per_class, config.test_per_class, seed=config.seed)
    return data


def check_crop_fits(data: CIFAR10Data, config: TrainConfig) -> None:
    """A clear error when ``config.crop_size`` does not fit ``data``'s images, even when no epoch would
    use it (``crop_fraction`` 0): a run records its settings, and one it could never have used is a
    mistake to name, not to file away."""
    unused = "" if config.crop_epochs else f" (and no epoch would use it: crop_fraction is {config.crop_fraction:g})"
    check_crop_size(config.crop_size, data.train_images.shape[1], setting="crop_size", whole="none", note=unused)


def prepare(data: CIFAR10Data, config: TrainConfig, device: torch.device, drop_last: bool | None = None):
    """The data side of a run, the same for ``run_training`` and the ablation: hold out the validation
    split (if ``config.validation``), take the stratified subset the config asks for, and build the
    training, test and validation loaders. Returns ``(data, train_loader, test_loader, val_loader)``.

    ``drop_last`` (each epoch's last, smaller training batch left out): by default on exactly when
    torch.compile trains on CUDA; a resumed run passes what its checkpoint's run did (``train``)."""
    data = split(data, config)
    check_crop_fits(data, config)
    workers = loader_workers(device, config.num_workers)
    augment = AugmentConfig(flip_p=config.flip_p, affine_p=config.affine_p, dropout_p=config.dropout_p)
    # compiled training keeps one batch shape: the last, smaller batch of an epoch is dropped (a few
    # images, a different one each epoch) rather than compiled a second time
    compiling = (config.compile and device.type == "cuda") if drop_last is None else drop_last
    use_cudnn_autotuner(device)  # on CUDA: the fastest kernels per input shape, unless determinism was asked for
    train_loader, test_loader = make_loaders(data, config.batch_size, workers, seed=config.seed, device=device,
                                             augment_config=augment, drop_last=compiling)
    phases = [(0, train_loader)]
    if config.crop_epochs:  # progressive resizing: random crops first, whole images for the rest
        crops = make_train_loader(data, config.batch_size, workers, seed=config.seed, device=device,
                                  augment_config=replace(augment, crop=config.crop_size), drop_last=compiling)
        phases = [(0, crops), (config.crop_epochs, train_loader)]
    if config.clean_epochs:  # the clean tail: whole images, flips only, for the last epochs
        clean = make_train_loader(data, config.batch_size, workers, seed=config.seed, device=device,
                                  augment_config=replace(augment, affine_p=0.0, dropout_p=0.0), drop_last=compiling)
        start = config.epochs - config.clean_epochs
        phases = [(s, loader) for s, loader in phases if s < start] + [(start, clean)]
    train_loader = PhasedLoader(phases) if len(phases) > 1 else phases[0][1]
    valid = val_loader(data, num_workers=workers, device=device) if config.validation else None
    return data, train_loader, test_loader, valid


@dataclass
class Trained:
    """What ``train`` returns: the trained model, its history, the data as trained on (validation split
    held out, subset taken), the test loader (for predictions after training) and the epochs the
    resumed checkpoint held before this call (0 for a fresh run; all of them for a finished run read back)."""
    model: torch.nn.Module
    history: History
    data: CIFAR10Data
    test_loader: torch.utils.data.DataLoader
    epochs_before: int = 0


def train(model, data: CIFAR10Data, config: TrainConfig, device: torch.device, checkpoint: Path | None = None,
          resume: bool = False, progress: bool = False, log=print) -> Trained:
    """The one way the kit trains a model: ``prepare`` the data, seed, then ``fit``. ``model`` is a module
    (a learner's design, already built) or a function that builds one after seeding, so that its initial
    weights follow ``config.seed``. With ``resume=True`` an existing ``checkpoint`` is continued.
    ``run_training``, the ablation and ``assignment.train_design`` all train through here."""
    from .checkpoint import load_checkpoint

    resume_from = checkpoint if resume and checkpoint is not None and checkpoint.exists() else None
    try:   # read once here for what train needs; fit reads it again to restore the run
        saved = load_checkpoint(resume_from) if resume_from is not None else {}
    except CheckpointError:
        saved = {}   # fit says what is wrong with it
    prepared = prepare(data, config, device)
    if saved:
        prepared = _as_the_saved_run_batched(prepared, data, config, device, saved, resume_from, log)
    data, train_loader, test_loader, valid = prepared
    seed_everything(config.seed)
    if not isinstance(model, torch.nn.Module):
        model = model()
    history = fit(model, train_loader, test_loader, config, device, checkpoint=checkpoint, resume=resume_from,
                  progress=progress, log=log, val_loader=valid)
    try:
        before = int(saved.get("epoch", 0))
    except (TypeError, ValueError):
        before = 0
    return Trained(model, history, data, test_loader, before)


def _as_the_saved_run_batched(prepared: tuple, data: CIFAR10Data, config: TrainConfig, device: torch.device,
                              saved_state: dict, resume_from: Path, log) -> tuple:
    """``prepared`` (``prepare``'s loaders), or loaders that keep or drop each epoch's last partial batch
    as the checkpoint's run did, when only that makes their steps per epoch the saved run's: a run begun
    with torch.compile on CUDA (last batch dropped) continues on a CPU, or the other way round, on the
    learning-rate schedule it was laid out for. Any other difference is left for ``fit`` to name.
    ``saved_state`` is the checkpoint at ``resume_from``, as ``load_checkpoint`` reads it."""
    from .training import saved_steps_per_epoch

    train_loader = prepared[1]
    try:
        saved = saved_steps_per_epoch(saved_state, config.epochs)
    except (AttributeError, TypeError, ValueError):
        return prepared   # fit says what is wrong with it
    if not saved or saved == len(train_loader):
        return prepared
    other = prepare(data, config, device, drop_last=not train_loader.drop_last)
    if len(other[1]) != saved:
        return prepared
    if log:
        how = "left out" if other[1].drop_last else "kept"
        log(f"note: {shown_path(resume_from)} was trained with each epoch's last, smaller batch {how} ({saved} steps "
            f"per epoch); this run does the same, so that its learning-rate schedule holds")
    return other


#: What a run record says of the call that trained the run: a later call that only reads the finished
#: run back (resume, perhaps on another machine) keeps these as they were recorded
TRAINED_BY = ("device", "device_name", "threads", "precision", "layout", "loader", "versions",
              "wall_seconds_this_call", "finished_at")


def _as_recorded(record: dict, path: Path) -> dict:
    """``record`` of a finished run this call only read back, with ``TRAINED_BY`` taken from the record
    already at ``path`` and the time of the reading added as ``read_back_at``: the device, threads,
    precision and versions stay those of the machine that trained it (None where that record did not
    say). Only a record of the same finished run counts (its epochs and final test accuracy those read
    back, not interrupted): without one, this call's own fields stand."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return record
    same = (isinstance(old, dict) and not old.get("interrupted") and old.get("epochs") == record["epochs"]
            and old.get("final_test_acc") == record["final_test_acc"])
    if not same:
        return record
    return {**record, **{k: old.get(k) for k in TRAINED_BY}, "read_back_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _keep_aside(ckpt: Path, log) -> "Path | None":
    """Before a fresh run overwrites ``ckpt``, move the run it holds and its record aside, and say so: a
    fresh run is the default, and the run it replaces is kept, not lost. An interrupted run (fewer epochs
    than it planned) becomes ``<name>.interrupted-e<epoch>.pt`` / ``.json``; a finished one
    ``<name>.finished-<its file's time>.pt`` / ``.json`` (running the same command again trains again,
    beside it). An unreadable file is left for the run to replace."""
    from .checkpoint import load_checkpoint

    if not ckpt.is_file():
        return None
    try:
        state = load_checkpoint(ckpt)
        done, planned = int(state["epoch"]), int(state["config"]["epochs"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
    finished = done >= planned
    tag = (time.strftime("finished-%Y%m%d-%H%M%S", time.localtime(ckpt.stat().st_mtime)) if finished
           else f"interrupted-e{done}")
    kept = ckpt.with_name(f"{ckpt.stem}.{tag}{ckpt.suffix}")
    n = 1
    while kept.exists():   # the same second, or the same epoch, twice: keep both
        n += 1
        kept = ckpt.with_name(f"{ckpt.stem}.{tag}-{n}{ckpt.suffix}")
    record = ckpt.with_suffix(".json")
    moved = record.is_file()
    # os.replace, not Path.replace: the same call on every Python (3.10's pathlib bound its own at import)
    if moved:   # the record first: if either move fails, the run stays whole where it was
        os.replace(record, kept.with_suffix(".json"))
    try:
        os.replace(ckpt, kept)
    except BaseException:
        if moved:
            os.replace(kept.with_suffix(".json"), record)
        raise
    if log:
        if finished:
            test = (state.get("history", {}).get("test_acc") or [None])[-1]
            score = f", final test accuracy {test:.2f}%" if isinstance(test, (int, float)) else ""
            log(f"kept the finished run's checkpoint ({done} epochs{score}) as {shown_path(kept)}; this call "
                "trains anew (resume would have read it back: --resume, or resume=True)")
        else:
            log(f"kept the interrupted run's checkpoint (epoch {done} of {planned}) as {shown_path(kept)}; this call "
                "starts anew (resume would have continued it: --resume, or resume=True)")
    return kept


def run_training(model_name: str = "cifarnet", config: TrainConfig | None = None, device: str | None = None,
                 data: CIFAR10Data | None = None, data_dir: str | None = None, resume: bool = False,
                 progress: bool = True, log=print, recipe: str | None = None,
                 checkpoint_dir: Path | None = None) -> RunResult:
    """Train ``model_name`` with ``config`` (default: the recipe for this environment) and write a run
    record to ``runs/``. With ``resume=True`` an existing checkpoint of the same run is continued
    (a finished one simply returns its history)."""
    config = config or TrainConfig.for_environment()
    dev = get_device(device)
    if data is None:
        data = load_cifar10(data_dir)
    check_crop_fits(data, config)   # before a checkpoint is moved aside: a mistake costs nothing
    workers = loader_workers(dev, config.num_workers)
    ckpt = checkpoint_path(model_name, config, checkpoint_dir)
    if resume and not ckpt.exists():
        others = sorted(p.name for p in ckpt.parent.glob(f"{model_name}-*.pt")) if ckpt.parent.is_dir() else []
        listing = (f" Checkpoints of {model_name} there: {', '.join(others[:5])}{', ...' if len(others) > 5 else ''}."
                   if others else "")
        raise CheckpointError(
            f"resume: no checkpoint of this run at {shown_path(ckpt)} (its name carries the model, the epochs, the "
            f"batch, the seed and every changed setting: other settings are another run).{listing} Resume with "
            "the settings of the run to continue, or start anew without resume.")
    if not resume:
        _keep_aside(ckpt, log)
    t0 = time.perf_counter()
    run = train(lambda: get_model(model_name), data, config, dev, checkpoint=ckpt, resume=resume,
                progress=progress, log=log)
    wall = time.perf_counter() - t0
    model, history, data, test_loader = run.model, run.history, run.data, run.test_loader
    finished = _finished(history, config)
    # flip averaging is reported beside the final test accuracy, so only for a finished run
    tta = None
    if finished:   # on cuda:N, as fit does: a read-back run starts the loader's pin-memory thread here
        with cuda_device_context(dev):
            tta = evaluate(model, test_loader, dev, amp=config.amp, channels_last=config.channels_last, tta=True)[1]
    record = {
        "model": model_name,
        "model_class": type(model).__name__,
        "recipe": choose_recipe(recipe, str(dev)) if recipe else None,
        "parameters": count_parameters(model),
        "device": str(dev),
        "device_name": device_name(dev),
        "threads": torch.get_num_threads(),
        "precision": precision_name(mixed_precision(dev, config.amp)),   # the last training call's (see ran_on)
        # the memory layout the last training call used (as precision): config.channels_last asks, the device
        # decides (never channels-last on MPS), by the function fit decides with
        "layout": layout_name(dev, config.channels_last),
        "ran_on": history.ran_on(),   # each stretch of epochs on one device in one precision
        "loader": loader_settings(dev, workers),
        "epochs": len(history),
        "epochs_planned": config.epochs,
        "final_val_acc": history.final_val_acc,
        "final_test_acc": history.final_test_acc,
        "final_test_acc_flip_tta": tta,
        # the weight average (config.ema_decay), scored beside the trained weights; None without one
        "final_ema_val_acc": history.final_ema_val_acc if config.ema_decay else None,
        "final_ema_test_acc": history.final_ema_test_acc if config.ema_decay else None,
        "train_seconds": history.total_seconds,
        "wall_seconds_this_call": wall,
        "interrupted": history.interrupted,
        "smoke": is_smoke(),
        "data": {"source": data.source, "train": int(len(data.train_labels)), "test": int(len(data.test_labels))},
        "config": config.to_dict(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "history": history.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": str(ckpt),
    }
    record_path = ckpt.with_suffix(".json")
    if resume and finished and len(history) == run.epochs_before:   # read back: the record keeps who trained it
        record = _as_recorded(record, record_path)
    record["record_path"] = str(record_path)
    atomic_write_text(json.dumps(_no_nan(record), indent=2, allow_nan=False), record_path)
    return RunResult(model, history, data, config, dev, record, record_path, ckpt, test_loader)
