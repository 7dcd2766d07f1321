"""Model cards: eval.json and MODEL_CARD.md written into a checkpoint folder (what GET /models shows).

The card says where the data came from, how the model was trained (command, steps, wall time), how big it is,
and what `flam eval` measured, next to the targets of the issue that asked for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flam.models.checkpoint import CONFIG_FILE, TRAINING_FILE, lineage_totals, read_training_record
from flam.models.model_set import EVAL_FILE
from flam.models.report import summary_table, write_text

CARD_FILE = "MODEL_CARD.md"

# Issue 4's targets for the 4-agent grid world (metric, comparison, threshold); the card shows each against the run.
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("tokenizer_psnr", ">=", 40.0),
    ("psnr", ">=", 35.0),
    ("ssim", ">=", 0.97),
    ("dci.disentanglement", ">=", 0.9),
    ("dci.completeness", ">=", 0.9),
    ("dci.informativeness", ">=", 0.9),
    ("edit_locality", ">=", 0.95),
    ("edit_effect", ">=", 0.9),
)


def _lookup(summary: dict[str, Any], dotted: str) -> float | None:
    value: Any = summary
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) else None


def _training_lines(name: str, folder: Path) -> list[str]:
    training = read_training_record(folder)
    if training is None:
        return [f"- {name}: no {TRAINING_FILE} (not trained by `flam train`)"]
    hours = float(training.get("seconds", 0.0)) / 3600
    train = training.get("train_config", {})
    complete = "" if training.get("step") == training.get("steps") else " (**incomplete**)"
    settings = (
        f"batch {train.get('batch_size')}, lr {train.get('lr')}, seed {train.get('seed')}, "
        f"bf16 {'where native' if train.get('bf16') is None else train.get('bf16')}"
    )
    totals = (
        f"{training.get('step')} of {training.get('steps')} steps{complete}, {training.get('seconds')} s "
        f"({hours:.2f} h) on {training.get('world_size', 1)} process(es); {settings}"
    )
    sessions = training.get("sessions")
    if not sessions:  # written before sessions were recorded: only the last command is known
        return [f"- {name}: `{training.get('command', '?')}`", f"  - {totals}"]
    events = training.get("events", [])
    splits = ", ".join(f"step {e['step']}: {e['split']} into {e['into']}" for e in events if "split" in e)
    split_line = [f"  - slot splits (crowded slot into idle slot): {splits}"] if splits else []
    return [
        f"- {name}: {totals}",
        *_session_lines(sessions, "  "),
        *split_line,
        *_lineage_line(training),
        *_init_lines(training.get("init"), "  "),
    ]


def _lineage_line(training: dict[str, Any]) -> list[str]:
    """For a fine-tuned model: the steps and training time of it and every run it started from, summed (what
    training it from nothing costs with this recipe)."""
    if not training.get("init"):
        return []
    steps, seconds = lineage_totals(training)
    return [
        f"  - in all, with the runs it was fine-tuned from: {steps} steps, {seconds:.0f} s ({seconds / 3600:.2f} h)"
    ]


def _init_lines(init: dict[str, Any] | None, indent: str) -> list[str]:
    """Where a fine-tuned run's weights started, and where those started, and so on."""
    if not init:
        return []
    fresh = init.get("fresh_weights")
    added = f" (new weights, from their initialisation: {', '.join(fresh)})" if fresh else ""
    return [
        f"{indent}- started from the weights of `{init.get('checkpoint')}` (sha256 `{init.get('weights_sha256')}`), "
        f"trained {init.get('step')} steps in {init.get('seconds')} s{added}:",
        *_session_lines(init.get("sessions") or [{"command": init.get("command")}], indent + "  "),
        *_init_lines(init.get("init"), indent + "  "),
    ]


def _session_lines(sessions: list[dict[str, Any]], indent: str) -> list[str]:
    return [
        f"{indent}- steps {s.get('from_step')}–{s.get('to_step', s.get('from_step'))} on {s.get('device', '?')}"
        f"{', ' + s['precision'] if 'precision' in s else ''}, {s.get('seconds', 0.0)} s: `{s.get('command', '?')}`"
        for s in sessions
    ]


def _targets(summary: dict[str, Any]) -> str:
    rows = []
    for key, op, threshold in TARGETS:
        value = _lookup(summary, key)
        met = "–" if value is None else ("yes" if value >= threshold else "**no**")
        rows.append(f"| {key} | {op} {threshold:g} | {'n/a' if value is None else f'{value:.4g}'} | {met} |")
    return "\n".join(["| metric | target | measured | met |", "|---|---|---|---|", *rows])


def model_card(folder: Path, summary: dict[str, Any], report: str | None = None) -> str:
    """MODEL_CARD.md text of a LAM checkpoint folder from its config, training records and an eval summary."""
    folder = Path(folder)
    header = json.loads((folder / CONFIG_FILE).read_text())
    tokenizer_dir = (folder / header.get("tokenizer", {}).get("path", "../tokenizer")).resolve()
    data = header.get("data", {})
    source = data.get("source") or {}
    ident = summary["checkpoint"]
    kind = "FLAM (factored latent action model)" if ident["kind"] == "flam" else "monolithic latent action baseline"
    lines = [
        f"# {folder.parent.name}/{folder.name}: {kind}",
        "",
        f"K = {ident['n_slots']} slot(s) × {ident['action_dim']}-d latent actions; {ident['parameters']:,} parameters "
        f"(+ {ident['tokenizer_parameters']:,} in the frozen tokenizer). Weights sha256 `{ident['weights_sha256']}`, "
        f"tokenizer sha256 `{ident['tokenizer_sha256']}`.",
        "",
        "## Data",
        "",
        f"- {data.get('world')} world, {data.get('n_agents')} agents, {data.get('n_episodes')} episodes of "
        f"{data.get('steps')} steps at {data.get('image_size')} px, seed {data.get('seed')}",
        f"- made with: `{source.get('command', '?') if isinstance(source, dict) else source}`",
        "",
        "## Training",
        "",
        *_training_lines("tokenizer", tokenizer_dir),
        *_training_lines(ident["kind"], folder),
        "",
        "## Evaluation",
        "",
        f"`flam eval` on {summary['n_episodes']} held-out `{summary['data']['split']}` episodes (unseen seeds), "
        f"horizon {summary['protocol']['horizon']}, actions inferred from the ground-truth frames; "
        f"{summary['seconds']} s." + (f" Full report with figures: {report}." if report else ""),
        "",
        summary_table(["this model"], [summary]),
        "",
    ]
    if ident["kind"] == "flam" and summary["data"].get("has_ground_truth"):
        lines += ["Targets (issue 4, 4-agent grid world):", "", _targets(summary), ""]
    lines += ["Metric definitions:", "", *[f"- **{k}**: {v}" for k, v in summary["metrics"].items()], ""]
    return "\n".join(lines)


def write_card(folder: Path, summary: dict[str, Any], report: Path | None = None) -> tuple[Path, Path]:
    """Write eval.json and MODEL_CARD.md into a checkpoint folder (each atomically); `report` is linked relatively."""
    folder = Path(folder)
    link = None
    if report is not None:
        link = f"[{Path(report).parent.name or 'report'}]({os.path.relpath(Path(report).resolve(), folder.resolve())})"
    eval_path = write_text(folder / EVAL_FILE, json.dumps(summary, indent=2) + "\n")
    card_path = write_text(folder / CARD_FILE, model_card(folder, summary, link))
    return eval_path, card_path
