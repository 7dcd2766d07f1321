"""`flam eval` and `flam compare`: score checkpoints on held-out episodes, as JSON, a table and a report.
`flam curves` sets training runs' validation histories side by side (loss and slot binding against steps)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flam.main import CliError

if TYPE_CHECKING:
    import torch

    from flam.models.evaluation.protocol import EvalConfig, Evaluation


def register(subparsers: argparse._SubParsersAction) -> None:
    one = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on held-out episodes (prediction, slot-entity correspondence, edit locality)",
    )
    one.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT_DIR", help="FLAM or monolithic folder")
    add_eval_options(one)
    _card_option(one)
    one.set_defaults(run=run_eval)

    many = subparsers.add_parser("compare", help="evaluate several checkpoints on the same episodes, one table")
    many.add_argument("--checkpoints", type=Path, nargs="+", required=True, metavar="CKPT_DIR")
    add_eval_options(many)
    _card_option(many)
    many.set_defaults(run=run_compare)

    curves = subparsers.add_parser(
        "curves", help="plot training runs' validation loss and slot binding against steps, side by side"
    )
    curves.add_argument("--checkpoints", type=Path, nargs="+", required=True, metavar="CKPT_DIR")
    curves.add_argument("--labels", nargs="+", help="one name per checkpoint (default: parent/folder)")
    curves.add_argument("--report", type=Path, required=True, metavar="DIR", help="write README.md and plots here")
    curves.set_defaults(run=run_curves)


def _card_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write-card",
        action="store_true",
        help="also write eval.json and MODEL_CARD.md into each checkpoint folder (what the app shows)",
    )


def add_eval_options(parser: argparse.ArgumentParser, data_required: bool = True) -> None:
    """The protocol's options, shared by eval, compare and the experiments."""
    if data_required:
        parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--horizon", type=int, default=10, help="rollout steps (default 10, as in the paper)")
    parser.add_argument("--context", type=int, default=1, help="ground-truth frames the rollout starts from")
    parser.add_argument("--split", default="test", help="dataset split to evaluate on (default test)")
    parser.add_argument("--episodes", type=int, help="evaluate only the first N episodes of the split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the edits' prior samples and the probe split")
    parser.add_argument("--fvd-episodes", type=int, default=32, help="FVD on the first N episodes (0: skip)")
    parser.add_argument("--edit-episodes", type=int, default=32, help="per-slot edits on the first N episodes")
    parser.add_argument("--batch-size", type=int, default=16, help="episodes per forward pass")
    parser.add_argument(
        "--probe-iterations", type=int, default=1000, help="at most this many L-BFGS iterations per DCI probe fit"
    )
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write the results as JSON")
    parser.add_argument("--report", type=Path, metavar="DIR", help="write a markdown report with figures")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def eval_config(args: argparse.Namespace) -> EvalConfig:
    from flam.models.evaluation.protocol import EvalConfig

    config = EvalConfig(
        horizon=args.horizon,
        context=args.context,
        split=args.split,
        episodes=args.episodes,
        seed=args.seed,
        batch_size=args.batch_size,
        fvd_episodes=args.fvd_episodes,
        edit_episodes=args.edit_episodes,
        probe_iterations=args.probe_iterations,
    )
    try:
        config.check()
    except ValueError as error:
        raise CliError(f"--{str(error).replace('_', '-')}") from None
    return config


def device_of(name: str | None) -> torch.device:
    """--device, or CUDA when present else the CPU."""
    from flam.models.world_model import default_device
    from flam.train import parse_device

    return parse_device(name) or default_device()


def _log(args: argparse.Namespace) -> Callable[[str], None]:
    if args.quiet:
        return lambda message: None
    return lambda message: print(f"flam {args.command}: {message}", file=sys.stderr, flush=True)


def _check_paths(checkpoints: list[Path], data: Path) -> None:
    for folder in checkpoints:
        if not (folder / "config.json").is_file():
            raise CliError(f"{folder}: not a checkpoint folder (no config.json); train one with `flam train lam`")
    if not (data / "manifest.json").is_file():
        raise CliError(f"{data}: not a dataset folder (no manifest.json); create one with `flam data generate`")


def evaluate_checkpoints(args: argparse.Namespace, checkpoints: list[Path]) -> list[Evaluation]:
    """Load and evaluate each checkpoint on the same episodes; user-fixable errors become CliError."""
    from flam.models.checkpoint import CheckpointError
    from flam.models.evaluation.protocol import evaluate
    from flam.models.world_model import load_world_model
    from flam.worlds.dataset import Dataset, DatasetError

    _check_paths(checkpoints, args.data)
    config = eval_config(args)
    device = device_of(args.device)
    log = _log(args)
    runs = []
    try:
        dataset = Dataset.open(args.data)
        for folder in checkpoints:
            log(f"evaluating {folder}")
            model = load_world_model(folder, device)
            runs.append(evaluate(model, dataset, config, folder, log))
    except (CheckpointError, DatasetError, ValueError) as error:
        raise CliError(str(error)) from None
    return runs


def _write_json(path: Path, value: Any) -> None:
    from flam.models.report import write_text

    write_text(path, json.dumps(value, indent=2) + "\n")


def _write_cards(args: argparse.Namespace, runs: list[Evaluation]) -> None:
    """eval.json and MODEL_CARD.md into every evaluated checkpoint folder, linking the report if one was written."""
    from flam.models.evaluation.card import write_card

    report = args.report / "README.md" if args.report else None
    for run in runs:
        write_card(Path(run.summary["checkpoint"]["path"]), run.summary, report)


def run_eval(args: argparse.Namespace) -> int:
    from flam.models.report import run_label, summary_table, write_eval_report

    (run,) = evaluate_checkpoints(args, [args.checkpoint])
    summary = run.summary
    if args.json:
        _write_json(args.json, summary)
    if args.report:
        title = f"Evaluation of {args.checkpoint.parent.name}/{args.checkpoint.name}"
        write_eval_report(args.report, [run], title)
    if args.write_card:
        _write_cards(args, [run])
    print(summary_table([run_label(summary)], [summary]))
    print(f"\n{summary['n_episodes']} episodes in {summary['seconds']} s")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from flam.models.evaluation.protocol import paired_psnr_difference
    from flam.models.report import run_labels, summary_table, write_eval_report

    runs = evaluate_checkpoints(args, list(args.checkpoints))
    summaries = [run.summary for run in runs]
    labels = run_labels(summaries)
    paired = [paired_psnr_difference(runs[0], other) for other in runs[1:]]
    if args.json:
        _write_json(args.json, {"runs": summaries, "paired": paired})
    if args.report:
        write_eval_report(args.report, runs, "Comparison: " + " vs ".join(labels))
    if args.write_card:
        _write_cards(args, runs)
    print(summary_table(labels, summaries))
    for label, pair in zip(labels[1:], paired, strict=True):
        interval = f" ± {pair['ci95']:.2f}" if pair["ci95"] is not None else ""
        print(
            f"\nPSNR {labels[0]} − {label}: {pair['psnr_difference']:+.2f}{interval} dB "
            f"(95% interval, paired over {pair['episodes']} episodes)"
        )
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from flam.models.evaluation.curves import write_curves_report

    labels = args.labels or [f"{folder.resolve().parent.name}/{folder.name}" for folder in args.checkpoints]
    if len(labels) != len(args.checkpoints) or len(set(labels)) != len(labels):
        raise CliError(f"--labels needs {len(args.checkpoints)} distinct names, one per checkpoint")
    try:
        readme = write_curves_report(args.report, args.checkpoints, labels)
    except ValueError as error:
        raise CliError(str(error)) from error
    print(f"wrote {readme}")
    return 0
