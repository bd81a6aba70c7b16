"""Measurements, never hard-coded numbers: images per second of a data pipeline and of training steps.

Every result names the device and the settings it was measured with.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np


def pipeline_throughput(transform: Callable, images: np.ndarray, min_seconds: float = 1.0,
                        albumentations_style: bool = True) -> float:
    """Images per second of ``transform`` applied one image at a time in this process.

    ``albumentations_style``: call as ``transform(image=img)["image"]``; else ``transform(img)``.
    """
    call = (lambda img: transform(image=img)["image"]) if albumentations_style else transform
    for img in images[:8]:  # warm-up
        call(img)
    n, start = 0, time.perf_counter()
    while True:
        for img in images:
            call(img)
            n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed


def forward_ms(module, x, repeats: int = 20, warmup: int = 3) -> float:
    """Milliseconds per forward pass of ``module`` on the batch ``x`` (eval mode, no gradients, its mode
    restored after): the median of ``repeats`` timed calls after ``warmup`` untimed ones, each waited for
    on the device (``runtime.synchronize``) so that an asynchronous GPU is timed, not queued."""
    import torch

    from .inspection import _eval_mode
    from .runtime import synchronize

    if repeats < 1 or warmup < 0:
        raise ValueError(f"forward_ms: repeats must be at least 1 and warmup at least 0, got {repeats} and {warmup}")
    times = []
    with _eval_mode(module), torch.no_grad():
        for i in range(warmup + repeats):
            synchronize(x.device)
            start = time.perf_counter()
            module(x)
            synchronize(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def loader_throughput(data, batch_size: int, num_workers: int, max_batches: int = 40, device: str = "cpu") -> float:
    """Images per second the augmented training loader delivers with ``num_workers`` processes, once they
    are started: the first batch (start-up) comes before the clock, and the timed batches follow it from
    the same pass. A pass that runs out starts the next, its start-up timed, as each epoch's is in training
    where the workers are not kept (on a CPU: ``runtime.loader_settings``)."""
    from .data import make_loaders

    loader, _ = make_loaders(data, batch_size, num_workers, device=device)
    batches_left = iter(loader)
    next(batches_left)  # start-up (worker processes) is not throughput
    n, batches, start = 0, 0, time.perf_counter()
    while True:  # as many passes as it takes
        for x, _ in batches_left:
            n += x.shape[0]
            batches += 1
            if batches >= max_batches:
                return n / (time.perf_counter() - start)
        batches_left = iter(loader)


def train_step_throughput(model, device, batch_size: int, amp: str | None = None, channels_last: bool = False,
                          steps: int = 20, warmup: int = 3, size: int = 32) -> float:
    """Training images per second on random ``size``×``size`` data (forward, backward, SGD step).

    ``amp``: None (fp32), "bf16" or "fp16" (CUDA autocast). On CUDA with cuDNN's autotuner on, as training
    turns it on (``runtime.use_cudnn_autotuner``), so a timing does not depend on whether a training cell
    ran before it in the same kernel.
    """
    import torch
    from torch import nn

    from .runtime import channels_last_on, synchronize, use_cudnn_autotuner
    from .training import training_step

    use_cudnn_autotuner(device)
    model = model.to(device)
    channels_last = channels_last_on(device, channels_last)   # MPS: contiguous (runtime.channels_last_on)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch_size, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    model.train()

    def step():
        training_step(model, x, y, opt, nn.functional.cross_entropy, device, dtype is not None, scaler, dtype)

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return batch_size * steps / (time.perf_counter() - start)


def compile_speedup(model_name: str = "cifarnet", device="cpu", sizes: tuple[int, ...] = (24, 32),
                    batch_size: int = 256, steps: int = 30, passes: int = 3, measure: Callable | None = None,
                    compile_fn: Callable | None = None) -> list[dict]:
    """What ``torch.compile`` (inductor, one static graph per size, as training compiles) does to the training
    step of ``model_name`` on ``device``, per image size: ``passes`` interleaved passes, each timing a fresh
    eager model and a fresh compiled one at every size. Each row: size, pass, eager and compiled images/s
    (channels-last, fp32) and ``compile_seconds``, the compiled model's first steps (warm-up, compilation
    included). Training compiles on CUDA only (``training.compiled``); this measures what the CPU would gain.
    ``measure`` is ``train_step_throughput`` and ``compile_fn`` ``torch.compile`` unless given (tests)."""
    import torch

    from .models import get_model

    measure = measure or train_step_throughput
    compile_fn = compile_fn or (lambda m: torch.compile(m, dynamic=False))
    rows = []
    for p in range(passes):
        for size in sizes:
            eager = measure(get_model(model_name), device, batch_size, channels_last=True, steps=steps, size=size)
            start = time.perf_counter()
            fn = compile_fn(get_model(model_name))
            measure(fn, device, batch_size, channels_last=True, steps=1, warmup=2, size=size)   # compiles
            compile_seconds = time.perf_counter() - start
            compiled = measure(fn, device, batch_size, channels_last=True, steps=steps, warmup=1, size=size)
            rows.append({"pass": p + 1, "size": size, "eager_images_per_s": eager,
                         "compiled_images_per_s": compiled, "compile_seconds": compile_seconds})
    return rows


@dataclass(frozen=True)
class RelativeSpeed:
    """One model's training speed against a reference's, from ``relative_throughput``.

    ``ratios`` holds one ratio per pass (this model's images/s over the reference's, timed moments
    apart); ``ratio`` is their median, ``low``/``high`` their range. A range that includes 1 is not a
    reading: the model is not shown to be faster or slower than the reference."""

    name: str
    images_per_s: float          # median over the passes
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def low(self) -> float:
        return min(self.ratios)

    @property
    def high(self) -> float:
        return max(self.ratios)

    @property
    def is_reading(self) -> bool:
        """True when every pass puts the model on the same side of the reference."""
        return self.high < 1.0 or self.low > 1.0


def relative_throughput(builds: "dict[str, Callable[[], object]]", device, reference: str | None = None,
                        passes: int = 5, batch_size: int = 128, steps: int = 10, channels_last: bool = True,
                        measure: Callable | None = None) -> list[RelativeSpeed]:
    """Training speed of each model against ``reference`` (default: the first of ``builds``), robust to
    a machine whose speed drifts (a shared or throttled CPU's speed changes from one minute to the
    next): ``passes`` interleaved passes each time every model once, close together, and each model's
    ratio is taken to the reference timed in the same pass. Returns one ``RelativeSpeed`` per model, in
    the order of ``builds`` (the reference's ratios are all 1).

    ``builds`` maps a name to a function that builds a fresh model; ``measure`` is
    ``train_step_throughput`` unless given (same signature), so the arithmetic can be tested alone."""
    if not builds:
        raise ValueError("relative_throughput: no models to time (builds is empty)")
    if passes < 1:
        raise ValueError(f"relative_throughput: passes must be at least 1, got {passes}")
    reference = next(iter(builds)) if reference is None else reference
    if reference not in builds:
        raise ValueError(f"relative_throughput: the reference {reference!r} is not among the models "
                         f"({', '.join(builds)}); name one of them")
    measure = measure or train_step_throughput
    speed: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(passes):
        for name, build in builds.items():
            speed[name].append(measure(build(), device, batch_size, channels_last=channels_last, steps=steps))
    ref = speed[reference]
    return [RelativeSpeed(name, statistics.median(s), tuple(a / b for a, b in zip(s, ref))) for name, s in speed.items()]


def pointwise_timings(shapes: "list[tuple[int, int, int]]", device="cpu", batch_size: int = 256,
                      repeats: int = 10) -> list[dict]:
    """Forward and backward time of 1×1 convolutions on a channels-last CPU batch, computed by the
    convolution kernel and as a matrix product (``layers.PointwiseConv2d``), per layer shape.

    ``shapes`` lists ``(in_channels, out_channels, size)``; each is timed ``repeats`` times each way,
    the two ways alternating (and which goes first, too) so that a machine whose speed drifts
    affects both alike. Returns one dict per shape: the shape, ``conv_ms`` and ``matmul_ms`` (medians,
    milliseconds per batch) and ``speedup`` (``conv_ms / matmul_ms``)."""
    import torch

    from .layers import PointwiseConv2d
    from .runtime import synchronize

    if repeats < 1:
        raise ValueError(f"pointwise_timings: repeats must be at least 1, got {repeats}")
    device = torch.device(device)
    if device.type != "cpu":   # PointwiseConv2d takes its matrix-product path on a CPU only
        raise ValueError(f"pointwise_timings compares two CPU kernels; on {device.type} both ways would run the same "
                         "convolution: use device='cpu'")
    rows = []
    for cin, cout, size in shapes:
        layer = PointwiseConv2d(cin, cout, bias=False).to(device)
        x = torch.randn(batch_size, cin, size, size, device=device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(repeats + 1):  # the first round warms up and is not kept
            for matmul in ((True, False) if r % 2 else (False, True)):
                layer.matmul = matmul
                synchronize(device)
                start = time.perf_counter()
                layer(x).sum().backward()
                synchronize(device)
                if r:
                    times[matmul].append((time.perf_counter() - start) * 1000)
                x.grad = layer.weight.grad = None
        conv, mm = statistics.median(times[False]), statistics.median(times[True])
        rows.append({"in_channels": cin, "out_channels": cout, "size": size, "conv_ms": conv, "matmul_ms": mm,
                     "speedup": conv / mm})
    return rows


#: The models whose training steps ``bench`` times: the starting network, the seed's CifarNet10
#: layout (a reference), the kit's first CifarNet, the current one, ``cifarnet_wide`` (the long recipe's until
#: 2026-12-04), the long recipe's network since (``config.LONG_RECIPE_MODEL``) and v1's SE variant.
BENCH_MODELS = ("baseline", "cifarnet10", "cifarnet_v1", "cifarnet", "cifarnet_wide", "cifarnet_res20", "cifarnet_se")


def time_to_accuracy(h, target: float, config: dict | None = None) -> dict:
    """When a run (read every epoch on the test set, as a benchmark does) first reached ``target``:
    the epoch, the seconds to get there, and the same without the first compiled step
    (``h.compile_seconds``, compiling included), which is reported apart."""
    hit = next((i for i, a in enumerate(h.test_acc) if a is not None and a >= target), None)
    to_target = None if hit is None else sum(h.seconds[:hit + 1])
    return {
        "target": target,
        "reached_at_epoch": None if hit is None else h.epoch[hit],
        "seconds_to_target": None if to_target is None else round(to_target, 1),
        "compile_seconds": None if h.compile_seconds is None else round(h.compile_seconds, 1),
        "training_seconds_to_target": None if to_target is None else round(to_target - (h.compile_seconds or 0.0), 1),
        "final_test_acc": h.final_test_acc,
        "total_seconds": round(h.total_seconds, 1),
        "config": config,
    }


def run_benchmark(device, quick: bool = False, data=None, log=print, save: Callable[[dict], object] | None = None,
                  time_to_target: bool = True) -> dict:
    """Everything ``python -m course_utils bench`` measures, as one record.

    ``time_to_target=False`` leaves out the time to 85% on CUDA (a second whole fast-recipe run, minutes,
    reading the test set every epoch), for a caller that cannot afford it: ``.ci/gpu-checks`` on a short
    loan, which leaves that measure to the full procedure; ``record["time_to_accuracy_skipped"]`` says why.

    ``save`` (the CLI's: an atomic write of the JSON file) is called with the record after each row and
    at the end, so that a benchmark stopped part-way (a time limit, Ctrl-C) keeps the rows it measured:
    ``record["complete"]`` is False until the last row."""
    import os
    import platform

    import torch

    from .config import TrainConfig
    from .data import load_cifar10
    from .experiment import run_training
    from .inspection import count_macs
    from .models import count_parameters, get_model
    from .runtime import (channels_last_on, cuda_device_context, device_name, mixed_precision, precision_name, runs_dir,
                          usable_cores, use_cudnn_autotuner)

    autotuned = use_cudnn_autotuner(device)  # before any row: the rows time the kernels training uses
    record = {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "quick": quick,
        "training_precision": precision_name(mixed_precision(device)),
        # on CUDA: cuDNN's autotuner (as in training), and whether fp32 convolutions may use TF32 tensor
        # cores (PyTorch's default for cuDNN on Ampere and newer: the "fp32" rows are TF32 there)
        "cudnn_benchmark": autotuned,
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
        "pipeline": [],
        "train_step": [],
        "time_to_accuracy": None,
        "time_to_accuracy_skipped": None,   # why it was not measured: "--quick", "needs CUDA", "--no-time-to-accuracy"
        "complete": False,
    }
    save = save or (lambda r: None)
    save(record)   # the file exists before the first row
    data = data if data is not None else load_cifar10()
    sample = data.subset(100, 10) if quick else data
    max_workers = min(usable_cores(), 2 if quick else 8)
    for workers in range(0, max_workers + 1):
        with cuda_device_context(device):   # cuda:N: the pin-memory thread pins on the current card, not card 0
            ips = loader_throughput(sample, 128, workers, max_batches=6 if quick else 60, device=str(device))
        record["pipeline"].append({"workers": workers, "batch_size": 128, "images_per_s": round(ips, 1)})
        save(record)
        if log:
            log(f"data pipeline  workers={workers}  {ips:10,.0f} images/s")
    # fp32: NCHW, and channels_last where the device runs it (CPU: +CifarNet, -BaselineNet); not on MPS
    # (runtime.channels_last_on), where a second row would time the contiguous layout again
    settings = [(None, False)] + ([(None, True)] if channels_last_on(device, True) else [])
    if device.type == "cuda":  # bf16 only where the card has it natively (runtime.mixed_precision)
        settings += ([("bf16", True)] if mixed_precision(device) == torch.bfloat16 else []) + [("fp16", True)]
    for name in BENCH_MODELS:
        params, macs = count_parameters(get_model(name)), count_macs(get_model(name))
        for batch in ((128,) if quick else (128, 512)):
            for amp, cl in settings:
                ips = train_step_throughput(get_model(name), device, batch, amp, cl, steps=3 if quick else 30)
                record["train_step"].append({"model": name, "parameters": params, "macs": macs, "batch_size": batch,
                                             "amp": amp or "fp32", "channels_last": cl, "images_per_s": round(ips, 1)})
                save(record)
                if log:
                    log(f"train step  {name:<13} {params:8,d} params {macs / 1e6:6.2f} M MACs  batch {batch:4d}  "
                        f"{amp or 'fp32':>4}  channels_last={cl!s:<5} {ips:10,.0f} images/s")
    if device.type == "cuda" and not quick and time_to_target:
        # a benchmark, not a decision: it reads the test set every epoch, and keeps its checkpoint
        # under runs/bench/, away from the learner's own runs
        result = run_training("cifarnet", TrainConfig.fast(test_each_epoch=True), device=str(device), data=data,
                              progress=False, log=None, checkpoint_dir=runs_dir() / "bench")
        record["time_to_accuracy"] = time_to_accuracy(result.history, 85.0, result.config.to_dict())
        if result.history.interrupted:   # Ctrl-C in training: fit keeps the epochs so far and returns
            record["time_to_accuracy"]["interrupted"] = True
            save(record)
            raise KeyboardInterrupt
        if log:
            log(f"time to 85%: {record['time_to_accuracy']}")
    else:
        record["time_to_accuracy_skipped"] = ("--quick" if quick else "needs CUDA" if device.type != "cuda"
                                              else "--no-time-to-accuracy")
        if log:
            log(f"time to accuracy: skipped ({record['time_to_accuracy_skipped']})")
    record["complete"] = True
    save(record)
    return record


def one_pass(loader, progress: bool = True, desc: str = "one pass") -> float:
    """Iterate once over ``loader`` (a live progress bar in a notebook); returns images per second."""
    from tqdm.auto import tqdm

    n, start = 0, time.perf_counter()
    for x, _ in tqdm(loader, desc=desc, disable=not progress, leave=True):
        n += x.shape[0]
    return n / (time.perf_counter() - start)
