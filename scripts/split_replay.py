"""Replay the split checks in training records under the split rule (`crowded_slot`) and the plain median rule it
replaced (the busiest action slot against the median of all action slots), and list the checks where they differ.
Each record's `events` keep every check's window statistics (mean action rate and attention mass per slot), so no
model or data is needed.

Reproduces crowded_slot's docstring and reports/recipe-variants ("The split rule without the background slot"): of
the 34 checks in the records before it, the rules differ at five (three of mg8-cur-parts, two of mg8-split-random).
The records of runs under crowded_slot (mg8-cur2 and later) are left out:
    .venv/bin/python scripts/split_replay.py reports/recipe-variants/*-training.json checkpoints/*/*/training.json \
        --exclude mg8-cur2 --exclude mg8-cur3 --exclude mg8-cur4
"""

import argparse
import json
from pathlib import Path

import torch

from flam.models.flam import crowded_slot
from flam.models.lam import action_slot_indices


def median_rule(rates: torch.Tensor, ratio: float) -> int | None:
    """The rule before crowded_slot: the busiest action slot against the median of all action slots."""
    active = action_slot_indices(rates)
    if not active:
        return None
    source = max(active, key=lambda k: float(rates[k]))
    return source if rates[source] >= ratio * rates[active].median() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", nargs="+", type=Path, help="training.json files (flam train's records)")
    parser.add_argument("--exclude", action="append", default=[], help="skip records whose path contains this")
    parser.add_argument("--ratio", type=float, default=1.5, help="split_ratio (the default is FLAMConfig's)")
    args = parser.parse_args()
    checks = differ = 0
    for path in args.records:
        if any(part in str(path) for part in args.exclude):
            continue
        try:
            events = json.loads(path.read_text()).get("events", [])
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"{path}: not a readable training record ({error})")
        for event in (e for e in events if "rates" in e):
            rates, masses = torch.tensor(event["rates"]), torch.tensor(event["masses"])
            before, now = median_rule(rates, args.ratio), crowded_slot(rates, masses, args.ratio)
            checks += 1
            if before != now:
                differ += 1
                print(f"{path}: step {event['step']}: median rule {before}, crowded_slot {now}")
    print(f"{checks} checks, {differ} decided otherwise")


if __name__ == "__main__":
    main()
