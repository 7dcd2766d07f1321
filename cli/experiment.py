"""`flam experiment scaling|correlated`: the paper's entity experiments, trained and evaluated end to end."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flam.eval import add_eval_options, device_of, eval_config
from flam.main import CliError

if TYPE_CHECKING:
    from flam.models.evaluation.experiments import ExperimentConfig

    Runner = Callable[..., dict[str, Any]]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("experiment", help="entity scaling and correlated agents (train + evaluate)")
    kinds = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    scaling = kinds.add_parser(
        "scaling", help="FLAM vs monolithic on 2, 4, 8 agents with the same budget and total action size"
    )
    scaling.add_argument("--agents", type=int, nargs="+", default=[2, 4, 8], help="agent counts (default 2 4 8)")
    _common(scaling)
    scaling.set_defaults(run=run_scaling)

    correlated = kinds.add_parser("correlated", help="4 agents, two share actions, FLAM with K = 3: which slot binds")
    correlated.add_argument("--agents", type=int, default=4, help="agents (default 4)")
    correlated.add_argument("--correlated", type=int, default=2, help="the first N agents share actions (default 2)")
    correlated.add_argument("--slots", type=int, default=3, help="FLAM slots K (default 3)")
    _common(correlated)
    correlated.set_defaults(run=run_correlated)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="data, checkpoints and results go here")
    parser.add_argument("--preset", choices=("tiny", "default"), default="default", help="model and training preset")
    parser.add_argument("--tokenizer-steps", type=int, default=2000, help="tokenizer training steps (default 2000)")
    parser.add_argument("--lam-steps", type=int, default=5000, help="steps for each latent action model (default 5000)")
    parser.add_argument("--action-size", type=int, default=48, help="total latent action size d for both models")
    parser.add_argument("--extra-slots", type=int, default=2, help="FLAM K = agents + this (scaling)")
    parser.add_argument("--data-episodes", type=int, default=400, help="episodes generated per agent count")
    parser.add_argument("--episode-steps", type=int, default=32, help="actions per generated episode")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated data")
    add_eval_options(parser, data_required=False)


def _config(
    args: argparse.Namespace, agents: tuple[int, ...], correlated: int = 0, slots: int | None = None
) -> ExperimentConfig:
    from flam.models.evaluation.experiments import ExperimentConfig

    config = ExperimentConfig(
        agents=agents,
        episodes=args.data_episodes,
        episode_steps=args.episode_steps,
        correlated=correlated,
        seed=args.data_seed,
        preset=args.preset,
        tokenizer_steps=args.tokenizer_steps,
        lam_steps=args.lam_steps,
        action_size=args.action_size,
        extra_slots=args.extra_slots,
        slots=slots,
    )
    try:
        config.check()
    except ValueError as error:
        raise CliError(f"--{str(error).replace('_', '-')}") from None
    return config


def _run(args: argparse.Namespace, config: ExperimentConfig, runner: Runner) -> int:
    import json

    from flam.models.checkpoint import CheckpointError
    from flam.worlds.dataset import DatasetError

    protocol = eval_config(args)
    device = device_of(args.device)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"flam experiment {args.experiment}: {message}", file=sys.stderr, flush=True)

    try:
        record = runner(args.out, config, protocol, device, args.report, log)
    except (CheckpointError, DatasetError, ValueError) as error:
        raise CliError(str(error)) from None
    if args.json:
        from flam.models.report import write_text

        write_text(args.json, json.dumps(record, indent=2) + "\n")
    report = args.report or args.out / "report"
    print(f"wrote {report / 'README.md'}")
    return 0


def run_scaling(args: argparse.Namespace) -> int:
    from flam.models.evaluation.experiments import run_scaling as runner

    return _run(args, _config(args, tuple(args.agents)), runner)


def run_correlated(args: argparse.Namespace) -> int:
    from flam.models.evaluation.experiments import run_correlated as runner

    return _run(args, _config(args, (args.agents,), args.correlated, args.slots), runner)
