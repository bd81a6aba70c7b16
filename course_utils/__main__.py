"""Command line: ``python -m course_utils train|bench|ablate ...``.

Run ``python -m course_utils --help`` for the commands and ``python -m course_utils train --help``
for the options.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from dataclasses import replace

#: One meaning of --subset in every command (train, ablate): N training images per class, a stratified
#: draw; the test set, and the validation split where the command holds one out, stay whole.
SUBSET_HELP = ("train on a stratified subset of N images per class; the test set (and the validation "
               "split, where one is held out) stays whole")


def _check_subset(data, config) -> None:
    """A clear error when ``--subset N`` asks for more training images per class than ``data`` has once
    the validation split is held out: the run would train on fewer than its name and record say."""
    import numpy as np

    from .data import default_validation_per_class
    from .experiment import holds_out_validation

    if config.train_per_class is None:
        return
    # the validation split is stratified: it takes as many images from every class, so the smallest class
    # keeps the fewest (counted here without splitting the data, which training does once)
    counts = np.bincount(data.train_labels, minlength=len(data.classes))
    holding_out = holds_out_validation(data, config)
    if holding_out and counts.min() < 2:
        return   # too few to hold any out: the split itself says so, and how to train anyway
    have = int(counts.min()) - (default_validation_per_class(counts) if holding_out else 0)
    n = config.train_per_class
    if n > have:
        raise ValueError(f"--subset {n} asks for {n:,} training images per class, but the data has {have:,} per class"
                         + (" once the validation split is held out" if holding_out else "")
                         + f": give at most {have:,}, or leave --subset out to train on all of them")


def _whole_number(minimum: int):
    """An argparse type: a whole number of at least ``minimum``, else a usage error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be at least 1, got {value}" if minimum == 1 else f"must be {minimum} or more, got {value}")
        return value
    return parse


_positive, _non_negative = _whole_number(1), _whole_number(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got {text!r}")
    return value


def _device(text: str) -> str:
    """A device name the kit knows (``runtime.device_named``), or ``auto``; whether this machine has it is
    checked when the command runs (one line, exit code 1), not here."""
    from .runtime import device_named

    if text != "auto":
        try:
            device_named(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return text


#: Flags that set a TrainConfig field themselves: ``--set`` points to them instead of taking the field.
_OWN_FLAGS = {"optimizer": "--optimizer", "lr": "--lr", "epochs": "--epochs", "batch_size": "--batch-size",
              "seed": "--seed", "num_workers": "--workers", "compile": "--compile", "train_per_class": "--subset",
              "amp": "--amp/--no-amp"}


def settable() -> tuple[str, ...]:
    """What ``train --set NAME=VALUE`` may change: the learning settings (``config.LEARNING_SETTINGS``)
    without a flag of their own, so a screen of, say, weight decay is one command, and its run record and
    checkpoint name say which value it trained with."""
    from .config import LEARNING_SETTINGS

    return tuple(s for s in LEARNING_SETTINGS if s not in _OWN_FLAGS)


def _setting(text: str) -> tuple[str, object]:
    """An argparse type for ``--set NAME=VALUE`` (``config.parse_setting``), a usage error otherwise."""
    from .config import TrainConfig, parse_setting, setting_name

    name = setting_name(text)
    if name in _OWN_FLAGS:
        raise argparse.ArgumentTypeError(f"{name} has its own option: use {_OWN_FLAGS[name]}")
    try:
        name, value = parse_setting(text, settable())
        TrainConfig(**{name: value})   # its range, checked here: an impossible value is a usage error, as for --lr
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name, value


def build_parser() -> argparse.ArgumentParser:
    from .ablation import ABLATION_EPOCHS, VARIANTS
    from .config import LONG_RECIPE_MODEL, RECIPES, SMOKE_EPOCHS, TrainConfig
    from .models import MODELS

    course, fast, long = (TrainConfig.recipe(r) for r in RECIPES)

    parser = argparse.ArgumentParser(prog="python -m course_utils",
                                     description="Advanced convolutions on CIFAR-10: the course kit's commands.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = sub.add_parser("train", help="train a course model and write a run record under runs/",
                           description="Train a course model on CIFAR-10 and write a JSON run record under runs/. "
                                       "COURSE_SMOKE=1 shrinks data and epochs for a quick check.")
    train.add_argument("--model", choices=sorted(MODELS),
                       help=f"model to train (default: cifarnet; {LONG_RECIPE_MODEL} with --recipe long)")
    train.add_argument("--recipe", default="auto", choices=("auto", *RECIPES),
                       help=f"auto (default): fast on a CUDA GPU, course elsewhere; course (for a CPU): batch "
                            f"{course.batch_size}, lr {course.lr:g}, {course.epochs} epochs, the first {course.crop_epochs} on random "
                            f"{course.crop_size}x{course.crop_size} crops; fast: batch {fast.batch_size}, "
                            f"lr {fast.lr:g}, {fast.epochs} epochs, torch.compile on CUDA; long (best accuracy, trains "
                            f"{LONG_RECIPE_MODEL} unless --model says otherwise): the course recipe for {long.epochs} "
                            f"epochs, the first {long.crop_epochs} on crops, the coarse-dropout hole at p={long.dropout_p:g}")
    train.add_argument("--epochs", type=_positive, help="epochs (default: the recipe's; 2 in smoke mode)")
    train.add_argument("--batch-size", type=_positive, help="images per step (default: the recipe's)")
    train.add_argument("--lr", type=_positive_float, help="OneCycle peak learning rate (default: the recipe's)")
    train.add_argument("--optimizer", choices=["sgd", "adam"], help="optimizer (default sgd)")
    train.add_argument("--set", type=_setting, action="append", default=[], metavar="NAME=VALUE", dest="settings",
                       help=f"change one learning setting of the recipe (repeatable), e.g. --set weight_decay=1e-3; "
                            f"NAME is one of {', '.join(settable())} (config.TrainConfig documents each; crop_size=none "
                            f"trains on whole images, validation=false holds no split out); the run's record and "
                            f"checkpoint name carry the change")
    train.add_argument("--data-dir", help="folder holding CIFAR-10 (default: $COURSE_DATA_DIR, else data/)")
    train.add_argument("--subset", type=_positive, metavar="N", help=SUBSET_HELP)
    train.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N, mps or auto (default)")
    train.add_argument("--workers", type=_non_negative,
                       help="data-loader worker processes, 0 or more (default: 0 on a CPU, 2 on MPS, up to 8 on CUDA; on a CPU "
                            "they start anew each epoch, which costs a start-up per epoch where they are spawned: macOS, Windows)")
    train.add_argument("--seed", type=_non_negative, help="random seed, 0 or more (default 1)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction,
                       help="torch.compile the model on CUDA (default: on in the fast recipe)")
    train.add_argument("--amp", action=argparse.BooleanOptionalAction,
                       help="mixed precision on CUDA, bf16 or fp16 by the card (default: on; --no-amp trains in fp32, "
                            "the fix for an fp16 overflow)")
    train.add_argument("--resume", action="store_true", help="continue this run from its checkpoint in runs/")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay)")
    bench = sub.add_parser("bench", help="measure data-pipeline and training throughput (and time to 85%% on CUDA)",
                           description="Measure images/s of the augmentation pipeline for 0, 1, 2, ... loader workers, "
                                       "training steps of the course models, and on CUDA the time CifarNet takes to reach "
                                       "85% test accuracy. Prints a table and writes a JSON record under runs/bench/.")
    bench.add_argument("--quick", action="store_true", help="a CPU-sized run: 3 steps per row (noisy)")
    bench.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N, mps or auto (default)")
    bench.add_argument("--no-time-to-accuracy", dest="time_to_target", action="store_false",
                       help="on CUDA, leave out the time to 85%% (a whole fast-recipe run)")
    bench.add_argument("--data-dir", help="folder holding CIFAR-10 (default: $COURSE_DATA_DIR, else data/)")
    ablate = sub.add_parser("ablate", help="train the ablation variants, several seeds each; CSVs and figure to figures/",
                            description="Train every ablation variant (course_utils.ablation.VARIANTS: CifarNet with "
                                        "one factor changed) with the ablation recipe, once per seed, on the training "
                                        "set minus the validation split. Prints one row per run, writes "
                                        "figures/09_ablation_runs.csv (one row per variant and seed), "
                                        "figures/09_ablation_summary.csv (mean and std over seeds) and "
                                        "figures/09_ablation.png. A run recorded in figures/ (the committed study) is read "
                                        "back, not trained again: to train the study anew, point COURSE_FIGURES_DIR "
                                        "at a new folder. Finished runs in runs/ablation/ are read back and an "
                                        "interrupted one resumed; until the study is complete its finished rows are "
                                        "kept in figures/09_ablation_runs.partial.csv, which can be committed, so the "
                                        "study can be spread over several sittings and machines. A call with some "
                                        "variants adds its rows to the recorded study; one with other epochs or "
                                        "another subset is refused while figures/ holds a study (set "
                                        "COURSE_FIGURES_DIR to give it its own folder).")
    ablate.add_argument("--epochs", type=_positive,
                        help=f"epochs per run (default: the ablation recipe's, {ABLATION_EPOCHS}; {SMOKE_EPOCHS} in smoke mode)")
    ablate.add_argument("--subset", type=_positive, metavar="N", help=SUBSET_HELP)
    ablate.add_argument("--variants", nargs="+", metavar="NAME",
                        help="only these variants (default: all): " + ", ".join(v.name for v in VARIANTS))
    ablate.add_argument("--seeds", nargs="+", type=_non_negative, metavar="SEED",
                        help="seeds per variant, 0 or more (default: 1 2 3)")
    ablate.add_argument("--jobs", type=_positive, default=1, metavar="N",
                        help="train N runs at a time, each in its own process with 1/N of the CPU threads "
                             "(default 1; on a 2-core CPU, 2 gets more epochs per minute out of the cores)")
    ablate.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N, mps or auto (default)")
    ablate.add_argument("--data-dir", help="folder holding CIFAR-10 (default: $COURSE_DATA_DIR, else data/)")
    doctor = sub.add_parser("doctor", help="check this machine before class: device, precision, data, versions",
                            description="Say which device training will use and why, the precision and compile choices, "
                                        "loader workers, where the data is (or what to do), library versions, widgets "
                                        "and the shipped weights. Exit code 0 when the kit can train here.")
    doctor.add_argument("--device", default="auto", type=_device, help="cpu, cuda, cuda:N, mps or auto (default)")
    doctor.add_argument("--data-dir", help="folder holding CIFAR-10 (default: $COURSE_DATA_DIR, else data/)")
    export = sub.add_parser("export", help="ship a finished run's weights: course_utils/weights/<model>.pt and its card",
                            description="Copy the weights of a finished full-size run (its JSON run record under runs/) "
                                        "into course_utils/weights/, with a JSON card (recipe, seed, epochs, device, "
                                        "minutes, validation and test accuracy, torch version, SHA-256). "
                                        "course_utils.pretrained.load_pretrained reads them.")
    export.add_argument("record", help="the run record, e.g. runs/cifarnet-full-e40-s1.json")
    export.add_argument("--name", help="name to ship it under (default: the run's model)")
    export.add_argument("--recipe", choices=("course", "fast", "long"),
                        help="the recipe's name, for a run record that does not say it")
    export.add_argument("--force", action="store_true", help="replace weights already shipped under that name")
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .pretrained import export_pretrained

    try:
        weights, card = export_pretrained(args.record, args.name, recipe=args.recipe, force=args.force)
    except (OSError, ValueError, KeyError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"written: {weights} ({weights.stat().st_size:,} bytes) and {card}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    import time

    from .ablation import (ABLATION_SEEDS, PARTIAL_CSV, VARIANTS, StudyMismatchError, ablation_config, crop_setup,
                           crop_words, distinct, record_study, record_time, recorded_rows, run_ablation,
                           total_cpu_minutes)
    from .checkpoint import CheckpointError
    from .data import DataFormatError, DataNotFoundError, load_cifar10
    from .runtime import figures_dir, get_device, runs_dir, shown_path
    from .training import TrainingDivergedError

    known = {v.name: v for v in VARIANTS}
    unknown = sorted(set(args.variants or ()) - set(known))
    if unknown:
        print(f"error: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}", file=sys.stderr)
        return 2
    variants, seeds = distinct(tuple(known[n] for n in args.variants) if args.variants else VARIANTS,
                               args.seeds or ABLATION_SEEDS)   # a name given twice is planned and run once
    try:
        device = get_device(args.device)
        config = ablation_config(args.epochs, train_per_class=args.subset)
        data = load_cifar10(args.data_dir)
        if args.subset:   # an explicit --subset (smoke mode's own subset takes what a small folder has)
            _check_subset(data, config)
    except (DataNotFoundError, DataFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = "all training images" if config.train_per_class is None else f"{config.train_per_class} per class"
    crops = crop_words(*crop_setup(config))
    print(f"{len(variants)} variants x {len(seeds)} seeds, {config.epochs} epochs each{crops}, {size} (validation "
          f"split held out), on {device}" + (f", {args.jobs} runs at a time" if args.jobs > 1 else ""))
    start = time.perf_counter()
    try:
        # runs recorded by an earlier sitting (perhaps on another machine) are read back, not trained again
        # (a study of other epochs, data size or crop phase is refused);
        # after every finished run, every row recorded so far goes to the partial CSV: to commit and carry on
        trained = [0]   # runs this call trains (the others are read back)

        def on_row(done):
            trained[0] += 1
            record_study(done, complete=False)
        rows = run_ablation(data, config, device, variants, seeds, known_rows=recorded_rows(), on_row=on_row,
                            jobs=args.jobs)
    except CheckpointError as err:   # a run's checkpoint of older code, or a damaged one
        print(f"error: {err} (ablate continues every run from its checkpoint under {shown_path(runs_dir() / 'ablation')}: "
              "delete that run's .pt to train it anew; the finished runs are kept)", file=sys.stderr)
        return 1
    except (StudyMismatchError, TrainingDivergedError, ValueError) as err:   # another study recorded; --jobs on a GPU
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err}. {_disk_fix('ablate')}", file=sys.stderr)
        return 1
    planned = len(variants) * len(seeds)
    if len(rows) < planned:
        print(f"stopped before the end ({len(rows)} of {planned} runs, in {PARTIAL_CSV}): "
              "run the same command again to go on", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    try:   # the runs are safe in runs/ablation/ either way: the same command writes the study again
        written = record_study(rows, complete=True)
    except ValueError as err:   # the recorded study's CSV changed (damaged) while the runs trained
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err}. The {len(rows)} runs are kept under {shown_path(runs_dir() / 'ablation')}: free some "
              f"space or make {shown_path(figures_dir())} writable, then run the same command again to write the "
              "study (the runs are read back, not trained)", file=sys.stderr)
        return 1
    study, kept = written["study"], written["kept"]
    jobs = args.jobs if trained[0] > 1 else 1   # a single run to train trains in this process, every thread
    # a call that only read the runs back keeps the study's time record
    timing = record_time(study, wall, jobs, device, trained[0]) if trained[0] else None
    print(f"total training time of the {len(study)} runs: {total_cpu_minutes(study):.1f} min, each run's own "
          f"clock summed ({wall / 60:.1f} min of wall-clock time in this call, {trained[0]} runs trained in it)")
    runs_csv, summary_csv, png = written["files"]
    print(f"written: {shown_path(runs_csv)} ({len(study)} runs"
          + (f", {kept} of them recorded earlier and not in this call" if kept else "")
          + f"), {shown_path(summary_csv)} and {shown_path(png)}" + (f"; its time: {shown_path(timing)}" if timing else ""))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json
    import time

    from .benchmark import run_benchmark
    from .checkpoint import atomic_write_text
    from .data import DataFormatError, DataNotFoundError, load_cifar10
    from .runtime import get_device, runs_dir

    try:
        device = get_device(args.device)
        data = load_cifar10(args.data_dir)
        folder = runs_dir() / "bench"  # the benchmark's own folder: it never touches a training run's files
        folder.mkdir(parents=True, exist_ok=True)
    except (DataNotFoundError, DataFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err}. {_disk_fix('bench')}", file=sys.stderr)
        return 1
    path = folder / f"bench-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    print(f"benchmark record: {path} (rewritten after every row: a stopped benchmark keeps the rows it measured)")
    try:  # the record is rewritten (atomically) after every row, and written once before the first
        run_benchmark(device, quick=args.quick, data=data, time_to_target=args.time_to_target,
                      save=lambda r: atomic_write_text(json.dumps(r, indent=2), path))
    except KeyboardInterrupt:
        print(f"interrupted: the rows measured so far are in {path} (marked \"complete\": false)", file=sys.stderr)
        return 130
    print(f"benchmark record: {path}")
    return 0


def train_plan(args: argparse.Namespace) -> tuple[str, "TrainConfig", str]:
    """The recipe, configuration and model a ``train`` command line asks for, worked out as the command
    works them out, before it reads any data: docs/results.md's tests check with it that each recorded
    run's command reproduces the run's configuration."""
    from .config import LONG_RECIPE_MODEL, TrainConfig, choose_recipe

    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                     num_workers=args.workers, seed=args.seed, compile=args.compile, amp=args.amp)
    if args.subset:
        overrides.update(train_per_class=args.subset)
    recipe = choose_recipe(args.recipe, args.device)
    # after for_environment, which drops None (an unset flag): crop_size=none is a setting
    config = replace(TrainConfig.for_environment(recipe, **overrides), **dict(args.settings))
    return recipe, config, args.model or (LONG_RECIPE_MODEL if recipe == "long" else "cifarnet")


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .data import DataFormatError, DataNotFoundError, load_cifar10
    from .experiment import run_training
    from .training import TrainingDivergedError

    settings = dict(args.settings)
    twice = sorted(name for name, times in Counter(n for n, _ in args.settings).items() if times > 1)
    if twice:
        print(f"error: --set gives {', '.join(twice)} more than once; give each setting once", file=sys.stderr)
        return 2
    try:
        recipe, config, model = train_plan(args)
        # asked to crop (and not also told not to: crop_fraction=0 or crop_size=none), yet no epoch would
        idle = [n for n in ("crop_size", "crop_fraction") if n in settings and settings[n]]
        off = [n for n in ("crop_size", "crop_fraction") if n in settings and not settings[n]]
        if idle and not off and not config.crop_epochs:
            print(f"error: {', '.join(f'{n}={settings[n]}' for n in idle)} would change nothing: no epoch of this run "
                  f"trains on crops (crop_size {config.crop_size}, crop_fraction {config.crop_fraction} of "
                  f"{config.epochs} epochs). Set both, e.g. --set crop_size=24 --set crop_fraction=0.75, or leave "
                  "them out", file=sys.stderr)
            return 2
        print(f"recipe {recipe}{' (auto)' if args.recipe == 'auto' else ''}: batch {config.batch_size}, "
              f"peak lr {config.lr:g}, {config.epochs} epochs"
              + (f" (the first {config.crop_epochs} on random {config.crop_size}x{config.crop_size} crops)"
                 if config.crop_epochs else "")
              + (f" (the last {config.clean_epochs} clean: flips only)" if config.clean_epochs else "")
              + (f"; a weight average (EMA {config.ema_decay}) scored beside" if config.ema_decay else "")
              + ("; changed: " + ", ".join(f"{n}={getattr(config, n)}" for n in settings) if settings else ""))
        if config.optimizer == "adam" and args.lr is None:
            print(f"note: the peak lr {config.lr:g} is the recipe's, tuned for SGD; Adam usually wants far less "
                  "(about 1e-3: pass --lr)")
        if args.model is None and recipe == "long":
            print(f"model {model}: the long recipe's network (--model picks another)")
        data = None
        if args.subset:  # the data is read here to check that it holds that many images per class
            data = load_cifar10(args.data_dir)
            _check_subset(data, config)
        result = run_training(model, config, device=args.device, data=data, data_dir=args.data_dir,
                              resume=args.resume, progress=not args.no_progress, recipe=recipe)
    except (DataNotFoundError, DataFormatError, CheckpointError, TrainingDivergedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:   # a read-only or full disk: the last checkpoint written is whole (atomic writes)
        print(f"error: {err}. {_disk_fix('train')}", file=sys.stderr)
        return 1
    r = result.record
    status = "interrupted" if r["interrupted"] else "done"
    print(f"{status}: {r['model']} ({r['parameters']:,} parameters) on {r['device']}, {r['epochs']} epochs, "
          f"{r['train_seconds']:.0f} s")
    if r["interrupted"]:
        print("no final accuracy: the run stopped early; continue it with --resume")
    else:
        val = f"final validation accuracy {r['final_val_acc']:.2f}%, " if r["final_val_acc"] == r["final_val_acc"] else ""
        print(f"{val}final test accuracy {r['final_test_acc']:.2f}% "
              f"(with test-time flip averaging: {r['final_test_acc_flip_tta']:.2f}%)")
        if r.get("final_ema_test_acc") is not None:
            ema_val = r["final_ema_val_acc"]
            print("the weight average (EMA), beside: "
                  + (f"validation {ema_val:.2f}%, " if ema_val == ema_val else "")
                  + f"test {r['final_ema_test_acc']:.2f}%")
    print(f"run record: {result.record_path}")
    return 130 if r["interrupted"] else 0


def _disk_fix(command: str) -> str:
    """What to do when ``command`` could not write its files (a full disk, a read-only folder). The folders
    are named, not looked up: finding them creates them, which may be what failed."""
    runs = "the runs folder (runs/, or COURSE_RUNS_DIR)"
    if command == "ablate":
        return (f"Make {runs} and the figures folder (figures/, or COURSE_FIGURES_DIR) writable and free some space, or "
                "set COURSE_RUNS_DIR / COURSE_FIGURES_DIR to other folders; then run the same command again: finished "
                "runs are read back and an interrupted one continues from its last checkpoint")
    if command == "bench":
        return f"Make {runs} writable and free some space, or set COURSE_RUNS_DIR to another folder, then run bench again"
    return (f"Make {runs} writable and free some space, or set COURSE_RUNS_DIR to another folder; the last "
            "checkpoint written is whole, and --resume continues from it")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command line prints it: one line, ``warning: ...`` (``warning (FutureWarning): ...``
    for another category than UserWarning), without Python's ``file.py:123:`` prefix and the source line."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    print(f"warning{kind}: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    with warnings.catch_warnings():   # restored on return: main() called from Python keeps the caller's
        warnings.showwarning = _show_warning
        args = build_parser().parse_args(argv)
        try:
            return _run(args)
        except KeyboardInterrupt:   # outside the epochs (fit handles those): loading data, the final evaluation
            print("interrupted (Ctrl-C); a training run continues from its last complete epoch with --resume",
                  file=sys.stderr)
            return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        return cmd_train(args)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "ablate":
        return cmd_ablate(args)
    if args.command == "export":
        return cmd_export(args)
    if args.command == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(args.device, args.data_dir)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
