"""`flam train tokenizer|lam`: the two training stages (`torchrun --nproc_per_node N -m flam train ...` for DDP)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flam.main import CliError

if TYPE_CHECKING:
    import torch

PRESETS = ("tiny", "default")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train the tokenizer or a latent action model")
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)

    tok = stages.add_parser("tokenizer", help="stage 1: the FSQ tokenizer for one dataset")
    _common(tok)
    tok.set_defaults(run=run_tokenizer)

    lam = stages.add_parser("lam", help="stage 2: FLAM or the monolithic baseline on a frozen tokenizer")
    lam.add_argument("--arch", choices=("flam", "monolithic"), required=True)
    lam.add_argument("--tokenizer", type=Path, required=True, metavar="CKPT_DIR", help="trained tokenizer folder")
    lam.add_argument("--slots", type=int, help="K (FLAM); default: the dataset's agents + 2")
    lam.add_argument("--action-size", type=int, help="total latent action size d (default 48); FLAM slots get d // K")
    lam.add_argument(
        "--init",
        type=Path,
        metavar="CKPT_DIR",
        help="fine-tune: start from this checkpoint's weights and model config (--set changes it, e.g. a loss cost), "
        "with a fresh optimizer and learning-rate schedule",
    )
    lam.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config override, e.g. factorizer.temporal_attention=false or coupling=global (repeatable)",
    )
    _common(lam)
    lam.set_defaults(run=run_lam)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder (flam data ...)")
    parser.add_argument("--out", type=Path, required=True, metavar="CKPT_DIR", help="checkpoint folder to write")
    parser.add_argument("--preset", choices=PRESETS, default="default")
    parser.add_argument("--steps", type=int, help="override the preset's number of steps")
    parser.add_argument("--lr", type=float, help="override the preset's peak learning rate (e.g. lower to fine-tune)")
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the initial weights and of the clips drawn (default 0); other seeds show how much a result "
        "owes to luck",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: where the CPU or GPU computes bf16 natively; emulated bf16 is ~8x slower)",
    )
    parser.add_argument(
        "--distributed",
        type=int,
        metavar="N",
        help="train with N DDP processes on this machine (runs torchrun for you)",
    )


def _check_paths(args: argparse.Namespace) -> None:
    if not (args.data / "manifest.json").is_file():
        raise CliError(f"{args.data}: not a dataset folder (no manifest.json); create one with `flam data generate`")
    if args.out.exists() and not args.resume and any(args.out.iterdir()):
        raise CliError(f"{args.out}: already holds a checkpoint; pass --resume to continue it or choose another --out")
    if args.resume and not (args.out / "config.json").is_file():
        raise CliError(f"{args.out}: nothing to resume (no checkpoint there)")
    if args.steps is not None and args.steps < 1:
        raise CliError("--steps must be at least 1")
    if args.lr is not None and not args.lr > 0:
        raise CliError(f"--lr must be a positive number, got {args.lr}")


def _relaunch(args: argparse.Namespace) -> int | None:
    """With --distributed N (and not already under torchrun), rerun this command under torchrun."""
    if not args.distributed or "WORLD_SIZE" in os.environ:
        return None
    if args.distributed < 1:
        raise CliError("--distributed needs a process count of at least 1")
    argv = [a for i, a in enumerate(sys.argv[1:]) if not _is_distributed_flag(sys.argv[1:], i)]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={args.distributed}",
        "-m",
        "flam",
        *argv,
    ]
    return subprocess.call(command)


def _is_distributed_flag(argv: list[str], index: int) -> bool:
    arg = argv[index]
    return arg.startswith("--distributed") or (index > 0 and argv[index - 1] == "--distributed")


def parse_device(name: str | None) -> torch.device | None:
    """The --device option as a torch device (None when not given); an unusable device is a CliError."""
    import torch

    if name is None:
        return None
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise CliError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is available on this machine")
    return device


def run_tokenizer(args: argparse.Namespace) -> int:
    _check_paths(args)
    relaunched = _relaunch(args)
    if relaunched is not None:
        return relaunched
    from flam.models.train import train_tokenizer

    return _guard(
        lambda: train_tokenizer(
            args.data,
            args.out,
            args.preset,
            args.steps,
            args.resume,
            parse_device(args.device),
            args.bf16,
            lr=args.lr,
            seed=args.seed,
        )
    )


def run_lam(args: argparse.Namespace) -> int:
    _check_paths(args)
    if not (args.tokenizer / "config.json").is_file():
        raise CliError(f"{args.tokenizer}: not a checkpoint folder; train one with `flam train tokenizer`")
    if args.init is not None and not (args.init / "config.json").is_file():
        raise CliError(f"--init {args.init}: not a checkpoint folder (no config.json)")
    if args.init is not None and args.init.resolve() == args.out.resolve():
        raise CliError("--init and --out are the same folder; to continue a run use --resume instead")
    overrides = dict(_parse_override(item) for item in args.set)
    relaunched = _relaunch(args)
    if relaunched is not None:
        return relaunched
    from flam.models.train import train_lam

    return _guard(
        lambda: train_lam(
            args.arch,
            args.tokenizer,
            args.data,
            args.out,
            args.preset,
            args.steps,
            args.resume,
            args.slots,
            args.action_size,
            overrides,
            parse_device(args.device),
            args.bf16,
            init=args.init,
            lr=args.lr,
            seed=args.seed,
        )
    )


def _parse_override(item: str) -> tuple[str, object]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise CliError(f"--set {item!r}: expected KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _guard(work: Callable[[], object]) -> int:
    """Turn the errors a user can fix (bad data, bad checkpoint, bad option) into one-line CLI errors."""
    from flam.models.checkpoint import CheckpointError
    from flam.worlds.dataset import DatasetError

    try:
        work()
    except (CheckpointError, DatasetError, ValueError) as error:
        raise CliError(str(error)) from None
    return 0
