"""Training: ``train_one_epoch``, ``evaluate``, ``fit``. The device is always passed in.

OneCycle schedule: Smith & Topin, "Super-Convergence", 2017, https://arxiv.org/abs/1708.07120.
Label smoothing: Szegedy et al., "Rethinking the Inception Architecture", 2015.
Weight averaging (``TrainConfig.ema_decay``): an exponential moving average of the weights, Polyak &
Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992; as used for image classifiers in
Tan & Le, "EfficientNet", 2019 (https://arxiv.org/abs/1905.11946), and timm's ``ModelEmaV2``.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import itertools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .config import LEARNING_SETTINGS, TrainConfig
from .runtime import (channels_last_on, cuda_device_context, device_name, mixed_precision, needs_grad_scaler, precision_name, shown_path,
                      synchronize)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch record of a run. Losses are averages per image; accuracies are percentages."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)   # empty when the run has no validation split
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)  # the training pass alone (no evaluation)
    # the weight average's scores (TrainConfig.ema_decay > 0), beside the trained weights': empty without one
    ema_val_loss: list[float] = field(default_factory=list)
    ema_val_acc: list[float] = field(default_factory=list)
    ema_test_acc: list[float | None] = field(default_factory=list)  # read when test_acc is, else None
    # where each epoch ran (the device's name: "NVIDIA A100-SXM4-40GB", "AMD EPYC (AVX512)", as
    # runtime.device_name gives it) and in what precision ("fp32", "bf16"): a resumed run may change both;
    # None for the epochs of a checkpoint written before these were kept
    device: list[str | None] = field(default_factory=list)
    precision: list[str | None] = field(default_factory=list)
    interrupted: bool = False
    compile_seconds: float | None = None  # the first compiled step, compiling included (inside epoch 1's seconds)

    def append(self, **row: float) -> None:
        for key, value in row.items():
            getattr(self, key).append(value)

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def best_test_acc(self) -> float:
        return max((a for a in self.test_acc if a is not None), default=float("nan"))

    @staticmethod
    def _final(values: list) -> float:
        """The value after the last epoch; NaN where there is none (an empty list, or a split not read then)."""
        return values[-1] if values and values[-1] is not None else float("nan")

    @property
    def final_test_acc(self) -> float:
        """The test accuracy after the last epoch: the number a run reports (never the best epoch's,
        which would be a choice made on the test set)."""
        return self._final(self.test_acc)

    @property
    def final_val_acc(self) -> float:
        return self._final(self.val_acc)

    @property
    def final_ema_val_acc(self) -> float:
        """The weight average's validation accuracy after the last epoch (NaN without a weight average)."""
        return self._final(self.ema_val_acc)

    @property
    def final_ema_test_acc(self) -> float:
        return self._final(self.ema_test_acc)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    def images_per_second(self, train_images: int) -> float:
        """Training throughput: images seen per second of training passes (evaluation left out)."""
        seconds = sum(self.train_seconds)
        return train_images * len(self.train_seconds) / seconds if seconds else float("nan")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "History":
        names = {f.name for f in fields(cls)}
        history = cls(**{k: v for k, v in values.items() if k in names})
        for key in ("device", "precision"):
            setattr(history, key, history._per_epoch(key))
        return history

    def _per_epoch(self, key: str) -> list:
        """``key``'s list, one entry per epoch: a checkpoint written before the list was kept began it
        later, so the epochs before it are None; it never runs past the last epoch."""
        known = list(getattr(self, key))[-len(self.epoch):] if self.epoch else []
        return [None] * (len(self.epoch) - len(known)) + known

    def ran_on(self) -> list[dict]:
        """The run's stretches of epochs on one device in one precision, in order: one entry for a run
        that never changed, more for one resumed elsewhere (``device``/``precision`` None: not recorded)."""
        spans: list[dict] = []
        for epoch, device, precision in zip(self.epoch, self._per_epoch("device"), self._per_epoch("precision")):
            where = {"device": device, "precision": precision}
            if spans and {k: spans[-1][k] for k in where} == where:
                spans[-1]["last_epoch"] = epoch
            else:
                spans.append({"first_epoch": epoch, "last_epoch": epoch, **where})
        return spans

    def __str__(self) -> str:
        if not self.epoch:
            return "History(empty)"
        val = f"val acc {self.final_val_acc:.2f}%, " if self.val_acc else ""
        return (f"History({len(self)} epochs, final {val}test acc {self.final_test_acc:.2f}%, "
                f"{self.total_seconds:.0f} s)")


# --------------------------------------------------------------------------------------------
# One epoch, and evaluation
# --------------------------------------------------------------------------------------------

def autocast_for(device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None):
    """Autocast: ``dtype`` if given (on any device type, the CPU included), else what
    ``runtime.mixed_precision`` picks for the device (bf16 on CUDA from capability 8.0, fp16 on older
    cards, nothing on CPU and MPS); a no-op when disabled or when the choice is fp32."""
    if not enabled:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = mixed_precision(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                  loss_fn: Callable, device: torch.device, amp: bool = True,
                  scaler: torch.amp.GradScaler | None = None, dtype: torch.dtype | None = None):
    """One optimisation step (forward, backward, update; loss scaling when a scaler is given).
    Returns the loss and the logits, detached."""
    with autocast_for(device, amp, dtype):
        logits = model(x)
        loss = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach(), logits.detach()


def train_on_batches(model: nn.Module, optimizer: torch.optim.Optimizer, next_batch: Callable[[int], tuple],
                     loss_fn: Callable, steps: int, device: torch.device | str = "cpu", scheduler=None,
                     log: Callable[[str], None] | None = None, log_every: int = 100, label: str = "loss") -> list[float]:
    """The shortest training loop, for the few-minute experiments of notebooks 06 and 10 (``fit`` runs
    whole epochs of a loader): ``steps`` calls of ``training_step`` on ``next_batch(step)``, which returns
    ``(inputs, targets)`` on the device, stepping ``scheduler`` (if any) after each. Full precision.
    Returns every step's loss."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    model.train()
    losses = []
    for step in range(steps):
        x, y = next_batch(step)
        loss, _ = training_step(model, x, y, optimizer, loss_fn, torch.device(device), amp=False)
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if log and (step + 1) % log_every == 0:
            log(f"step {step + 1}/{steps}: {label} {sum(losses[-log_every:]) / log_every:.5g}")
    return losses


def non_blocking(device: torch.device) -> bool:
    """Asynchronous host-to-device copies only on CUDA, where the loaders pin memory for them. From
    pageable memory to MPS they have been reported to corrupt data silently (Lightning turns them off
    there), and on a CPU there is nothing to copy."""
    return torch.device(device).type == "cuda"


def layout_name(device: torch.device | str, channels_last: bool) -> str:
    """The memory layout ``fit`` trains in on ``device`` when ``channels_last`` is asked or not:
    ``"channels_last"`` or ``"contiguous"`` (``runtime.channels_last_on`` decides, as in ``fit``)."""
    return "channels_last" if channels_last_on(device, channels_last) else "contiguous"


def _layout(x: torch.Tensor, device: torch.device | str, channels_last: bool) -> torch.Tensor:
    """A batch in the layout the model runs in on ``device``: channels-last when asked, except on MPS
    (``runtime.channels_last_on``), where it is made contiguous: the loaders' batches are channels-last in
    memory (a permuted view of HWC images) whatever was asked, and MPS convolutions pass that on."""
    if torch.device(device).type == "mps":
        return x.contiguous()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    return _layout(x.to(device, non_blocking=non_blocking(device)), device, channels_last)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


def _step_schedule(scheduler, scaler: torch.amp.GradScaler | None) -> None:
    """``scheduler.step()``. With a GradScaler, a first step it skipped (gradients at inf: the first steps at
    its starting scale of 65,536 often are) still advances the schedule, as PyTorch's AMP examples do; torch
    then warns, on that first step only, that ``lr_scheduler.step()`` came before ``optimizer.step()``:
    harmless here (one value of the schedule goes to a skipped step), so silenced, on that step only (a
    warnings filter on every step would make every once-only warning print again on each)."""
    if scaler is None or getattr(scheduler, "_step_count", 0) != 1:   # torch checks the order on step 1 only
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`")
        scheduler.step()


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: torch.device, scheduler=None, loss_fn: Callable | None = None,
                    amp: bool = True, channels_last: bool = False, scaler: torch.amp.GradScaler | None = None,
                    progress: bool = True, desc: str = "train",
                    after_step: Callable[[], None] | None = None) -> tuple[float, float]:
    """One pass over ``loader``. Returns (mean loss per image, accuracy %). ``after_step`` is called after
    every optimizer step (``fit`` updates its weight average there).

    The reported loss is plain cross-entropy of the training batches' logits, whatever ``loss_fn``
    the gradient comes from (label smoothing, say), so that training and validation/test losses sit
    on one scale. The scheduler, if given, steps once per batch (OneCycle). Loss and accuracy are
    accumulated on the device; the bar's numbers are refreshed every 20 batches to avoid a host sync
    per step. Raises ``TrainingDivergedError`` when the epoch's loss is not finite.

    With a GradScaler (fp16), a batch whose logits overflow (inf or NaN) is a step the scaler skips, not
    a diverged run: it is left out of the epoch's loss and accuracy, with a warning that counts such
    batches; only when they are most of the epoch's batches is the run diverged.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    skipped = torch.zeros((), device=device, dtype=torch.long)  # fp16 batches that overflowed, and their images
    skipped_images = torch.zeros((), device=device, dtype=torch.long)
    seen = batches = 0
    bar = _progress(loader, progress, desc=desc)
    for step, (x, y) in enumerate(bar):
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=non_blocking(device))
        if isinstance(model, CompileGuard) and model.state == "untried":  # compiling: guard the whole step
            _, logits = model.first_step(lambda: training_step(model, x, y, optimizer, loss_fn, device, amp, scaler),
                                         finish=lambda: synchronize(device))
        else:
            _, logits = training_step(model, x, y, optimizer, loss_fn, device, amp, scaler)
        if scheduler is not None:
            _step_schedule(scheduler, scaler)
        if after_step is not None:
            after_step()
        batch_loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        batch_correct = (logits.argmax(1) == y).sum()
        batches += 1
        if scaler is not None:  # on the device, no host sync: an overflowed batch adds only to its counts
            overflowed = ~torch.isfinite(batch_loss)
            skipped += overflowed
            skipped_images += overflowed * y.shape[0]
            batch_loss = torch.where(overflowed, torch.zeros_like(batch_loss), batch_loss)
            batch_correct = torch.where(overflowed, torch.zeros_like(batch_correct), batch_correct)
        total_loss += batch_loss
        correct += batch_correct
        seen += y.shape[0]
        if progress and step % 20 == 0:
            scored = max(seen - skipped_images.item(), 1)
            bar.set_postfix(loss=f"{total_loss.item() / scored:.3f}", acc=f"{100 * correct.item() / scored:.1f}%")
    if seen == 0:
        raise ValueError("the training loader gave no batches: it holds fewer images than one batch (with its last "
                         "partial batch dropped); lower the batch size or train on more images")
    overflowed_batches = int(skipped.item())
    if overflowed_batches:
        what = (f"{overflowed_batches} of {batches} batches overflowed in fp16 (inf or NaN logits: an fp16 overflow, "
                f"or input data that is not finite)")
        fix = ("lower the learning rate (lr), or train without mixed precision (train --no-amp; "
               "TrainConfig(amp=False) in Python)")
        if 2 * overflowed_batches > batches:
            raise TrainingDivergedError(f"{what}: more than the GradScaler can skip; {fix}")
        # the scaler skips the weights' update, but the forward pass has already moved BatchNorm's running
        # statistics: once those are inf or NaN, every later evaluation is too
        if any(not torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point()):
            raise TrainingDivergedError(f"{what}, and the network's running statistics (BatchNorm's) are no longer "
                                        f"finite; {fix}")
        warnings.warn(f"{what}; the GradScaler skipped their steps and the epoch's loss and accuracy leave them out",
                      stacklevel=2)
        seen -= int(skipped_images.item())
    mean_loss = total_loss.item() / seen
    if not math.isfinite(mean_loss):
        raise TrainingDivergedError(
            f"the training loss became {mean_loss}; lower the learning rate (lr) or check the input data"
        )
    return mean_loss, 100.0 * correct.item() / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, loss_fn: Callable | None = None,
             amp: bool = True, channels_last: bool = False, progress: bool = False,
             tta: bool = False) -> tuple[float, float]:
    """Mean loss per image and accuracy % over ``loader``.

    ``tta=True`` averages the softmax of each image and its mirror image (test-time flip averaging,
    as in Krizhevsky et al. 2012); report it beside the plain number, never instead of it.

    The loss is summed per image and divided by the number of images (not by the number of
    batches, and never with the log-probabilities' sign lost: the course's original logs printed a
    negative test loss by feeding raw outputs to ``nll_loss``); a ``loss_fn`` of its own must sum
    too (``reduction="sum"``), or a ``ValueError`` says so.
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss(reduction="sum")
    if getattr(loss_fn, "reduction", "sum") != "sum":
        raise ValueError(f"evaluate sums the loss per image and divides by the images seen, so loss_fn must sum: "
                         f"pass nn.CrossEntropyLoss(reduction='sum'), not one with reduction={loss_fn.reduction!r}")
    model.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in _progress(loader, progress, desc="test"):
        x, y = _to_device(x, device, channels_last), y.to(device, non_blocking=non_blocking(device))
        with autocast_for(device, amp):
            logits = model(x)
            if tta:
                probs = (logits.float().softmax(1) + model(x.flip(3)).float().softmax(1)) / 2
                logits = probs.clamp_min(1e-12).log()
        total_loss += loss_fn(logits.float(), y)
        correct += (logits.argmax(1) == y).sum()
        seen += y.shape[0]
    return total_loss.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device, channels_last: bool = False,
            amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels for every example of ``loader``, as NumPy arrays."""
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        with autocast_for(device, amp):
            logits = model(_to_device(x, device, channels_last))
        preds.append(logits.argmax(1).cpu())
        labels.append(y)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------

def build_optimizer(model: nn.Module, config: TrainConfig, steps_per_epoch: int):
    """SGD (Nesterov) or Adam, with OneCycleLR over ``config.epochs * steps_per_epoch`` steps."""
    if config.optimizer == "sgd":
        # momentum=0 is plain SGD (PyTorch's Nesterov needs a momentum)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch
    if total < 3:  # a run of one or two steps has no cycle: keep the learning rate constant
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    # tiny runs (a few steps) need at least one full step of warm-up, or OneCycle divides by zero
    pct_start = min(0.5, max(config.pct_start, 1.5 / total))
    # SGD's momentum (if any) cycles inversely to the learning rate, 0.05 either side of config.momentum (Smith
    # 2018, arXiv:1803.09820; 0.95 -> 0.85 -> 0.95 for the default 0.9, OneCycleLR's own defaults);
    # rounded, so that 0.9 - 0.05 is exactly the 0.85 that runs recorded before this line trained with
    swing = dict(base_momentum=round(max(0.0, config.momentum - 0.05), 10),
                 max_momentum=round(min(1.0, config.momentum + 0.05), 10))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=total, pct_start=pct_start, div_factor=config.div_factor,
        final_div_factor=config.final_div_factor, cycle_momentum=config.optimizer == "sgd" and config.momentum > 0,
        **swing,
    )
    return optimizer, scheduler


def _reseed_epoch(loader: DataLoader, seed: int) -> None:
    """Make an epoch's shuffling, augmentation and dropout a function of (seed, epoch) alone,
    so that a resumed run continues exactly as an uninterrupted one would (on a CPU)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if isinstance(loader.generator, torch.Generator):
        loader.generator.manual_seed(seed)
    transform = getattr(loader.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def _epoch_line(h: History, i: int, epochs: int) -> str:
    val = f"val loss {h.val_loss[i]:.4f} acc {h.val_acc[i]:6.2f}%  " if h.val_acc else ""
    test = f"test loss {h.test_loss[i]:.4f} acc {h.test_acc[i]:6.2f}%  " if h.test_acc[i] is not None else ""
    ema = f"EMA val acc {h.ema_val_acc[i]:6.2f}%  " if h.ema_val_acc else ""
    if h.ema_test_acc and h.ema_test_acc[i] is not None:
        ema += f"EMA test acc {h.ema_test_acc[i]:6.2f}%  "
    return (f"epoch {h.epoch[i]:3d}/{epochs}  train loss {h.train_loss[i]:.4f} acc {h.train_acc[i]:6.2f}%  "
            f"{val}{test}{ema}lr {h.lr[i]:.4f}  {h.seconds[i]:5.1f} s")


class WeightAverage(nn.Module):
    """An exponential moving average of a network's weights (``weight_average`` builds one).

    ``module`` is the averaged copy; ``n_averaged`` counts the steps taken, as in PyTorch's
    ``torch.optim.swa_utils.AveragedModel``, whose state-dict layout this keeps (``module.*`` and
    ``n_averaged``: checkpoints written with it load here). Written out rather than used because
    ``AveragedModel`` copies its CPU step counter to the GPU at every step, a copy that waits for the GPU
    to finish its queued work; here the counter stays on the CPU and each step is one fused update per
    group of tensors (``torch._foreach_lerp_``), which queues no copy and reads nothing back."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))   # on the CPU: read every step

    def _apply(self, fn, recurse=True):   # .to(device) moves the averaged weights; the counter stays on the CPU
        n_averaged = self.n_averaged
        super()._apply(fn, recurse)
        self.n_averaged = n_averaged
        return self

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averaged = [p.detach() for p in self.module.parameters()]
        weights = [p.detach() for p in model.parameters()]
        mine = [b.detach() for b in self.module.buffers()]
        theirs = [b.detach() for b in model.buffers()]
        if (len(averaged), len(mine)) != (len(weights), len(theirs)):
            raise ValueError(f"the average holds {len(averaged)} parameter and {len(mine)} buffer tensors, the model "
                             f"{len(weights)} and {len(theirs)}: average the network it was built from")
        if averaged:
            if int(self.n_averaged) == 0:
                torch._foreach_copy_(averaged, weights)
            else:
                torch._foreach_lerp_(averaged, weights, 1.0 - self.decay)
        # the buffers (BatchNorm's statistics) follow the trained network's, as AveragedModel's do without
        # use_buffers; refresh_batchnorm measures them for the averaged weights before scoring
        if mine:
            torch._foreach_copy_(mine, theirs)
        self.n_averaged += 1


def _named(device: torch.device) -> str:
    """``runtime.device_name``, or the device's string where the device cannot be asked (a broken driver)."""
    try:
        return device_name(device)
    except Exception:  # noqa: BLE001 - a name is a label: training goes on without it
        return str(device)


def weight_average(model: nn.Module, decay: float) -> WeightAverage | None:
    """An exponential moving average of ``model``'s weights, or None when ``decay`` is 0: after every step
    ``average = decay · average + (1 − decay) · weights``, so it weighs about the last ``1 / (1 − decay)``
    steps (Polyak & Juditsky 1992); the first step copies the weights. ``update_parameters(model)`` takes a
    step; ``.module`` is the averaged network. Its BatchNorm statistics are not averaged: an average of the
    statistics of weights that kept moving describes none of them, least of all early in a run, so
    ``refresh_batchnorm`` measures them for the averaged weights before it is scored, as SWA does
    (Izmailov et al. 2018, arXiv:1803.05407)."""
    if not decay:
        return None
    return WeightAverage(model, decay)


#: How many training batches ``refresh_batchnorm`` measures BatchNorm's statistics on (5,120 images at batch 256).
BN_REFRESH_BATCHES = 20


def refresh_batchnorm(model: nn.Module, loader, device: torch.device, batches: int = BN_REFRESH_BATCHES,
                      channels_last: bool = False) -> None:
    """Measure every BatchNorm layer's running mean and variance afresh, as the plain average over the first
    ``batches`` batches of ``loader`` (training mode, no gradients: ``torch.optim.swa_utils.update_bn``), and
    leave ``model`` in eval mode."""
    from torch.optim.swa_utils import update_bn

    update_bn((_to_device(x, device, channels_last) for x, _ in itertools.islice(loader, batches)), model)
    model.eval()


def _first_line(err: BaseException) -> str:
    """An error's first non-empty line, at most 200 characters: compile errors run to pages."""
    return ([line for line in str(err).strip().splitlines() if line.strip()] or [""])[0][:200]


class CompileGuard(nn.Module):
    """A compiled model whose first training step (forward, backward and update: ``first_step``) runs
    inside a guard: if compiling fails there (an old GPU that Triton does not support, a missing C
    compiler, an unsupported Python), it says so once,
    in one line naming the cause and ``--no-compile``, and runs the eager model from then on, so the
    run goes on instead of crashing at its first step. Later errors are real errors and are raised.

    The eager model is the only registered submodule: ``train()``/``eval()`` reach it, and the compiled
    function (built from the same module) shares its parameters.
    """

    def __init__(self, model: nn.Module, compiled_fn: Callable, log: Callable[[str], None] | None = print) -> None:
        super().__init__()
        self.module = model
        object.__setattr__(self, "_compiled", compiled_fn)  # not a submodule: no second copy of the weights
        self._log, self.state = log, "untried"  # untried -> trying (the first step) -> compiled | eager
        self.first_call_seconds: float | None = None  # how long the first step took, compiling included

    def forward(self, *args, **kwargs):
        if self.state == "eager":
            return self.module(*args, **kwargs)
        if self.state == "untried":  # called on its own, not through first_step: guard this call alone
            return self.first_step(lambda: self(*args, **kwargs))
        return self._compiled(*args, **kwargs)  # "trying" (inside first_step) or "compiled"

    def first_step(self, step: Callable[[], Any], finish: Callable[[], None] | None = None) -> Any:
        """Run ``step`` (the first training step: forward, backward and update, which call this module)
        through the compiled function, guarded and timed as a whole: Inductor compiles the backward graph
        at the first ``backward()``, after the forward has returned, so a guard around the forward alone
        would neither time nor catch it. ``finish`` (a device synchronisation) ends the timing. On any
        failure the guard turns to the eager model, says why, and runs ``step`` again, eagerly:
        ``training_step`` zeroes the gradients before its backward and updates the weights only after
        it, so a step that failed in the forward or the backward left the weights as they were."""
        start = time.perf_counter()
        self.state = "trying"
        try:
            out = step()
            if finish is not None:
                finish()
        except Exception as err:  # noqa: BLE001 - any compile failure: fall back once, and say why
            self.state = "eager"
            if self._log:
                root = err  # dynamo wraps the backend's error (BackendCompilerFailed): name the one underneath
                while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None and inner is not root:
                    root = inner
                cause = _first_line(root)
                kind = type(err).__name__ + (f" from {type(root).__name__}" if root is not err else "")
                self._log(f"torch.compile failed at the first step ({kind}: {cause}); "
                          "training uncompiled from here (--no-compile skips compiling)")
            return step()
        self.state = "compiled"
        self.first_call_seconds = time.perf_counter() - start
        return out


#: Triton, and so Inductor's GPU kernels, need compute capability 7.0 or newer (Volta): on older cards (a P100,
#: 6.0, on Kaggle, with a PyTorch built for it) a compiled run fails at its first step, after minutes of tracing.
#: (Recent wheels carry no code for them at all: ``runtime.cuda_build_lacks_card``.)
TRITON_MIN_CAPABILITY = (7, 0)


def gpu_too_old_to_compile(device: torch.device | str) -> "tuple[int, int] | None":
    """The CUDA ``device``'s compute capability if it is below ``TRITON_MIN_CAPABILITY``, else None (also
    where it cannot be asked: then the compile guard finds out at the first step)."""
    try:
        capability = tuple(torch.cuda.get_device_capability(torch.device(device)))
    except Exception:  # noqa: BLE001 - no CUDA runtime to ask (a simulated device in tests, a broken driver)
        return None
    return capability if capability < TRITON_MIN_CAPABILITY else None


def compile_unavailable(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot train on the CUDA ``device`` here, in words a note can carry, or None
    where nothing known stands in its way: Triton (Inductor's GPU kernels) is not installed, or the card
    is older than Triton supports. One answer for ``compiled`` and for ``doctor``."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton)"
    old = gpu_too_old_to_compile(device)
    if old is not None:
        need = ".".join(map(str, TRITON_MIN_CAPABILITY))
        return f"Triton needs compute capability {need} or newer, this GPU is {old[0]}.{old[1]}"
    return None


def compiled(model: nn.Module, device: torch.device, log: Callable[[str], None] | None = print) -> nn.Module:
    """``torch.compile(model)`` where it pays: on CUDA with Triton installed, behind a ``CompileGuard``
    that falls back to the eager model if the first compiled step fails. On a CPU inductor needs a
    C++ compiler and a warm-up of its own, and pays back little: CifarNet's step ran 1.08× as fast on crops
    and 1.11× on whole images after about a minute of compiling (``benchmark.compile_speedup``; docs/results.md,
    Time), so the CPU trains eagerly. Without Triton (Windows, some older
    installs) or on a GPU older than Triton supports (``TRITON_MIN_CAPABILITY``) compiling a CUDA model
    fails at its first step, so there the model is returned as it is, with a note through ``log``."""
    if torch.device(device).type != "cuda":
        return model
    reason = compile_unavailable(device)
    if reason is not None:
        if log:
            log(f"torch.compile off: {reason}; training uncompiled (--no-compile skips this note)")
        return model
    try:
        # dynamic=False: a run that changes its image size (progressive resizing's crops, then whole images)
        # gets one static graph per size, not a shape-generic graph for every epoch after the first change
        fn = torch.compile(model, dynamic=False)
    except Exception as err:  # noqa: BLE001 - raised by torch.compile itself (an unsupported Python, say)
        if log:
            cause = _first_line(err)
            log(f"torch.compile is not available here ({type(err).__name__}: {cause}); "
                "training uncompiled (--no-compile skips compiling)")
        return model
    return CompileGuard(model, fn, log)


def saved_steps_per_epoch(state: dict, epochs: int) -> int:
    """The optimizer steps per epoch a checkpoint's run was laid out for (its learning-rate schedule
    spans ``epochs`` of them); checkpoints older than the ``steps_per_epoch`` entry: OneCycle's total
    divided by the epochs. 0 when neither is there."""
    total = (state.get("scheduler") or {}).get("total_steps") or 0
    return int(state.get("steps_per_epoch") or total // max(epochs, 1))


def fit(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader, config: TrainConfig,
        device: torch.device | str, checkpoint: str | Path | None = None, resume: str | Path | bool | None = None,
        progress: bool = True, log: Callable[[str], None] | None = print,
        val_loader: DataLoader | None = None) -> History:
    """Train ``model`` for ``config.epochs`` epochs with OneCycle, evaluating after each epoch on the
    validation split (``val_loader``, if given: where decisions are made) and on the test set.

    Args:
        checkpoint: where to write a checkpoint after every epoch (atomically); None for none.
        resume: a checkpoint to continue from (``True`` means ``checkpoint``). The model, optimizer,
            schedule and history are restored, and training continues at the next epoch.
        log: called with one line per epoch (``print`` by default; None for silence).

    Stopping it (Ctrl-C, a notebook's stop button) returns the history so far, marked
    ``interrupted``; the checkpoint of the last complete epoch is on disk, and the model (in eval mode)
    holds that epoch's weights again (with no checkpoint, those of partway through the next epoch).
    """
    device = torch.device(device)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        images = len(train_loader.dataset) if hasattr(train_loader, "dataset") else "fewer"
        dropped = " and its last partial batch dropped (drop_last: on for torch.compile on CUDA)" if getattr(
            train_loader, "drop_last", False) else ""
        raise ValueError(f"the training loader gives no batches: {images} training images at batch size "
                         f"{config.batch_size}{dropped}. Lower the batch size (--batch-size), train on more images "
                         "(--subset), or skip compiling (--no-compile)")
    model.to(device)
    channels_last = channels_last_on(device, config.channels_last)   # not on MPS: see its docstring
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, config, steps_per_epoch)
    dtype = mixed_precision(device, config.amp)
    amp = dtype is not None
    where, how = _named(device), precision_name(dtype)   # kept with every epoch (History.ran_on)
    scaler = torch.amp.GradScaler(device.type) if needs_grad_scaler(dtype) else None  # fp16 only (a T4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    ema = weight_average(model, config.ema_decay)
    history = History()
    start_epoch = 0

    if resume is True:
        if checkpoint is None:
            raise ValueError("resume=True continues the run saved in checkpoint=..., and no checkpoint was given: "
                             "pass checkpoint=<its path> (or resume=<its path>), or leave resume out to start afresh")
        resume = checkpoint
    if resume:
        state = load_checkpoint(resume, map_location=device)   # checked below before the model takes its weights
        lacking = [k for k in ("optimizer", "scheduler", "epoch", "history", "config") if k not in state]
        if lacking:
            raise CheckpointError(
                f"{shown_path(resume)} holds weights only (shipped or exported?), not a run to continue: it lacks "
                f"{', '.join(lacking)}. To train from those weights, load them (load_checkpoint(path, model), or "
                "pretrained.load_pretrained) and train without resume")
        saved = TrainConfig.from_dict(state.get("config", {}))
        keys = ("epochs", "batch_size", "seed", "train_per_class", "test_per_class") + LEARNING_SETTINGS
        differ = [k for k in keys if getattr(saved, k) != getattr(config, k)]
        if differ:
            raise CheckpointError(
                f"{shown_path(resume)} was trained with "
                + ", ".join(f"{k}={getattr(saved, k)}" for k in differ)
                + "; resume with the same settings (got " + ", ".join(f"{k}={getattr(config, k)}" for k in differ) + ")"
            )
        # the schedule was laid out for the saved run's steps per epoch (older checkpoints: OneCycle's total)
        saved_steps = saved_steps_per_epoch(state, config.epochs)
        if saved_steps and saved_steps != steps_per_epoch:
            raise CheckpointError(
                f"{shown_path(resume)} ran {saved_steps} steps per epoch and this loader gives {steps_per_epoch}, so "
                "its learning-rate schedule would run out before the last epoch. Resume on the same training images "
                "(data folder, subset, validation split), with a loader that keeps or drops each epoch's last partial "
                "batch as the saved run's did (on CUDA torch.compile drops it; experiment.train, behind --resume, "
                "matches the checkpoint)")
        if ema is not None and not state.get("ema"):
            raise CheckpointError(f"{shown_path(resume)} holds no weight average (ema_decay={config.ema_decay}); "
                                  "start the run afresh, without resume")
        load_weights(state, model, resume)   # only now: a refused resume leaves the caller's model as it was
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        history = History.from_dict(state["history"])
        history.interrupted = False
        start_epoch = int(state["epoch"])
        if log:   # a finished run is read back, not resumed: nothing is left to train
            log(f"read back from {shown_path(resume)}, finished after epoch {start_epoch}:" if start_epoch >= config.epochs
                else f"resumed from {shown_path(resume)} after epoch {start_epoch}:")
            for i in range(len(history)):
                log(_epoch_line(history, i, config.epochs))
            before = history.ran_on()[-1] if len(history) else None
            if (start_epoch < config.epochs and before and before["precision"] is not None
                    and (before["device"], before["precision"]) != (where, how)):
                first, last = before["first_epoch"], before["last_epoch"]
                span = f"epoch {first}" if first == last else f"epochs {first}–{last}"
                log(f"note: {span} ran in {before['precision']} on {before['device']}; from epoch {start_epoch + 1} "
                    f"this run trains in {how} on {where} (its record lists each stretch under 'ran_on')")

    train_model = compiled(model, device, log) if config.compile else model
    # on cuda:N the loaders' pin-memory thread pins on the current device: make it the run's
    with cuda_device_context(device):
        try:
            for epoch in range(start_epoch, config.epochs):
                if hasattr(train_loader, "set_epoch"):  # data.PhasedLoader: crops, whole images, a clean tail
                    train_loader.set_epoch(epoch)
                _reseed_epoch(train_loader, config.seed * 1000 + epoch)
                t0 = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                train_loss, train_acc = train_one_epoch(
                    train_model, train_loader, optimizer, device, scheduler, loss_fn, amp=amp,
                    channels_last=channels_last, scaler=scaler, progress=progress,
                    desc=f"epoch {epoch + 1}/{config.epochs}",
                    after_step=None if ema is None else lambda: ema.update_parameters(model))
                synchronize(device)
                train_seconds = time.perf_counter() - t0
                if isinstance(train_model, CompileGuard) and history.compile_seconds is None:
                    history.compile_seconds = train_model.first_call_seconds
                # evaluation runs the eager model: only training is compiled (eval mode and the last,
                # smaller batch would each cost a recompile for a few seconds of work)
                scores = {}  # validation's, and the weight average's (validation and test)
                if val_loader is not None:
                    val_loss, val_acc = evaluate(model, val_loader, device, amp=amp, channels_last=channels_last)
                    scores = dict(val_loss=val_loss, val_acc=val_acc)
                test_loss = test_acc = None  # the test set is read after the last epoch only, unless asked
                if config.test_each_epoch or epoch + 1 == config.epochs or val_loader is None:
                    test_loss, test_acc = evaluate(model, test_loader, device, amp=amp,
                                                   channels_last=channels_last)
                if ema is not None:  # the weight average, scored beside the trained weights on the same images
                    refresh_batchnorm(ema.module, train_loader, device, channels_last=channels_last)
                    if val_loader is not None:
                        scores["ema_val_loss"], scores["ema_val_acc"] = evaluate(
                            ema.module, val_loader, device, amp=amp, channels_last=channels_last)
                    scores["ema_test_acc"] = None if test_loss is None else evaluate(
                        ema.module, test_loader, device, amp=amp, channels_last=channels_last)[1]
                for split, loss in (("validation", scores.get("val_loss")), ("test", test_loss)):
                    if loss is not None and not math.isfinite(loss):
                        raise TrainingDivergedError(
                            f"the {split} loss became {loss}; lower the learning rate (lr) or check the input data")
                synchronize(device)
                seconds = time.perf_counter() - t0
                # the epoch joins the history once its checkpoint is on disk: stopped during the write, the
                # history (and the log, and the run record) end where the checkpoint does
                done = History.from_dict(history.to_dict())
                done.append(epoch=epoch + 1, device=where, precision=how,
                            train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                            test_acc=test_acc, lr=lr, seconds=seconds, train_seconds=train_seconds, **scores)
                if checkpoint:
                    save_checkpoint(checkpoint, model, optimizer=optimizer.state_dict(),
                                    scheduler=scheduler.state_dict(), scaler=scaler.state_dict() if scaler else {},
                                    ema=ema.state_dict() if ema is not None else {}, steps_per_epoch=steps_per_epoch,
                                    history=done.to_dict(), epoch=epoch + 1, config=config.to_dict())
                history = done
                if log:
                    log(_epoch_line(history, -1, config.epochs))
        except KeyboardInterrupt:
            history.interrupted = True
            # the weights stopped partway through an epoch: give back those of the last complete epoch (what the
            # history and the checkpoint describe), in eval mode (as fit ends), so what a notebook does next with
            # the model describes that epoch, not a half-trained one
            restored = False
            if checkpoint and len(history) and Path(checkpoint).is_file():
                try:   # only the epoch the history ends at (not an older file's, nor one a step ahead)
                    saved = load_checkpoint(checkpoint, map_location=device)   # read once: checked, then loaded
                    if int(saved.get("epoch", -1)) == len(history):
                        load_weights(saved, model, checkpoint)
                        restored = True
                except CheckpointError:
                    pass
            if log:
                if not len(history):
                    log("interrupted before the first epoch finished: nothing was saved; run again from the start.")
                else:
                    if restored:
                        log(f"interrupted after {len(history)} complete epoch(s); the last complete epoch is saved in "
                            f"{shown_path(checkpoint)}, and the model holds its weights again. "
                            "Continue with fit(..., resume=True) or the CLI's --resume.")
                    else:
                        log(f"interrupted after {len(history)} complete epoch(s); the model holds weights from partway "
                            "through the next epoch (no checkpoint of this epoch to go back to: pass checkpoint=... "
                            "to be able to continue a run).")
        except TrainingDivergedError as err:
            where = (f" The checkpoint of epoch {len(history)} in {shown_path(checkpoint)} is kept."
                     if checkpoint and len(history)
                     else " No epoch finished, so nothing was saved." if checkpoint else "")
            raise TrainingDivergedError(f"epoch {len(history) + 1}: {err}.{where}") from None
        model.eval()   # as each epoch's evaluation leaves it; a finished run read back (no epoch ran) too
        return history
