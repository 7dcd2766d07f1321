"""The `flam` command: one parser whose subcommands live in sibling modules of this package.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets `run(args) -> int`
as the handler. Heavy imports (torch, fastapi, gradio) happen inside the handlers so `flam --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order shown in `flam --help`.
SUBCOMMAND_MODULES = ("data", "train", "eval", "experiment", "serve", "ui", "bench")


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flam",
        description="FLAM Studio: train factored latent action models and steer single entities in video.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"flam.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except CliError as error:
        print(f"flam {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flam {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
