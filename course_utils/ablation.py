"""The ablation study: what does each idea of CifarNet buy, and how sure can we be?

Every variant is CifarNet with **one** factor changed (``Variant.factor``) and stays within ±5% of its
parameters (widths adjusted where a factor would otherwise change them, and said so in its question):

* downsampling: stride-2 conv (the reference) / 3×3 conv + 2×2 max-pool / dilated (d=2) stride-2 conv;
* convolution: depthwise-separable C3/C4 (the reference) / standard 3×3 convs, narrowed to the budget;
* attention: none (the reference) / SE (Hu et al. 2018) / ECA (Wang et al. 2020) / CBAM (Woo et al. 2018);
* augmentation: all three (the reference) / none / flip alone / shift-scale-rotate alone / coarse dropout alone.

Each (variant, seed) is one run of the ablation recipe (``ABLATION_RECIPE``) on the training set minus
the validation split; its row holds the final epoch's validation and test accuracy (the test set read
once, at the end), parameters, MACs, receptive field and training throughput. ``summarize`` gives the
mean and standard deviation over seeds. Runs are checkpointed under ``runs/ablation/``: a finished run
is read back, an interrupted one resumed, so the study can be spread over several sittings.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import plots
from .config import TrainConfig
from .checkpoint import atomic_write_text
from .data import CIFAR10Data
from .experiment import size_name, split, train
from .inspection import count_macs, receptive_field
from .models import CifarNet, CifarNetConfig, count_parameters
from .runtime import device_name, figures_dir, is_smoke, runs_dir, shown_path

#: The recipe of every ablation run: the course recipe (progressive resizing included), shortened. Ten
#: variants besides the reference, three seeds each, must fit one working session of a 2-core CPU in
#: the background (see README, "Ablation"), so each run is short; the comparison is between variants
#: trained identically, not a claim about their final accuracy.
ABLATION_EPOCHS = 4
ABLATION_SEEDS = (1, 2, 3)

AUGMENTATION = ("flip_p", "affine_p", "dropout_p")   # the recipe's augmentation probabilities
#: The factors a variant may change, and the settings that belong to each.
FACTORS = {
    "downsampling": {"downsample"},
    "convolution": {"separable", "c3", "c4"},   # standard convs need narrower stages to stay in budget
    "attention": {"attention"},
    "augmentation": set(AUGMENTATION),
}
PARAMETER_TOLERANCE = 0.05
#: Where ``python -m course_utils ablate`` writes its rows (in ``runtime.figures_dir()``): all runs of a
#: finished study, and the finished runs of one still under way.
RUNS_CSV, PARTIAL_CSV, SUMMARY_CSV = "09_ablation_runs.csv", "09_ablation_runs.partial.csv", "09_ablation_summary.csv"
TIME_JSON = "09_ablation_time.json"   # the wall-clock time of the call that finished the study (record_time)


class StudyMismatchError(ValueError):
    """Runs of two different studies (other epochs, another number of training images or another crop
    phase) would be mixed in one table."""


class StudyFileError(ValueError):
    """A recorded study's CSV that cannot be read back as run rows (a merge conflict left in it, a column
    missing, a number that is not one)."""


@dataclass(frozen=True)
class Variant:
    """CifarNet with one factor changed. ``model`` overrides ``CifarNetConfig`` fields; ``augment``
    overrides the recipe's augmentation probabilities (``flip_p``, ``affine_p``, ``dropout_p``)."""

    name: str
    factor: str                 # "reference" or one of FACTORS
    question: str
    model: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)

    def build(self) -> CifarNet:
        return CifarNet(replace(CifarNetConfig(), **self.model))

    def config(self, base: TrainConfig) -> TrainConfig:
        return replace(base, **self.augment)


def _alone(name: str) -> dict:
    """Augmentation with only ``name`` switched on, at the reference's probability."""
    reference = TrainConfig()
    return {k: (getattr(reference, k) if k == name else 0.0) for k in AUGMENTATION}


VARIANTS: tuple[Variant, ...] = (
    Variant("reference", "reference", "CifarNet as built: stride-2 downsampling, separable C3/C4, no attention, "
            "flip + shift-scale-rotate + coarse dropout"),
    Variant("maxpool", "downsampling", "3x3 conv + 2x2 max-pool instead of each stride-2 conv (same weights; "
            "the conv before the pool runs at the higher resolution)", model={"downsample": "maxpool"}),
    Variant("dilated-stride", "downsampling", "a dilated (d=2) stride-2 conv instead of each plain one (same "
            "weights, a wider field)", model={"downsample": "dilation"}),
    Variant("standard-conv", "convolution", "standard 3x3 convs in C3/C4 instead of depthwise-separable ones; "
            "C3/C4 narrowed from 112/224 to 38/76 channels to keep the parameter budget",
            model={"separable": False, "c3": 38, "c4": 76}),
    Variant("se", "attention", "squeeze-and-excitation after each residual body (widths unchanged)",
            model={"attention": "se"}),
    Variant("eca", "attention", "efficient channel attention after each residual body (widths unchanged)",
            model={"attention": "eca"}),
    Variant("cbam", "attention", "CBAM (channel, then spatial attention) after each residual body (widths "
            "unchanged)", model={"attention": "cbam"}),
    Variant("no-augmentation", "augmentation", "none of the three transforms (the recipe's random 24x24 crops stay)", augment=dict.fromkeys(AUGMENTATION, 0.0)),
    Variant("flip-only", "augmentation", "horizontal flip alone", augment=_alone("flip_p")),
    Variant("affine-only", "augmentation", "shift-scale-rotate alone", augment=_alone("affine_p")),
    Variant("dropout-only", "augmentation", "the 16x16 coarse-dropout hole alone", augment=_alone("dropout_p")),
)


def ablation_config(epochs: int | None = None, **overrides) -> TrainConfig:
    """The ablation recipe: the course recipe at ``ABLATION_EPOCHS`` epochs (its first
    ``crop_fraction`` of them on random crops, as in the course recipe), smoke-sized when
    ``COURSE_SMOKE=1``; then ``overrides``."""
    config = TrainConfig.for_environment("course")
    if config.train_per_class is None:  # not smoke mode
        config = replace(config, epochs=ABLATION_EPOCHS)
    return replace(config, **{k: v for k, v in dict(epochs=epochs, **overrides).items() if v is not None})


def crop_setup(config: TrainConfig) -> tuple[int, int]:
    """(crop size, crop epochs) of a study's recipe: (0, 0) for whole images throughout."""
    return (config.crop_size or 0, config.crop_epochs) if config.crop_epochs else (0, 0)


def crop_words(crop_size: int, crop_epochs: int, whole: str = "") -> str:
    """How a study's crop phase reads in its titles and messages: `` (3 of them on 24x24 crops)``,
    or ``whole`` for a study on whole images throughout."""
    return f" ({crop_epochs} of them on {crop_size}x{crop_size} crops)" if crop_epochs else whole


def run_folder(config: TrainConfig, folder: Path | None = None) -> Path:
    """Where the runs of one ablation live: one folder per data size, number of epochs and crop phase,
    so a smoke study never mixes with a full one or a ``--subset`` one (``experiment.size_name``), nor a study
    on crops with one on whole images."""
    size = size_name(config)
    crop_size, crop_epochs = crop_setup(config)
    crops = f"-crop{crop_size}x{crop_epochs}" if crop_epochs else ""
    return (folder or runs_dir() / "ablation") / f"{size}-e{config.epochs}{crops}"


def distinct(variants: tuple[Variant, ...], seeds: tuple[int, ...]) -> tuple[tuple[Variant, ...], tuple[int, ...]]:
    """The study's variants (by name) and seeds, each once, in the order first given: a variant or seed
    named twice is planned and run once."""
    return tuple({v.name: v for v in variants}.values()), tuple(dict.fromkeys(seeds))


def run_ablation(data: CIFAR10Data, config: TrainConfig, device: torch.device | str,
                 variants: tuple[Variant, ...] = VARIANTS, seeds: tuple[int, ...] = ABLATION_SEEDS,
                 folder: Path | None = None, progress: bool = False, log=print,
                 known_rows: list[dict] = (), on_row=None, jobs: int = 1) -> list[dict]:
    """Train every (variant, seed) with ``config`` and return one row each, in order.

    A run whose record is in ``folder``, or whose row is in ``known_rows`` (rows read back from a
    committed CSV, of the same network: same parameters), is not trained again; a run
    with only a checkpoint (interrupted) is resumed from it. An interruption (Ctrl-C) stops the study
    after the current run's (or runs') last complete epoch; running it again picks up from there. ``on_row``, if
    given, is called with the rows so far after every newly finished run (the CLI writes them to a CSV,
    so that a study killed outright still leaves its finished runs to commit).

    ``jobs`` > 1 trains that many runs at a time, each in its own process with an equal share of
    PyTorch's CPU threads (``torch.get_num_threads() // jobs``, at least 1). On a CPU with few cores
    that gets more epochs per minute out of them than one run using every thread (a single small
    network does not keep them all busy); each run's ``train_seconds`` then counts its own wall-clock
    time, shared cores included, so the runs' sum exceeds the study's wall-clock time.

    On a GPU ``jobs`` must be 1: runs side by side would share one card (and each start its own loader
    workers), which times them against each other and gains nothing a larger batch would not.

    Raises ``StudyMismatchError``, before training anything, if ``known_rows`` hold runs of other epochs,
    another number of training images or another crop phase: such a study belongs in its own figures
    folder. A variant or seed named twice is run once.
    """
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a whole number of runs at a time (1 or more), got {jobs!r}")
    if jobs > 1 and torch.device(device).type != "cpu":
        raise ValueError(f"jobs={jobs} runs side by side share one {torch.device(device).type} device and slow each "
                         "other down; use jobs=1 there (--jobs is for splitting a CPU's cores)")
    variants, seeds = distinct(variants, seeds)
    known = {(r["variant"], int(r["seed"])): typed_row(r) for r in known_rows}
    train_images = int(len(split(data, config).train_labels)) if known else None
    _check_one_study(list(known.values()), (config.epochs, train_images, *crop_setup(config)))  # before training
    device = torch.device(device)
    folder = run_folder(config, folder)
    folder.mkdir(parents=True, exist_ok=True)
    done, todo = {}, []   # rows of finished runs by (variant, seed); runs to train, in the study's order
    for v in variants:
        parameters = count_parameters(v.build()) if known else None
        for seed in seeds:
            record = folder / f"{v.name}-s{seed}.json"
            row = known.get((v.name, seed))
            if row is not None and row["parameters"] == parameters:  # the same network (same setup: checked above)
                done[v.name, seed], how = row, "  (done before, from the CSV)"
            elif record.is_file():
                done[v.name, seed], how = json.loads(record.read_text()), "  (done before)"
            else:
                todo.append((v, seed))
                continue
            if log:
                log(_row_line(done[v.name, seed]) + how)
    order = [(v.name, seed) for v in variants for seed in seeds]

    def finished(row: dict) -> None:
        done[row["variant"], row["seed"]] = row
        if on_row:
            on_row([done[k] for k in order if k in done])
        if log:
            log(_row_line(row))

    if jobs == 1 or len(todo) <= 1:
        for v, seed in todo:
            row = _run_and_record(v, seed, data, config, device, folder, progress, log)
            if row is None:
                break
            finished(row)
    else:
        _run_in_processes(todo, jobs, data, config, device, folder, log, finished)
    return [done[k] for k in order if k in done]


def _run_and_record(v: Variant, seed: int, data: CIFAR10Data, config: TrainConfig, device: torch.device,
                    folder: Path, progress: bool = False, log=None) -> dict | None:
    """Train (or resume) one run of the study and write its record; its row, or None if interrupted."""
    run = _train_run(v, seed, data, config, device, folder, progress)
    model, history, run_data = run.model, run.history, run.data
    if history.interrupted:
        if log:
            log(f"{v.name} seed {seed}: interrupted after {len(history)} epoch(s); run again to resume")
        return None
    crop_size, crop_epochs = crop_setup(config)
    row = {
        "variant": v.name, "factor": v.factor, "seed": seed,
        "parameters": count_parameters(model), "macs": count_macs(model),
        "receptive_field": receptive_field(model).final,
        "final_val_acc": round(history.final_val_acc, 2), "final_test_acc": round(history.final_test_acc, 2),
        "images_per_s": round(history.images_per_second(len(run_data.train_labels)), 1),
        "train_seconds": round(sum(history.seconds), 1),
        "epochs": len(history), "train_images": int(len(run_data.train_labels)), "device": str(device),
        "crop_size": crop_size, "crop_epochs": crop_epochs,
    }
    atomic_write_text(json.dumps(row, indent=1), folder / f"{v.name}-s{seed}.json")
    return row


_WORKER: dict = {}


def _start_worker(threads: int, data: CIFAR10Data, stop) -> None:
    import signal

    torch.set_num_threads(threads)
    _WORKER["data"] = data
    _WORKER["stop"] = stop   # the study's stop event: set, no further run starts in this worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # an idle worker ignores Ctrl-C; a training one stops


def _interrupt_once(signum, frame):
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # one interruption is enough: let fit save its epoch
    raise KeyboardInterrupt


def _worker_run(v: Variant, seed: int, config: TrainConfig, device: str, folder: str) -> dict | None:
    import signal

    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        if _WORKER["stop"].is_set():   # a run handed to this worker before the study stopped
            return None
        return _run_and_record(v, seed, _WORKER["data"], config, torch.device(device), Path(folder))
    except KeyboardInterrupt:   # Ctrl-C outside fit's epochs (fit itself saves its last epoch and returns)
        return None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt(others: set, stop) -> None:
    """Stop the pool's running runs as Ctrl-C would (each keeps its last complete epoch), or end them.
    The pool's workers are this process's live children that are not in ``others`` (its children
    before the pool started): ``multiprocessing.active_children()`` is the public way to see them.
    ``stop`` (the workers' shared event) is set first: a run already handed to the pool but not yet
    started (its worker was still starting, or died starting, so another worker takes it after its own
    run stops) then returns at once instead of training to the end after the interrupt."""
    import multiprocessing
    import os
    import signal

    stop.set()
    for process in set(multiprocessing.active_children()) - others:
        if process.is_alive():
            try:
                os.kill(process.pid, signal.SIGINT)
            except (OSError, ValueError):   # a platform without SIGINT for other processes
                process.terminate()


def threads_per_run(jobs: int) -> int:
    """PyTorch CPU threads for each of ``jobs`` runs trained side by side: this process's share, at least 1."""
    return max(1, torch.get_num_threads() // jobs)


def _run_in_processes(todo: list, jobs: int, data: CIFAR10Data, config: TrainConfig, device: torch.device,
                      folder: Path, log, finished) -> None:
    """``run_ablation``'s ``jobs`` > 1: the runs of ``todo`` in a pool of ``jobs`` processes (started
    fresh, so no thread pool is inherited), ``finished`` called in this process as each one ends. Only
    ``jobs`` runs are handed out at a time, so an interruption or an error stops the study at once:
    the runs still training are interrupted (they keep their last complete epoch), none is started."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = threads_per_run(jobs)
    if log:
        log(f"{len(todo)} runs to train, {jobs} at a time, {threads} thread(s) each")
    queue = list(todo)
    others = set(multiprocessing.active_children())   # so that only the pool's workers are interrupted
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                               initializer=_start_worker, initargs=(threads, data, stop))

    def submit():
        v, seed = queue.pop(0)
        return pool.submit(_worker_run, v, seed, config, str(device), str(folder))

    stopped = False
    try:
        running = {submit() for _ in range(min(jobs, len(queue)))}
        while running:
            ended, running = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                row = future.result()            # a run's error is raised here (the others are stopped first)
                if row is None:                  # interrupted: start no more, let the others stop too
                    stopped = True
                    continue
                finished(row)
                if queue and not stopped:
                    running.add(submit())
            if stopped and running:
                _interrupt(others, stop)
    except KeyboardInterrupt:   # in a notebook the workers do not see the kernel's interrupt: pass it on
        stopped = True
        if log:
            log("interrupted: the running runs keep their last complete epoch; run again to resume")
        _interrupt(others, stop)
    except BaseException:
        _interrupt(others, stop)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if stopped and log:
        log("stopped before the end; run again to resume")


def _train_run(v: Variant, seed: int, data: CIFAR10Data, config: TrainConfig, device: torch.device,
               folder: Path, progress: bool, log=None):
    """Train (or resume, or read back from a finished checkpoint) one (variant, seed) of the study in
    ``folder``: the one place that names a run's checkpoint and its configuration. ``log`` gets the
    epoch lines (None: silent, as the study prints one row per run)."""
    return train(v.build, data, replace(v.config(config), seed=seed), device,
                 checkpoint=folder / f"{v.name}-s{seed}.pt", resume=True, progress=progress, log=log)


_INTS = ("seed", "parameters", "macs", "receptive_field", "epochs", "train_images", "crop_size", "crop_epochs")
_FLOATS = ("final_val_acc", "final_test_acc", "images_per_s", "train_seconds")


def typed_row(row: dict) -> dict:
    """A run row read from a CSV (all strings) with its numbers as numbers again. Rows recorded before
    the ablation could train on crops have no crop columns: they were whole-image runs (crop 0, 0)."""
    row = {**row, "crop_size": row.get("crop_size", 0), "crop_epochs": row.get("crop_epochs", 0)}
    return {k: int(v) if k in _INTS else float(v) if k in _FLOATS else v for k, v in row.items()}


def recorded_rows(folder: Path | None = None) -> list[dict]:
    """The run rows the study has recorded so far (``figures/``, or ``figures/smoke/`` in smoke mode):
    ``09_ablation_runs.csv`` of a finished study and ``09_ablation_runs.partial.csv`` of an unfinished
    one. Passed to ``run_ablation`` as ``known_rows``, they spare a fresh clone the hours of training."""
    folder = folder or figures_dir()
    return [row for name in (RUNS_CSV, PARTIAL_CSV) if (folder / name).is_file() for row in read_runs(folder / name)]


_CONFLICT_MARKS = ("<<<<<<<", "=======", ">>>>>>>")
_RUN_COLUMNS = ("variant", "factor", "device") + _INTS[:-2] + _FLOATS   # crop columns may be absent (typed_row)
_ALL_COLUMNS = set(_RUN_COLUMNS) | {"crop_size", "crop_epochs"}


def read_runs(path: str | Path) -> list[dict]:
    """The run rows of a recorded study's CSV, each checked to read back as the study's rows
    (``typed_row``). Raises ``StudyFileError`` naming the file, the line and the fix when they do not:
    a git merge left its conflict markers in it, a column is missing or unknown, a line has too many or
    too few fields, or a value is not a number (a whole one where the column counts)."""
    path = Path(path)
    where = shown_path(path)
    fix = (f"Restore the committed copy (git checkout HEAD -- {where}), or, if no copy is right, move the file "
           "away: its runs are then trained again")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:   # -sig: a spreadsheet's byte-order mark
            text = f.read()
    except UnicodeDecodeError as err:
        raise StudyFileError(f"{where} is not a text CSV ({err.reason} at byte {err.start}). {fix}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(_CONFLICT_MARKS):
            raise StudyFileError(
                f"{where} line {number} is a merge-conflict marker ({line[:7]}): a git merge left both versions of "
                "the study in it. Keep the runs of both: delete the lines that start with <<<<<<<, ======= and "
                ">>>>>>> (and a second header line, if any); a run recorded on both sides is then read once, the "
                "later row winning. Then commit the file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, lines = [], []
    try:
        for row in reader:
            rows.append(row)
            lines.append(reader.line_num)   # the file's line, blank lines and quoted line breaks counted
    except csv.Error as err:
        raise StudyFileError(f"{where} line {reader.line_num} is not readable CSV ({err}). {fix}") from None
    header = reader.fieldnames or []
    missing = [c for c in _RUN_COLUMNS if c not in header]
    unknown = [c for c in header if c not in _ALL_COLUMNS]
    if not rows or missing or unknown:
        what = ("has no run rows" if not rows else f"lacks the column(s) {', '.join(missing)}" if missing
                else f"has column(s) the study does not write ({', '.join(unknown)})")
        raise StudyFileError(f"{where} {what}, so it is not a run table of the ablation. {fix}")
    for number, row in zip(lines, rows):
        if None in row:   # DictReader files the fields beyond the header under the key None
            raise StudyFileError(f"{where} line {number} has more fields than the header names. {fix}")
        bad = next((k for k in _INTS + _FLOATS if k in row and not _is_number(row[k], whole=k in _INTS)), None)
        if bad:
            kind = "a whole number" if bad in _INTS else "a number"
            short = " (the line has too few fields)" if row[bad] is None else ""
            raise StudyFileError(f"{where} line {number}: {bad} is {row[bad]!r}, not {kind}{short}. {fix}")
    return rows


def _is_number(value, whole: bool = False) -> bool:
    try:
        (int if whole else float)(value)
        return True
    except (TypeError, ValueError):
        return False


def merge_rows(*groups: list[dict]) -> list[dict]:
    """One row per (variant, seed) from ``groups`` of rows (CSV or run rows), a later group's row
    replacing an earlier one's, in the study's order (``VARIANTS``, then seed)."""
    order = {v.name: i for i, v in enumerate(VARIANTS)}
    table = {(r["variant"], int(r["seed"])): r for group in groups for r in group}
    return [table[k] for k in sorted(table, key=lambda k: (order.get(k[0], len(order)), k[1]))]


def _study_setup(row: dict) -> tuple[int, int, int, int]:
    row = typed_row(row)
    return row["epochs"], row["train_images"], row["crop_size"], row["crop_epochs"]


def _setup_words(setup: tuple[int, ...]) -> str:
    epochs, images, crop_size, crop_epochs = setup
    crops = crop_words(crop_size, crop_epochs, whole=" (whole images)")
    return f"{epochs} epochs{crops} on {images:,} training images" if images is not None else f"{epochs} epochs{crops}"


def _check_one_study(rows: list[dict], setup: tuple, this: str = "this one would run") -> None:
    """Raise ``StudyMismatchError`` unless every row is of ``setup`` (epochs, training images, crop size,
    crop epochs); ``setup``'s training images may be None when no row is given."""
    alien = sorted({_study_setup(r) for r in rows} - {setup})
    if alien:
        raise StudyMismatchError(
            f"the recorded study is an ablation of {_setup_words(alien[0])}; {this} {_setup_words(setup)}, and "
            "the two are not mixed. Set COURSE_FIGURES_DIR to another folder for this study's CSVs and figure "
            "(e.g. COURSE_FIGURES_DIR=figures/my-ablation), then run it again.")


def record_study(rows: list[dict], complete: bool, folder: Path | None = None) -> dict:
    """Write the study to ``folder`` (``runtime.figures_dir()``): ``rows`` (the runs of this sitting)
    merged with the runs already recorded there, which are kept, never dropped (``merge_rows``).

    ``complete=False`` (a study stopped before its last run): ``09_ablation_runs.partial.csv`` only,
    to commit and carry on from. ``complete=True``: ``09_ablation_runs.csv``, ``09_ablation_summary.csv``
    and the figure ``09_ablation.png``, and the partial CSV is removed. The figure's title names the
    epochs, data size, seeds per variant and the devices the runs were trained on, read from the rows
    (a later sitting elsewhere that only reads them back does not relabel them).

    Returns the ``study`` rows, the number of recorded runs ``kept`` that ``rows`` did not cover, the
    ``files`` written (none when there is no run at all) and, when complete, the ``summary`` and the
    figure's ``title``. Raises ``StudyMismatchError`` if ``rows`` and the recorded runs are of
    different epochs, data sizes or crop phases.
    """
    folder = folder or figures_dir()
    recorded = [typed_row(r) for r in recorded_rows(folder)]
    rows = [typed_row(r) for r in rows]
    if rows:
        _check_one_study(recorded + rows, _study_setup(rows[0]), "these runs are of")
    study = merge_rows(recorded, rows)
    if not study:
        return {"study": [], "summary": None, "kept": 0, "files": []}
    kept = len(study) - len({(r["variant"], int(r["seed"])) for r in rows})
    partial = folder / PARTIAL_CSV
    if not complete:
        return {"study": study, "summary": None, "kept": kept, "files": [write_csv(study, partial)]}
    summary = summarize(study)
    files = [write_csv(study, folder / RUNS_CSV), write_csv(summary, folder / SUMMARY_CSV)]
    partial.unlink(missing_ok=True)
    r, seeds = summary[0], "/".join(map(str, sorted({s["seeds"] for s in summary})))
    devices = "/".join(sorted({str(row["device"]) for row in study}))
    title = (f"{r['epochs']} epochs{crop_words(r['crop_size'], r['crop_epochs'])} on {r['train_images']:,} images, "
             f"{seeds} seeds per variant, {devices}" + (" (smoke mode)" if is_smoke() else ""))
    fig = plot_ablation(summary, title)
    files.append(plots.save(fig, "09_ablation", folder=folder))
    return {"study": study, "summary": summary, "kept": kept, "files": files, "title": title}


def variant(name: str) -> Variant:
    """The ablation variant called ``name``; a clear error for any other name."""
    for v in VARIANTS:
        if v.name == name:
            return v
    raise ValueError(f"unknown ablation variant {name!r}; choose from {', '.join(v.name for v in VARIANTS)}")


def trained_model(name: str, data: CIFAR10Data, config: TrainConfig, device: torch.device | str,
                  seed: int = ABLATION_SEEDS[0], folder: Path | None = None, progress: bool = False, log=print):
    """The trained network of one ablation run (variant ``name``, ``seed``), in eval mode: read from
    the run's checkpoint when the study has finished it, else trained now exactly as the study trains
    it (and checkpointed there, so that the study reads it back instead of training it again).
    Notebook 07 looks inside the attention variants this way. ``log`` gets a line naming the run, then
    one per epoch, read back or trained (minutes of them on a CPU: a cell that trains says so as it
    goes); None for silence."""
    folder = run_folder(config, folder)
    folder.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"{name}, seed {seed}: {config.epochs} epoch{'s' * (config.epochs != 1)}{crop_words(*crop_setup(config))}")
    run = _train_run(variant(name), seed, data, config, torch.device(device), folder, progress, log)
    if run.history.interrupted:
        raise KeyboardInterrupt(f"training of {name} (seed {seed}) was interrupted; run again to resume it")
    return run.model.eval()


def _row_line(row: dict) -> str:
    return (f"{row['variant']:<16} seed {row['seed']}  {row['parameters']:>8,} params  {row['macs'] / 1e6:5.1f} M MACs  "
            f"RF {row['receptive_field']:3d}  val {row['final_val_acc']:6.2f}%  test {row['final_test_acc']:6.2f}%  "
            f"{row['images_per_s']:6.0f} img/s  {row['train_seconds'] / 60:5.1f} min")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarize(rows: list[dict]) -> list[dict]:
    """One row per variant (in the order first seen): seeds, mean and sample standard deviation of the
    final validation and test accuracy, and the model's parameters, MACs, receptive field and mean
    training images/s."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        val_mean, val_std = _mean_std([float(r["final_val_acc"]) for r in mine])
        test_mean, test_std = _mean_std([float(r["final_test_acc"]) for r in mine])
        first = typed_row(mine[0])
        out.append({
            "variant": name, "factor": first["factor"], "seeds": len(mine),
            "val_mean": round(val_mean, 2), "val_std": round(val_std, 2),
            "test_mean": round(test_mean, 2), "test_std": round(test_std, 2),
            "parameters": int(first["parameters"]), "macs": int(first["macs"]),
            "receptive_field": int(first["receptive_field"]),
            "images_per_s": round(statistics.fmean(float(r["images_per_s"]) for r in mine), 1),
            "epochs": int(first["epochs"]), "train_images": int(first["train_images"]), "device": first["device"],
            "crop_size": first["crop_size"], "crop_epochs": first["crop_epochs"],
        })
    return out


def compare_to_reference(rows: list[dict], key: str = "final_val_acc", reference: str = "reference") -> list[dict]:
    """Each variant's seeds against the reference's, on ``key`` (validation by default): the gap of the
    means, both ranges (lowest and highest seed), and the verdict a reader may draw with this few
    seeds: ``"above"`` or ``"below"`` when every seed of the variant lies beyond every seed of the
    reference, ``"overlap"`` (no finding) when the ranges overlap, ``"too few seeds"`` when either
    side has fewer than two."""
    values: dict[str, list[float]] = {}
    for r in rows:
        values.setdefault(r["variant"], []).append(float(r[key]))
    if reference not in values:
        raise ValueError(f"no {reference!r} runs among the rows: the comparison needs the reference's seeds")
    ref = values[reference]
    out = []
    for name, mine in values.items():
        if name == reference:
            continue
        verdict = ("too few seeds" if min(len(mine), len(ref)) < 2 else "above" if min(mine) > max(ref)
                   else "below" if max(mine) < min(ref) else "overlap")
        out.append({"variant": name, "seeds": len(mine), "gap": round(statistics.fmean(mine) - statistics.fmean(ref), 2),
                    "low": min(mine), "high": max(mine), "ref_low": min(ref), "ref_high": max(ref), "verdict": verdict})
    return out


def total_cpu_minutes(rows: list[dict]) -> float:
    """Training time of all the runs, in minutes (evaluation included): each run's own clock, summed.
    Runs trained side by side (``jobs`` > 1) overlap, so this is more than the study's wall-clock time
    (``record_time``)."""
    return sum(float(r["train_seconds"]) for r in rows) / 60


def record_time(rows: list[dict], wall_seconds: float, jobs: int, device: torch.device | str, trained: int,
                folder: Path | None = None) -> Path:
    """Write ``09_ablation_time.json`` beside the study's CSVs: how long the call that finished the
    study took on the clock (``wall_seconds``), how many of its runs it trained (``trained``; the rest
    were read back), ``jobs`` at a time with ``threads_per_run(jobs)`` threads each, on which device,
    and the runs' summed training time. The README's cost of the study quotes this record."""
    record = {
        "runs": len(rows), "runs_trained_in_this_call": trained, "jobs": jobs, "threads_per_run": threads_per_run(jobs),
        "device": str(device), "device_name": device_name(device),
        "wall_minutes": round(wall_seconds / 60, 1), "summed_run_minutes": round(total_cpu_minutes(rows), 1),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
    }
    return atomic_write_text(json.dumps(record, indent=1) + "\n", (folder or figures_dir()) / TIME_JSON)


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """``rows`` as a CSV file, written atomically (a study killed while writing keeps its last CSV)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(text.getvalue(), path)


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_ablation(summary: list[dict], title: str = ""):
    """Validation and test accuracy (mean ± standard deviation over seeds), parameters, MACs and
    receptive field of each variant, side by side; the reference in orange. Not the runs' images/s:
    runs that share the cores with other work are slowed at random, so speed is measured apart
    (``benchmark.relative_throughput``, in notebook 09)."""
    import matplotlib.pyplot as plt

    names = [f"{r['variant']} ({r['factor']})" if r["factor"] != "reference" else r["variant"] for r in summary]
    fig, axes = plt.subplots(1, 4, figsize=(15, 0.42 * len(summary) + 1.6), sharey=True)
    ys = range(len(summary))
    colors = ["tab:orange" if r["factor"] == "reference" else "tab:blue" for r in summary]
    ax = axes[0]
    for offset, key, marker, label in ((-0.15, "val", "o", "validation"), (0.15, "test", "s", "test")):
        means = [float(r[f"{key}_mean"]) for r in summary]
        stds = [float(r[f"{key}_std"]) for r in summary]
        ax.errorbar(means, [y + offset for y in ys], xerr=stds, fmt=marker, capsize=3, label=label,
                    color="black" if key == "test" else "tab:gray")
    ax.set_title("final accuracy %, mean ± std over seeds")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    # MACs in millions: plotted raw (about 1e7), the axis would carry a "1e7" offset a reader can miss
    for ax, key, scale, label in zip(axes[1:], ("parameters", "macs", "receptive_field"), (1, 1e6, 1),
                                     ("parameters", "multiply-accumulates per image (millions)",
                                      "receptive field (pixels)")):
        values = [float(r[key]) / scale for r in summary]
        ax.barh(list(ys), values, color=colors)
        ax.set_xlim(0, 1.3 * max(values))   # room for the value printed after each bar
        if key == "parameters":             # 200000 written out five times would run the ticks together
            ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1e3:.0f}k")
        ax.set_title(label)
        for y, v in zip(ys, values):
            ax.text(v, y, f" {v:.1f} M" if key == "macs" else f" {v:,.0f}", va="center", fontsize=8)
    axes[0].set_yticks(list(ys), names)
    axes[0].invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
