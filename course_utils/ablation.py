"""The ablation study: what does each idea of CifarNet buy?

The variants are built on CifarNet v1 (``models.CifarNetV1``), the network the recorded ablation
studied; moving them to the current CifarNet, with several seeds on the full data, is issue 11's work.

Every variant is trained with the same recipe, seed, data and epochs; only the one thing named
changes. ``run_ablation`` returns one row per variant (parameters, MACs, receptive field, accuracy,
throughput) and ``write_csv``/``plot_ablation`` record them.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import TrainConfig
from .data import CIFAR10Data, make_loaders
from .inspection import count_macs, receptive_field
from .models import CifarNetV1 as CifarNet, CifarNetV1Config as CifarNetConfig, cifarnet_se, count_parameters
from .runtime import loader_workers, seed_everything
from .training import fit


@dataclass(frozen=True)
class Variant:
    name: str
    question: str
    build: Callable[[], nn.Module]
    augment: bool = True


VARIANTS: tuple[Variant, ...] = (
    Variant("cifarnet", "the reference (CifarNet v1): stride-2 downsampling, separable C3/C4, augmentation", CifarNet),
    Variant("maxpool", "downsampling: 3x3 conv + max-pool instead of a stride-2 conv",
            lambda: CifarNet(CifarNetConfig(downsample="maxpool"))),
    Variant("dilated-stride", "downsampling: a dilated (d=2) stride-2 conv instead of a plain one",
            lambda: CifarNet(CifarNetConfig(downsample="dilation"))),
    Variant("standard-conv", "standard 3x3 convs in C3/C4 instead of depthwise-separable",
            lambda: CifarNet(CifarNetConfig(separable=False))),
    Variant("se-attention", "with squeeze-and-excitation (C4 narrowed to 144 to stay < 200k)", cifarnet_se),
    Variant("no-augmentation", "without flip / shift-scale-rotate / coarse dropout", CifarNet, augment=False),
)


def run_ablation(data: CIFAR10Data, config: TrainConfig, device: torch.device,
                 variants: tuple[Variant, ...] = VARIANTS, progress: bool = False, log=print) -> list[dict]:
    """Train every variant with ``config`` on ``data``; one result row per variant."""
    rows = []
    for v in variants:
        seed_everything(config.seed)
        model = v.build()
        params, macs, rf = count_parameters(model), count_macs(model), receptive_field(model).final
        train, test = make_loaders(data, config.batch_size, loader_workers(device, config.num_workers), augment=v.augment,
                                   seed=config.seed, device=device)
        t0 = time.perf_counter()
        history = fit(model, train, test, config, device, progress=progress, log=None)
        seconds = time.perf_counter() - t0
        row = {
            "variant": v.name,
            "question": v.question,
            "parameters": params,
            "macs": macs,
            "receptive_field": rf,
            "best_test_acc": round(history.best_test_acc, 2),
            "final_test_acc": round(history.final_test_acc, 2),
            "images_per_s": round(len(data.train_labels) * len(history) / seconds, 1),
            "epochs": len(history),
            "device": str(device),
        }
        rows.append(row)
        if log:
            log(f"{v.name:<16} {params:>9,} params  {macs / 1e6:6.1f} M MACs  RF {rf:3d}  "
                f"test {row['final_test_acc']:6.2f}%  {row['images_per_s']:7.1f} img/s")
    return rows


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_ablation(rows: list[dict], title: str = ""):
    """Accuracy, parameters and throughput of each variant, side by side."""
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("final_test_acc", "parameters", "images_per_s"),
                              ("final test accuracy %", "parameters", "training images / s")):
        values = [r[key] for r in rows]
        ax.barh(names, values, color=["tab:orange"] + ["tab:blue"] * (len(rows) - 1))
        ax.set_title(label)
        ax.invert_yaxis()
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.1f}" if isinstance(v, float) else f" {v:,}", va="center", fontsize=8)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
