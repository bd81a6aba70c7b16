"""Drawings that explain convolutions better than a paragraph: kernel taps on the input grid,
the holes of a dilated kernel, the zeros a transposed convolution inserts, and maps side by side.
Each function returns a matplotlib Figure."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .arithmetic import conv_output_size, effective_kernel


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _grid(ax, n: int, padding: int = 0) -> None:
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, n, 1), minor=True)
    ax.grid(which="minor", color="0.75", linewidth=0.6)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    ax.set_aspect("equal")
    if padding:
        for i in range(n):
            for j in range(n):
                if min(i, j) < padding or max(i, j) >= n - padding:
                    ax.add_patch(_plt().Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.92"))


def kernel_taps(size: int = 7, kernel: int = 3, dilations: Sequence[int] = (1, 2, 3)):
    """A k×k kernel's taps on a ``size×size`` input for each dilation: the kernel grows, the weights don't."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(dilations), figsize=(3.2 * len(dilations), 3.4))
    for ax, d in zip(np.atleast_1d(axes), dilations):
        _grid(ax, size)
        span = effective_kernel(kernel, d)
        c = size // 2 - (span - 1) // 2
        ax.add_patch(plt.Rectangle((c - 0.5, c - 0.5), span, span, fill=False, ec="tab:orange", lw=1.5, ls="--"))
        for i in range(kernel):
            for j in range(kernel):
                ax.add_patch(plt.Rectangle((c + j * d - 0.5, c + i * d - 0.5), 1, 1, color="tab:blue"))
        ax.set_title(f"{kernel}x{kernel}, dilation {d}\nspans {span}x{span}, {kernel * kernel} weights")
    fig.suptitle(f"where a {kernel}x{kernel} kernel reads on a {size}x{size} input: its {kernel * kernel} weights "
                 "(blue) and the square they span (dashed), one grid cell per pixel")
    fig.tight_layout()
    return fig


def conv_positions(size: int = 5, kernel: int = 3, stride: int = 2, padding: int = 1, dilation: int = 1,
                   max_side: int = 6):
    """Every position the kernel takes on the padded input (one panel each), with the output size.
    Past ``max_side`` × ``max_side`` positions only the first ones are drawn (the title says so)."""
    plt = _plt()
    out = conv_output_size(size, kernel, stride, padding, dilation)
    shown = min(out, max_side)
    n = size + 2 * padding
    fig, axes = plt.subplots(shown, shown, figsize=(1.7 * shown, 1.7 * shown + 0.3), squeeze=False)
    span = effective_kernel(kernel, dilation)
    for oi in range(shown):
        for oj in range(shown):
            ax = axes[oi, oj]
            _grid(ax, n, padding)
            for i in range(kernel):
                for j in range(kernel):
                    ax.add_patch(plt.Rectangle((oj * stride + j * dilation - 0.5, oi * stride + i * dilation - 0.5), 1, 1,
                                               color="tab:blue", alpha=0.8))
            ax.set_title(f"out[{oi},{oj}]", fontsize=8)
    part = f" (the first {shown}x{shown} drawn)" if shown < out else ""
    fig.suptitle(f"input {size}x{size}, padding {padding} (grey), kernel {kernel} (span {span}), stride {stride}"
                 f" -> output {out}x{out}{part}", fontsize=9)
    fig.tight_layout()
    return fig


def conv_explorer(size: int = 5, kernel: int = 3, stride: int = 2, padding: int = 1, dilation: int = 1):
    """Sliders for one convolution's input size, kernel, stride, padding and dilation that redraw
    ``conv_positions`` and print the output size and the layer's receptive field (its span).

    Returns the ``ipywidgets.interactive`` widget (display it as a cell's last value). Without
    ipywidgets it says so, draws the static picture for the given values and returns None. An
    impossible setting (a kernel wider than the padded input) prints why instead of drawing.
    """
    plt = _plt()

    def show(size: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        try:
            out = conv_output_size(size, kernel, stride, padding, dilation)
        except ValueError as err:
            print(f"no output: {err}")
            return
        span = effective_kernel(kernel, dilation)
        print(f"output {out}x{out}; each output sees a {span}x{span} window of the padded input "
              f"(receptive field {span}); neighbouring outputs are {stride} pixel(s) apart")
        fig = conv_positions(size, kernel, stride, padding, dilation)
        plt.show()
        plt.close(fig)

    try:
        import ipywidgets as widgets
    except ImportError:
        print("ipywidgets is not installed (pip install ipywidgets for sliders); the static picture:")
        show(size, kernel, stride, padding, dilation)
        return None
    slider = lambda value, low, high, name: widgets.IntSlider(value=value, min=low, max=high, description=name,
                                                              continuous_update=False)
    return widgets.interactive(show, size=slider(size, 3, 9, "input"), kernel=slider(kernel, 1, 5, "kernel"),
                               stride=slider(stride, 1, 3, "stride"), padding=slider(padding, 0, 3, "padding"),
                               dilation=slider(dilation, 1, 3, "dilation"))


def zero_insertion(size: int = 3, stride: int = 2, kernel: int = 3, padding: int = 1, output_padding: int = 1):
    """A transposed conv as zero insertion + padding + ordinary conv: input pixels (blue), inserted
    zeros (white), implicit padding (grey)."""
    plt = _plt()
    pad = kernel - 1 - padding
    inner = stride * (size - 1) + 1
    n = inner + 2 * pad + output_padding
    fig, ax = plt.subplots(figsize=(4, 4))
    _grid(ax, n)
    for i in range(n):
        for j in range(n):
            inside = pad <= i < pad + inner and pad <= j < pad + inner
            if not inside:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="0.9"))
            elif (i - pad) % stride == 0 and (j - pad) % stride == 0:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color="tab:blue"))
    out = conv_output_size(size, kernel, stride, padding, transposed=True, output_padding=output_padding)
    ax.set_title(f"{size}x{size} input, stride {stride}: {stride - 1} zero(s) between pixels,\n"
                 f"pad {pad} (+{output_padding}), then a {kernel}x{kernel} conv -> {out}x{out}", fontsize=9)
    fig.tight_layout()
    return fig


def show_maps(maps: Sequence[np.ndarray], titles: Sequence[str], cmap: str = "viridis", boxes=None,
              colorbar: bool = False, size: float = 3.0, shared_scale: bool = False, label: str | None = None,
              title: str | None = None):
    """Arrays side by side as images. ``boxes``: optional (top, left, side) squares to outline, one per map.

    ``shared_scale``: one colour scale for all maps (so equal values look equal across panels, and a
    uniform map is drawn at its value, not at the bottom of its own scale), with one colorbar for the
    figure. ``colorbar`` alone gives each map its own. ``label`` names what the colour measures."""
    plt = _plt()
    per_map_bars = colorbar and not shared_scale
    # a colorbar per map carries its ticks and label to the right: constrained layout keeps them clear of
    # the next map (tight_layout does not count them)
    width = size * len(maps) + (0.8 if shared_scale else 0) + (0.9 * len(maps) if per_map_bars else 0)
    fig, axes = plt.subplots(1, len(maps), figsize=(width, size + 0.5), layout="constrained" if per_map_bars else None)
    axes = np.atleast_1d(axes)
    scale = {}
    if shared_scale:
        scale = dict(vmin=min(float(np.min(m)) for m in maps), vmax=max(float(np.max(m)) for m in maps))
    for k, (ax, m, t) in enumerate(zip(axes, maps, titles)):
        im = ax.imshow(m, cmap=cmap, interpolation="nearest", **scale)
        ax.set_title(t, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        if boxes is not None and boxes[k] is not None:
            top, left, side = boxes[k]
            ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), side, side, fill=False, ec="tab:red", lw=1.5))
        if per_map_bars:
            bar = fig.colorbar(im, ax=ax, fraction=0.046)
            if label:
                bar.set_label(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if not per_map_bars:
        fig.tight_layout()
    if shared_scale:
        bar = fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02)
        if label:
            bar.set_label(label, fontsize=8)
    return fig
