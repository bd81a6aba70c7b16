"""Command line: ``python -m course_utils train [--model NAME] [--epochs N] ...``.

Run ``python -m course_utils --help`` for the commands and ``python -m course_utils train --help``
for the options.
"""
from __future__ import annotations

import argparse
import sys


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .models import MODELS

    parser = argparse.ArgumentParser(prog="python -m course_utils",
                                     description="Advanced convolutions on CIFAR-10: the course kit's commands.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = sub.add_parser("train", help="train a course model and write a run record under runs/",
                           description="Train a course model on CIFAR-10 and write a JSON run record under runs/. "
                                       "COURSE_SMOKE=1 shrinks data and epochs for a quick check.")
    train.add_argument("--model", default="cifarnet", choices=sorted(MODELS), help="model to train (default: cifarnet)")
    train.add_argument("--epochs", type=_positive, help="epochs (default: the recipe's, 35; 2 in smoke mode)")
    train.add_argument("--batch-size", type=_positive, help="images per step (default 128)")
    train.add_argument("--lr", type=_positive_float, help="OneCycle peak learning rate (default 0.1 for SGD)")
    train.add_argument("--optimizer", choices=["sgd", "adam"], help="optimizer (default sgd)")
    train.add_argument("--data-dir", help="folder holding CIFAR-10 (default: $COURSE_DATA_DIR, else data/)")
    train.add_argument("--subset", type=_positive, metavar="N",
                       help="train on a stratified subset of N images per class (test on N//5 per class)")
    train.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    train.add_argument("--workers", type=int, help="data-loader worker processes (default 0)")
    train.add_argument("--seed", type=int, help="random seed (default 1)")
    train.add_argument("--resume", action="store_true", help="continue this run from its checkpoint in runs/")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (logs stay)")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .config import TrainConfig
    from .data import DataFormatError, DataNotFoundError
    from .experiment import run_training
    from .training import TrainingDivergedError

    if args.workers is not None and args.workers < 0:
        print("error: --workers must be 0 or more", file=sys.stderr)
        return 2
    overrides = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                     num_workers=args.workers, seed=args.seed)
    if args.subset:
        overrides.update(train_per_class=args.subset, test_per_class=max(1, args.subset // 5))
    try:
        config = TrainConfig.for_environment(**overrides)
        result = run_training(args.model, config, device=args.device, data_dir=args.data_dir,
                              resume=args.resume, progress=not args.no_progress)
    except (DataNotFoundError, DataFormatError, CheckpointError, TrainingDivergedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    r = result.record
    status = "interrupted" if r["interrupted"] else "done"
    print(f"{status}: {r['model']} ({r['parameters']:,} parameters) on {r['device']}, {r['epochs']} epochs, "
          f"{r['train_seconds']:.0f} s")
    print(f"final test accuracy {r['final_test_acc']:.2f}%  (best {r['best_test_acc']:.2f}%)")
    print(f"run record: {result.record_path}")
    return 130 if r["interrupted"] else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
