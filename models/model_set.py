"""A model set: one folder per dataset holding the tokenizer, the LAMs trained on it and sample episodes.

    checkpoints/<set>/tokenizer/    stage-1 checkpoint
    checkpoints/<set>/flam/         FLAM checkpoint (+ eval.json and MODEL_CARD.md once evaluated)
    checkpoints/<set>/monolithic/   the baseline, same tokenizer
    checkpoints/<set>/episodes/     a few held-out episodes in the dataset format: contexts the app offers

Models are named "<set>/<lam>" (e.g. "multigrid-4/flam"); names come only from what is on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flam.models.checkpoint import CONFIG_FILE, lineage_totals, read_header, read_training_record, training_lineage
from flam.models.registry import LAM_KINDS
from flam.worlds.dataset import Dataset, write_subset

TOKENIZER = "tokenizer"
EPISODES = "episodes"
EVAL_FILE = "eval.json"


@dataclass(frozen=True)
class ModelEntry:
    name: str  # "<set>/<lam folder>"
    folder: Path  # the LAM checkpoint folder
    kind: str  # "flam" or "monolithic"
    episodes: Path | None  # the set's sample episodes, if bundled

    def evaluation(self) -> dict[str, Any] | None:
        """The checkpoint's eval.json (written by `flam eval`), if any."""
        path = self.folder / EVAL_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def training(self) -> dict[str, Any] | None:
        """A short summary of training.json: steps done and planned, seconds, last validation metrics; for a
        fine-tuned model also the runs it started from (newest first) and the steps and seconds of the whole chain."""
        training = read_training_record(self.folder)
        if training is None:
            return None
        history = training.get("history") or [{}]
        summary = {
            "steps": training.get("step"),
            "planned_steps": training.get("steps"),
            "seconds": training.get("seconds"),
            "last_validation": history[-1],
        }
        chain = [{"steps": r.get("step"), "seconds": r.get("seconds")} for r in training_lineage(training)[1:]]
        if chain:
            steps, seconds = lineage_totals(training)
            summary |= {"fine_tuned_from": chain, "total_steps": steps, "total_seconds": round(seconds, 1)}
        return summary


def discover(checkpoints: Path) -> list[ModelEntry]:
    """Every LAM checkpoint under `checkpoints/<set>/`, sorted by name."""
    entries = []
    for set_dir in sorted(p for p in Path(checkpoints).iterdir() if p.is_dir() and not p.name.startswith(".")):
        episodes = set_dir / EPISODES
        for folder in sorted(p for p in set_dir.iterdir() if (p / CONFIG_FILE).is_file()):
            kind = read_header(folder).get("kind")
            if kind in LAM_KINDS:
                entries.append(
                    ModelEntry(f"{set_dir.name}/{folder.name}", folder, kind, episodes if episodes.is_dir() else None)
                )
    return entries


def bundle_episodes(data: Path, set_dir: Path, split: str = "test", count: int = 16) -> Path:
    """Copy the first `count` episodes of a dataset split into `set_dir/episodes` (the app's sample contexts)."""
    dataset = Dataset.open(data)
    return write_subset(dataset, dataset.split(split)[:count], Path(set_dir) / EPISODES, overwrite=True)
