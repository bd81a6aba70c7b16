"""Pictures for the notebooks. Every function returns its matplotlib Figure; ``save`` writes one to
``figures/`` so the README can show it. Pure helpers (``confusion_matrix``, ``per_class_accuracy``)
return arrays and are unit-tested.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .runtime import figures_dir


def _plt():
    import matplotlib.pyplot as plt

    return plt


def save(fig, name: str, dpi: int = 110, folder: Path | None = None):
    """Save ``fig`` as ``<name>.png`` in ``folder`` (default ``runtime.figures_dir()``: ``figures/``,
    or its ``smoke/`` subfolder in smoke mode) and return the path."""
    folder = Path(folder or figures_dir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def to_display(image: np.ndarray, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """An HWC uint8 image, or a CHW normalised tensor/array, as an HWC float image in [0, 1]."""
    x = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(1, 2, 0)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if mean is not None and std is not None:
        x = x * np.asarray(std) + np.asarray(mean)
    return np.clip(x, 0.0, 1.0)


def class_balance(labels: np.ndarray, classes: Sequence[str], title: str = "images per class"):
    plt = _plt()
    counts = np.bincount(labels, minlength=len(classes))
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(classes, counts, color="tab:blue")
    ax.set_title(title)
    ax.set_xlabel("class")
    ax.set_ylabel("images")
    ax.tick_params(axis="x", rotation=45)
    for i, c in enumerate(counts):
        ax.text(i, c, str(c), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


def sample_grid(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], per_class: int = 8, seed: int = 0,
                title: str | None = None):
    """``per_class`` random images of every class, one row per class (32×32 pixels each, shown
    without smoothing)."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 0.9, len(classes) * 0.95), squeeze=False)
    for c, name in enumerate(classes):
        idx = rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for j, i in enumerate(idx):
            ax = axes[c, j]
            ax.imshow(to_display(images[i]), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title or f"{per_class} random images per class (32x32 pixels each)", fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, top=0.95)
    return fig


def pixel_histograms(images: np.ndarray, bins: int = 64):
    """Distribution of pixel values per RGB channel."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    for ch, color in enumerate(("red", "green", "blue")):
        hist, edges = np.histogram(images[..., ch], bins=bins, range=(0, 255), density=True)
        ax.plot(edges[:-1], hist, color=color, label=color)
    ax.set_xlabel("pixel value (0-255)")
    ax.set_ylabel("density (fraction of pixels per unit value)")
    ax.set_title("pixel values per channel")
    ax.legend()
    fig.tight_layout()
    return fig


def augmentation_preview(images: np.ndarray, transform, mean, std, n_images: int = 4, n_draws: int = 6, seed: int = 0,
                         title: str | None = None):
    """Each row: an original image, then ``n_draws`` outputs of ``transform`` on it (random draws,
    reproducible through ``seed``)."""
    plt = _plt()
    transform.set_random_seed(seed)
    fig, axes = plt.subplots(n_images, n_draws + 1, figsize=((n_draws + 1) * 1.2, n_images * 1.25), squeeze=False)
    for r in range(n_images):
        axes[r, 0].imshow(to_display(images[r]))
        axes[r, 0].set_title("original" if r == 0 else "", fontsize=8)
        for c in range(1, n_draws + 1):
            axes[r, c].imshow(to_display(transform(image=images[r])["image"], mean, std))
            if r == 0:
                axes[r, c].set_title(f"draw {c}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title or f"the training augmentation: {n_draws} random draws per image", fontsize=10)
    fig.subplots_adjust(wspace=0.05, hspace=0.1)
    return fig


def training_curves(history, title: str = ""):
    """Loss and accuracy per epoch (train, validation, and test where it was read: after the last
    epoch only, for a run with a validation split), and the learning rate."""
    if not all(hasattr(history, k) for k in ("epoch", "train_loss", "test_acc", "lr")):
        raise TypeError(f"training_curves expects a training History (result.history, or fit's return value), got "
                        f"{type(history).__name__}; for a run record use History.from_dict(record['history'])")
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    e = history.epoch
    tested = [(ep, l, a) for ep, l, a in zip(e, history.test_loss, history.test_acc) if a is not None]
    for ax, train, val, test, what in ((axes[0], history.train_loss, history.val_loss, 1, "cross-entropy per image"),
                                       (axes[1], history.train_acc, history.val_acc, 2, "accuracy (%)")):
        ax.plot(e, train, label="train (augmented)")
        if val:
            ax.plot(e, val, label="validation")
        if tested:
            xs, ys = [t[0] for t in tested], [t[test] for t in tested]
            ax.plot(xs, ys, "o" if len(tested) == 1 else "-", color="tab:red", label="test")
        ax.set_ylabel(what)
    axes[0].set_title("loss (plain cross-entropy)")
    axes[1].set_title(f"accuracy (final test {history.final_test_acc:.2f}%)")
    axes[2].plot(e, history.lr, color="tab:green")
    axes[2].set_title("learning rate at epoch start")
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(), axes[1].legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``m[true, predicted]``."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if preds.shape != labels.shape:
        raise ValueError(f"preds {preds.shape} and labels {labels.shape} differ in shape")
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy % of each class (NaN for a class with no examples)."""
    m = confusion_matrix(preds, labels, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.diag(m) / m.sum(1)


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], normalize: bool = True):
    plt = _plt()
    m = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalize else matrix
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{m[i, j]:.2f}" if normalize else str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    bar = fig.colorbar(im, ax=ax, fraction=0.046)
    bar.set_label("fraction of the true class" if normalize else "images", fontsize=8)
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(acc: np.ndarray, classes: Sequence[str], title: str = "test accuracy per class"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(classes, acc, color="tab:orange")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy (%)")
    ax.tick_params(axis="x", rotation=45)
    for i, a in enumerate(acc):
        ax.text(i, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


def misclassified_grid(images: np.ndarray, preds: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                       n: int = 20, cols: int = 10, seed: int = 0):
    """``n`` misclassified test images, titled "true → predicted"."""
    plt = _plt()
    wrong = np.flatnonzero(preds != labels)
    rng = np.random.default_rng(seed)
    pick = rng.choice(wrong, size=min(n, len(wrong)), replace=False) if len(wrong) else []
    rows = max(1, int(np.ceil(len(pick) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        ax.imshow(to_display(images[i]), interpolation="nearest")
        ax.set_title(f"{classes[labels[i]]}\n→ {classes[preds[i]]}", fontsize=7)
    fig.suptitle(f"{len(pick)} of the {len(wrong)} misclassified test images (true → predicted)", fontsize=10)
    # room above the first row for the figure title (about 0.7 inch, whatever the number of rows)
    fig.subplots_adjust(wspace=0.1, hspace=0.5, top=1 - 0.7 / fig.get_figheight())
    return fig


def gate_deviation_map(stats, classes: Sequence[str], title: str = ""):
    """Each class's mean excitation minus the mean over all images (``inspection.GateStatistics``), one
    row per class, the channels sorted by how far their class means spread (largest first), on a
    diverging scale centred on 0."""
    plt = _plt()
    order = np.argsort(-stats.between)
    lim = float(np.abs(stats.deviation).max())
    fig, ax = plt.subplots(figsize=(10, 3.4))
    im = ax.imshow(stats.deviation[:, order], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("channel, sorted by the spread of its class means (largest first)")
    ax.set_title(title or "each class's mean excitation minus the mean over all images")
    fig.colorbar(im, ax=ax, fraction=0.02).set_label("excitation difference")
    return fig


def spatial_gate_maps(images, labels: Sequence[int], maps: np.ndarray, mean_map: np.ndarray, classes: Sequence[str],
                      mean: Sequence[float], std: Sequence[float], title: str = ""):
    """A spatial gate (CBAM's) on a few images: the images (normalised CHW tensors or arrays), their gate
    maps on one colour scale beside the mean map over many images, and each map minus that mean map on a
    diverging scale. What every image shares (position) shows in the mean map; what depends on the image,
    in the bottom row."""
    plt = _plt()
    n = len(maps)
    if len(images) != n or len(labels) != n:
        raise ValueError(f"expected one image and label per map, got {len(images)} images, {len(labels)} labels, {n} maps")
    fig, axes = plt.subplots(3, n + 1, figsize=(1.15 * (n + 1) + 0.8, 4.2), squeeze=False)
    low, high = float(min(maps.min(), mean_map.min())), float(max(maps.max(), mean_map.max()))
    lim = float(np.abs(maps - mean_map).max()) or 1.0
    for i in range(n):
        axes[0, i].imshow(to_display(images[i], mean, std))
        axes[0, i].set_title(classes[int(labels[i])], fontsize=8)
        gate_im = axes[1, i].imshow(maps[i], cmap="magma", vmin=low, vmax=high)
        diff_im = axes[2, i].imshow(maps[i] - mean_map, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[1, n].imshow(mean_map, cmap="magma", vmin=low, vmax=high)
    axes[1, n].set_title("mean map", fontsize=8)
    axes[0, n].axis("off")
    axes[2, n].axis("off")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].set_ylabel("gate", fontsize=8)
    axes[2, 0].set_ylabel("gate - mean", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.colorbar(gate_im, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01).set_label("gate", fontsize=8)
    fig.colorbar(diff_im, ax=axes[2, :].tolist(), fraction=0.02, pad=0.01).set_label("difference", fontsize=8)
    return fig
