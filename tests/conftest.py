"""Shared fixtures: a tiny generated dataset and a tiny model set trained on it by the real training code."""

from __future__ import annotations

from pathlib import Path

import pytest

from flam.models.model_set import TOKENIZER, bundle_episodes
from flam.models.train import train_lam, train_tokenizer
from flam.worlds.dataset import write_dataset
from flam.worlds.registry import generate_episodes, make_world, manifest_fields

TINY_SET = "tiny"


def make_dataset(out: Path, agents: int = 2, episodes: int = 12, steps: int = 12, seed: int = 0) -> Path:
    """A small multigrid dataset written through the real dataset writer."""
    world = make_world("multigrid", n_agents=agents, steps=steps)
    source = {"command": f"test fixture: multigrid {agents} agents, {episodes} episodes, seed {seed}"}
    fields = manifest_fields("multigrid", world, seed, source)
    return write_dataset(out, generate_episodes(world, seed, episodes), fields, n_episodes=episodes, progress=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "multigrid-2")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """checkpoints/tiny/{tokenizer,flam,monolithic,episodes}: tiny presets, a few steps each (seconds)."""
    root = tmp_path_factory.mktemp("checkpoints")
    set_dir = root / TINY_SET
    quiet = lambda message: None  # noqa: E731 - a sink for training logs
    train_tokenizer(tiny_dataset, set_dir / TOKENIZER, preset="tiny", steps=4, log=quiet)
    for arch in ("flam", "monolithic"):
        train_lam(
            arch,
            set_dir / TOKENIZER,
            tiny_dataset,
            set_dir / arch,
            preset="tiny",
            steps=4,
            slots=3,
            action_size=6,
            log=quiet,
        )
    bundle_episodes(tiny_dataset, set_dir, count=4)
    return root
