"""The start that the analysis scripts here share: a checkpoint folder and a dataset named on the command line, the
model (with its tokenizer) loaded on the CPU, and the first episodes of a split that has ground truth, since every
script compares a model's slots or predictions with the agents; and, for the DCI scripts, the slots and cells the
probes read. Bad input ends in one line naming what to fix."""

import argparse
from pathlib import Path

import numpy as np
import torch

from flam.models.checkpoint import CheckpointError
from flam.models.evaluation.protocol import dci_inputs
from flam.models.world_model import WorldModel, load_world_model
from flam.worlds.dataset import Dataset, DatasetError


def analysis_parser(
    doc: str, *, split: str = "val", episodes: int | None = None, checkpoint: str = "a FLAM or monolithic checkpoint"
) -> argparse.ArgumentParser:
    """The shared arguments: CHECKPOINT DATA [--split] and, where `episodes` gives a default, [--episodes]."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help=f"{checkpoint} folder")
    parser.add_argument("data", type=Path, help="a dataset folder with ground truth (flam data generate)")
    parser.add_argument("--split", default=split, help="train, val or test (the test split is for flam eval)")
    if episodes is not None:
        parser.add_argument("--episodes", type=int, default=episodes, help="the split's first this many episodes")
    return parser


def open_inputs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *, slots: bool = False
) -> tuple[WorldModel, Dataset, list[int]]:
    """The model, the dataset and the split's episodes (its first `--episodes` where the parser has that option).
    slots=True: the model must be a FLAM (these scripts read its slot attention)."""
    try:
        model = load_world_model(args.checkpoint, torch.device("cpu"))
        dataset = Dataset.open(args.data)
        episodes = dataset.split(args.split)[: getattr(args, "episodes", None)]
    except (CheckpointError, DatasetError) as error:
        parser.error(str(error))
    if slots and getattr(model.lam, "factorizer", None) is None:
        parser.error(f"{args.checkpoint} is not a FLAM checkpoint (it has no slot attention)")
    if not episodes or not dataset.has_ground_truth:
        parser.error(f"{args.data} has no {args.split!r} episodes with ground truth")
    return model, dataset, episodes


def slot_frames(model: WorldModel, dataset: Dataset, episodes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The FLAM's slots [V, T, K, D] and attention masks [V, T, K, h, w] on every frame of the episodes."""
    slots, masks = [], []
    with torch.inference_mode():
        for first in range(0, len(episodes), 16):
            _, inference = model.analyse(torch.from_numpy(dataset.frames_for(episodes[first : first + 16])))
            slots.append(inference.slots.float())
            masks.append(inference.masks.float())
    return torch.cat(slots), torch.cat(masks)


def probe_inputs(
    model: WorldModel, dataset: Dataset, episodes: list[int]
) -> tuple[torch.Tensor, np.ndarray, int, np.ndarray]:
    """What DCI's probes read, as `flam eval` gives it them: the FLAM's slots on every frame of the episodes, each
    entity's probe-grid cell, the number of cells and each frame's episode (see dci_inputs)."""
    return dci_inputs(slot_frames(model, dataset, episodes)[0], dataset, episodes)
