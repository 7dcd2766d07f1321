"""The built-in worlds by name, and the one way to turn (world, seed) into a stream of episodes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from flam.worlds.episode import Episode
from flam.worlds.multigrid import MultiGridConfig, MultiGridWorld
from flam.worlds.sprites import SpritesConfig, SpritesWorld

World = MultiGridWorld | SpritesWorld
WORLDS: dict[str, tuple[type, type]] = {
    "multigrid": (MultiGridConfig, MultiGridWorld),
    "sprites": (SpritesConfig, SpritesWorld),
}


def make_world(name: str, **params: object) -> World:
    """Build a world from its name and config fields; ValueError names the bad field."""
    if name not in WORLDS:
        raise ValueError(f"world: expected one of {', '.join(WORLDS)}, got {name!r}")
    config_type, world_type = WORLDS[name]
    return world_type(config_type(**params))


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of episode `index` under `seed`: episode i is the same whatever the episode count."""
    return np.random.default_rng([seed, index])


def generate_episodes(world: World, seed: int, n_episodes: int) -> Iterator[Episode]:
    """Episodes 0..n_episodes-1 of `world` under `seed`, simulated lazily one at a time."""
    for index in range(n_episodes):
        yield world.episode(episode_rng(seed, index))


def manifest_fields(name: str, world: World, seed: int, source: dict) -> dict:
    """The manifest fields `write_dataset` needs from the caller, for a built-in world."""
    return {
        "world": name,
        "world_params": asdict(world.config),
        "seed": seed,
        "n_agents": world.config.n_agents,
        "n_distractors": world.config.distractors,
        "entity_colors": world.colors,
        "action_names": world.action_names,
        "source": source,
    }
