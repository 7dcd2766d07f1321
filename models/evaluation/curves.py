"""Training curves of several LAM runs side by side: validation loss and slot-entity binding against steps.

Slot binding forms and breaks again while a FLAM trains (DESIGN §6), so model variants are compared by their
validation binding history at equal steps, not by their last loss. Reads each folder's training.json only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flam.models.checkpoint import TRAINING_FILE, read_training_record
from flam.models.lam import ACTIVE_RATE
from flam.models.report import line_plot, markdown_table, write_report_page

# (key in a history entry, what the plot and table call it)
CURVES: tuple[tuple[str, str], ...] = (
    ("val_mse", "validation MSE"),
    ("val_token_acc", "validation token accuracy"),
    ("binding", "binding (share of entities with a slot of their own)"),
    ("purity", "purity (entity mass on its dominant slot)"),
    ("action_slots", "slots carrying actions"),
)


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The validation history a training run recorded in `folder`."""
    training = read_training_record(folder)
    if training is None:
        raise ValueError(f"{folder} has no {TRAINING_FILE}: pass a folder written by `flam train`")
    history = training.get("history") or []
    if not history:
        raise ValueError(
            f"{folder / TRAINING_FILE} has no validation history yet (the first comes after val_every steps)"
        )
    return history


def curve_table(labels: Sequence[str], histories: Sequence[list[dict[str, Any]]]) -> tuple[list[int], dict]:
    """Steps seen by any run, and for every curve and run the value at each of those steps (None where absent)."""
    by_step = [{entry["step"]: entry for entry in history} for history in histories]
    steps = sorted(set().union(*by_step))
    table = {
        key: {
            label: [runs.get(step, {}).get(key) for step in steps] for label, runs in zip(labels, by_step, strict=True)
        }
        for key, _ in CURVES
    }
    return steps, table


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.4f}"


def write_curves_report(out: Path, folders: Sequence[Path], labels: Sequence[str]) -> Path:
    """out/README.md with one plot per curve and a table of every validation point; returns the README path."""
    histories = [read_history(folder) for folder in folders]
    steps, table = curve_table(labels, histories)
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        "# Training curves: " + " vs ".join(labels),
        "",
        "Validation points recorded while training (`training.json`), compared at equal steps. Binding and purity "
        "score the factorizer's slot masks against the entities' true cells on validation clips; slots carrying "
        f"actions counts the slots whose mean action KL is at least {ACTIVE_RATE} nats (FLAM only).",
        "",
        *(f"- {label}: `{folder}`" for label, folder in zip(labels, folders, strict=True)),
        "",
    ]
    shown = [(key, name) for key, name in CURVES if any(v is not None for v in sum(table[key].values(), []))]
    for key, name in shown:
        line_plot(table[key], out / f"{key}.png", "training step", name, name, x=steps)
        parts += [f"![{name}]({key}.png)", ""]
    header = ["step", *(f"{label}: {key}" for key, _ in shown for label in labels)]
    rows = [
        [str(step), *(_cell(table[key][label][i]) for key, _ in shown for label in labels)]
        for i, step in enumerate(steps)
    ]
    parts += [markdown_table(header, rows), ""]
    return write_report_page(out, "\n".join(parts))
