"""One training run, end to end: data, model, fit, and a JSON run record. The CLI and the
full-training notebook both call ``run_training``, so they train the same way."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import TrainConfig
from .data import CIFAR10Data, load_cifar10, make_loaders
from .models import count_parameters, get_model
from .runtime import get_device, is_smoke, loader_workers, runs_dir, seed_everything
from .training import History, fit


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


def checkpoint_path(model_name: str, config: TrainConfig) -> Path:
    """Where a run's checkpoint lives: one file per (model, size, epochs, batch size, seed). The batch
    size is named only when it is not the course recipe's, so ``cifarnet-full-e35-s1.pt`` is the
    course run and ``cifarnet-full-e30-b512-s1.pt`` the fast one."""
    size = "full" if config.train_per_class is None else f"sub{config.train_per_class}"
    batch = "" if config.batch_size == TrainConfig.batch_size else f"-b{config.batch_size}"
    return runs_dir() / f"{model_name}-{size}-e{config.epochs}{batch}-s{config.seed}.pt"


def run_training(model_name: str = "cifarnet", config: TrainConfig | None = None, device: str | None = None,
                 data: CIFAR10Data | None = None, data_dir: str | None = None, resume: bool = False,
                 progress: bool = True, log=print) -> RunResult:
    """Train ``model_name`` with ``config`` (default: the recipe for this environment) and write a run
    record to ``runs/``. With ``resume=True`` an existing checkpoint of the same run is continued
    (a finished one simply returns its history)."""
    config = config or TrainConfig.for_environment()
    dev = get_device(device)
    if data is None:
        data = load_cifar10(data_dir)
    if config.train_per_class is not None or config.test_per_class is not None:
        data = data.subset(config.train_per_class, config.test_per_class, seed=config.seed)
    seed_everything(config.seed)
    model = get_model(model_name)
    train_loader, test_loader = make_loaders(data, config.batch_size, loader_workers(dev, config.num_workers), seed=config.seed,
                                             device=dev)
    ckpt = checkpoint_path(model_name, config)
    resume_from = ckpt if resume and ckpt.exists() else None
    t0 = time.perf_counter()
    history = fit(model, train_loader, test_loader, config, dev, checkpoint=ckpt, resume=resume_from,
                  progress=progress, log=log)
    wall = time.perf_counter() - t0
    record = {
        "model": model_name,
        "model_class": type(model).__name__,
        "parameters": count_parameters(model),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "epochs": len(history),
        "epochs_planned": config.epochs,
        "best_test_acc": history.best_test_acc,
        "final_test_acc": history.final_test_acc,
        "train_seconds": history.total_seconds,
        "wall_seconds_this_call": wall,
        "interrupted": history.interrupted,
        "smoke": is_smoke(),
        "data": {"source": data.source, "train": int(len(data.train_labels)), "test": int(len(data.test_labels))},
        "config": config.to_dict(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "history": history.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record_path = ckpt.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2))
    return RunResult(model, history, data, config, dev, record, record_path, ckpt, test_loader)
