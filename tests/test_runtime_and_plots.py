import numpy as np
import pytest
import torch

from course_utils import get_device, plots
from course_utils.runtime import REPO_ROOT, figures_dir, figures_root, is_smoke


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_get_device_picks_the_first_available_of_cuda_mps_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert get_device() == get_device("auto") == torch.device(expected)


NEW_WHEEL = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]     # a CUDA 13 build: from Turing on
OLD_WHEEL = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def _card(monkeypatch, capability, archs, name="Tesla P100-PCIE-16GB"):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: archs)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.mark.parametrize("capability, archs, runs", [
    ((6, 0), NEW_WHEEL, False), ((7, 0), NEW_WHEEL, False),     # a P100, a V100: dropped by recent wheels
    ((6, 0), OLD_WHEEL, True), ((6, 1), OLD_WHEEL, True),       # sm_60 runs on 6.1: same major, lower minor
    ((7, 5), NEW_WHEEL, True), ((8, 9), NEW_WHEEL, True), ((12, 1), NEW_WHEEL, True),
    ((8, 9), ["sm_90"], False),                                 # sm_90 code does not run on an older 8.9
    ((10, 3), ["sm_75", "sm_90a", "compute_90"], True),         # PTX: the driver compiles it for newer cards
    ((9, 0), ["sm_80", "sm_90a"], True), ((10, 3), ["sm_90", "sm_100f"], True),   # suffixed codes
    ((10, 3), ["sm_90a", "sm_120"], False),
])
def test_a_card_runs_the_builds_code_of_its_major_version_or_its_ptx(monkeypatch, capability, archs, runs):
    from course_utils.runtime import cuda_build_lacks_card

    _card(monkeypatch, capability, archs)
    missing = cuda_build_lacks_card(0)
    assert (missing is None) == runs
    if not runs:
        assert f"has no GPU code for Tesla P100-PCIE-16GB (compute capability {capability[0]}.{capability[1]}; " \
               f"it was built for {' '.join(archs)}): install a PyTorch built for this card" in missing


def test_a_card_the_build_cannot_run_is_refused_by_name_and_skipped_by_auto(monkeypatch):
    """torch says CUDA is available and only warns; the first kernel would fail with "no kernel image is
    available". Asked for by name: a clear error with the fix. auto: the CPU, with a warning that says why."""
    from course_utils.runtime import cuda_build_lacks_card

    _card(monkeypatch, (6, 0), NEW_WHEEL)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"device '{name}' asked for, but this PyTorch .* has no GPU code for "
                                             r"Tesla P100.*; or use --device cpu"):
            get_device(name)
    with pytest.warns(UserWarning, match=r"has no GPU code for Tesla P100.*; training on the CPU meanwhile"):
        assert get_device("auto") == torch.device("cpu")
    _card(monkeypatch, (6, 0), OLD_WHEEL)
    assert get_device("cuda") == torch.device("cuda") and get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.version, "cuda", None)                    # ROCm, or a CPU build: nothing to ask
    assert cuda_build_lacks_card(0) is None
    _card(monkeypatch, (6, 0), NEW_WHEEL)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (_ for _ in ()).throw(RuntimeError("no driver")))
    assert cuda_build_lacks_card(0) is None                             # torch finds out at the first kernel


def test_get_device():
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu0'; use 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'"):
        get_device("tpu0")
    for other in ("xpu", "meta"):   # devices torch knows and the kit does not train on
        with pytest.raises(ValueError, match=f"device '{other}' is not one the kit trains on; use 'cpu', 'cuda', "
                                             "'cuda:N', 'mps' or 'auto'"):
            get_device(other)


def test_a_runs_folder_whose_parent_is_missing_is_refused_not_created(monkeypatch, tmp_path, capsys, image_folder):
    """COURSE_RUNS_DIR under a Google Drive that is not mounted: created, it would sit on the Colab
    runtime's own disk and vanish with it. Refused, with the fix; nothing is created; the CLI says so."""
    from course_utils.__main__ import main
    from course_utils.runtime import runs_dir

    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "drive" / "MyDrive" / "runs"))
    with pytest.raises(ValueError, match=r"COURSE_RUNS_DIR=.*runs: its parent folder .*MyDrive does not exist \(in "
                                         r"Colab: is Google Drive mounted\? drive.mount\('/content/drive'\)\); "
                                         r"create it, or unset COURSE_RUNS_DIR"):
        runs_dir()
    assert not (tmp_path / "drive").exists()
    assert main(["bench", "--quick", "--device", "cpu", "--data-dir", str(image_folder)]) == 1
    assert "is Google Drive mounted?" in capsys.readouterr().err and not (tmp_path / "drive").exists()
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    assert runs_dir() == tmp_path / "drive" / "MyDrive" / "runs" and runs_dir().is_dir()


def test_asking_for_a_missing_accelerator_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda' asked for, but CUDA is not available here; use --device cpu"):
        get_device("cuda")
    with pytest.raises(ValueError, match="'mps' asked for, but MPS is not available here"):
        get_device("mps")


def test_smoke_switch_and_figure_folder(monkeypatch):
    monkeypatch.delenv("COURSE_FIGURES_DIR")  # the default, not the tests' temporary folder
    assert not is_smoke() and figures_dir() == REPO_ROOT / "figures"
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert is_smoke() and figures_dir() == REPO_ROOT / "figures" / "smoke"


def test_figure_and_run_folders_can_be_moved(monkeypatch, tmp_path):
    from course_utils.runtime import runs_dir

    monkeypatch.delenv("COURSE_RUNS_DIR")  # the default first
    assert runs_dir() == REPO_ROOT / "runs"
    monkeypatch.setenv("COURSE_FIGURES_DIR", str(tmp_path / "figs"))
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path / "deep" / "runs"))
    (tmp_path / "deep").mkdir()        # its parent must exist (an unmounted Drive is refused: the test below)
    assert figures_dir() == tmp_path / "figs" and (tmp_path / "figs").is_dir()
    assert runs_dir() == tmp_path / "deep" / "runs" and runs_dir().is_dir()
    monkeypatch.setenv("COURSE_SMOKE", "1")
    assert figures_dir() == tmp_path / "figs" / "smoke"
    assert figures_root() == tmp_path / "figs"     # the recorded study is read from the folder itself


def test_confusion_matrix_and_per_class_accuracy():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 0, 2])
    m = plots.confusion_matrix(preds, labels, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert plots.per_class_accuracy(preds, labels, 3).tolist() == [50.0, 100.0, 50.0]
    with pytest.raises(ValueError, match="differ in shape"):
        plots.confusion_matrix(preds[:3], labels, 3)


def test_to_display_undoes_normalisation():
    img = np.random.default_rng(0).random((32, 32, 3))
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    chw = torch.from_numpy(((img - mean) / std).transpose(2, 0, 1))
    assert np.allclose(plots.to_display(chw, mean, std), img)


@pytest.mark.parametrize("affinity, cores, cuda, mps", [
    ({0, 1}, 2, 2, 2), (set(range(16)), 16, 8, 2), ({0}, 1, 1, 1),
    ({3, 5, 7, 9}, 64, 4, 2),          # a job pinned to 4 of a 64-core host's cores: 4 workers, not 8
    (None, 16, 8, 2), (None, None, 1, 1),   # no affinity to ask (macOS, Windows): the machine's cores, if known
])
def test_loader_workers(monkeypatch, affinity, cores, cuda, mps):
    """min(8, cores) on CUDA, min(2, cores) on MPS, none on a CPU; cores are those the process may use."""
    import os

    from course_utils.runtime import loader_workers, usable_cores

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if affinity is None:
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    else:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: affinity, raising=False)
    assert usable_cores() == (len(affinity) if affinity else cores or 1)
    assert loader_workers(torch.device("cpu")) == 0 and loader_workers(torch.device("cpu"), 3) == 3
    assert loader_workers(torch.device("cuda")) == cuda and loader_workers(torch.device("mps")) == mps


def test_conv_positions_draws_one_panel_per_position_up_to_max_side():
    from course_utils import diagrams

    assert len(diagrams.conv_positions(5, 3, 2, 1).axes) == 9                # 3x3 output
    fig = diagrams.conv_positions(9, 1, 1, 0, max_side=4)                     # 9x9 output, 4x4 drawn
    assert len(fig.axes) == 16 and "output 9x9 (the first 4x4 drawn)" in fig._suptitle.get_text()


@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning")
@pytest.mark.filterwarnings("ignore:.*cannot show the figure:UserWarning")
def test_conv_explorer_sliders_report_the_layer(capsys):
    from course_utils import diagrams

    explorer = diagrams.conv_explorer(size=5, kernel=3, stride=2, padding=1, dilation=1)
    sliders = {c.description: c for c in explorer.children[:5]}
    assert set(sliders) == {"input", "kernel", "stride", "padding", "dilation"}
    capsys.readouterr()
    sliders["dilation"].value = 2          # a change redraws: 5 + 2 - 5 = 2 -> 2 // 2 + 1 = 2
    assert "output 2x2; each output sees a 5x5 window" in capsys.readouterr().out
    sliders["padding"].value = 0           # span 5 on a 5-pixel input: one position
    assert "output 1x1" in capsys.readouterr().out
    sliders["input"].value = 3             # span 5 does not fit a 3-pixel input
    assert "no output:" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*non-interactive:UserWarning")
@pytest.mark.filterwarnings("ignore:.*cannot show the figure:UserWarning")
def test_conv_explorer_without_ipywidgets_draws_the_static_picture(monkeypatch, capsys):
    import sys

    from course_utils import diagrams

    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    assert diagrams.conv_explorer(size=5, kernel=3, stride=1, padding=1) is None
    out = capsys.readouterr().out
    assert "ipywidgets is not installed" in out and "output 5x5" in out


@pytest.mark.parametrize("n", [10, 20, 30])
def test_misclassified_grid_titles_say_true_then_predicted_and_clear_the_figure_title(n):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=200)
    preds = (labels + 1) % 10
    preds[:50] = labels[:50]                                     # 150 wrong
    classes = [f"class{i}" for i in range(10)]
    fig = plots.misclassified_grid(images, preds, labels, classes, n=n)
    fig.canvas.draw()
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == n
    ax = titled[0]
    i = next(k for k in range(200) if ax.get_title() == f"{classes[labels[k]]}\n→ {classes[preds[k]]}")
    assert preds[i] != labels[i]
    assert fig._suptitle.get_text() == f"{n} of the 150 misclassified test images (true → predicted)"
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    assert all(not top.overlaps(a.title.get_window_extent(renderer)) for a in titled)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_show_maps_keeps_each_colorbar_label_clear_of_the_next_map():
    import matplotlib.pyplot as plt

    from course_utils import diagrams

    from course_utils.layers import ResizeConvUpsample, TransposedUpsample

    # notebook 05's figure, whose middle colorbar label once ran into the third map
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    smooth = torch.exp(-(xx ** 2 + yy ** 2) * 2)[None, None].repeat(1, 8, 1, 1)
    torch.manual_seed(1)
    with torch.no_grad():
        maps = [smooth[0, 0].numpy(), TransposedUpsample(8, 1, 2, kernel_size=3)(smooth)[0, 0].numpy(),
                ResizeConvUpsample(8, 1, 2)(smooth)[0, 0].numpy()]
    fig = diagrams.show_maps(maps, ["input 16x16", "transposed k=3", "resize + conv"], cmap="gray", colorbar=True,
                             label="output value", title="three maps, a colour scale each")
    fig.canvas.draw()                                            # lay out the labels as a saved figure would
    renderer = fig.canvas.get_renderer()
    panels, bars = fig.axes[:3], fig.axes[3:]
    assert len(bars) == 3 and all(b.get_ylabel() == "output value" for b in bars)
    for bar, nxt in zip(bars, panels[1:]):
        assert bar.yaxis.label.get_window_extent(renderer).x1 < nxt.get_window_extent(renderer).x0
    plt.close(fig)


def test_kernel_taps_draws_the_weights_and_the_span_of_each_dilation():
    import matplotlib.pyplot as plt

    from course_utils import diagrams

    fig = diagrams.kernel_taps(size=9, kernel=3, dilations=(1, 2, 3))
    assert "3x3 kernel" in fig._suptitle.get_text() and "dashed" in fig._suptitle.get_text()
    for ax, d in zip(fig.axes, (1, 2, 3), strict=True):   # one panel per dilation, none left unchecked
        span = 2 * d + 1
        assert ax.get_title() == f"3x3, dilation {d}\nspans {span}x{span}, 9 weights"
        taps = [p for p in ax.patches if p.get_fill() and p.get_width() == 1]
        dashed = [p for p in ax.patches if not p.get_fill()]
        assert len(taps) == 9 and [(p.get_width(), p.get_height()) for p in dashed] == [(span, span)]
        xs = sorted({p.get_x() for p in taps})
        assert [b - a for a, b in zip(xs, xs[1:])] == [d, d]          # the taps sit d pixels apart
    plt.close(fig)


def test_cpu_name_reads_the_model_name_and_the_kernels_vector_instructions(tmp_path, monkeypatch):
    from course_utils.runtime import cpu_name, device_name

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu avx2\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B45\n")
    assert cpu_name(info) == "AMD EPYC 9B45 (AVX512)"
    monkeypatch.setattr("platform.processor", lambda: "")
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert cpu_name(tmp_path / "missing") == "aarch64 (AVX512)"        # no /proc/cpuinfo (macOS, Windows)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA T4")
    assert device_name("cuda:0") == "NVIDIA T4" and device_name("mps") == "mps"


def test_the_grids_draw_a_single_row_or_column():
    """One image per class, or one image previewed: matplotlib squeezes a single row of axes, which the
    grids index in two dimensions (an IndexError before)."""
    import albumentations as A

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 10
    fig = plots.sample_grid(images, labels, [f"c{i}" for i in range(10)], per_class=1)
    assert sum(bool(ax.images) for ax in fig.axes) == 10
    flip = A.ReplayCompose([A.HorizontalFlip(p=1.0)])
    fig = plots.augmentation_preview(images, flip, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), n_images=1, n_draws=3)
    assert sum(bool(ax.images) for ax in fig.axes) == 4
