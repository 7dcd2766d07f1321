"""What the built-in worlds share: each agent's persistent random policy and the common options with their checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flam.worlds.palettes import MAX_AGENTS, entity_colors


def persistent_actions(
    rng: np.random.Generator, steps: int, n_agents: int, n_actions: int, persistence: float, correlated: int
) -> np.ndarray:
    """int16 [steps,n_agents]: every agent repeats its last action with prob. `persistence`, else draws anew.

    Agents draw independently; with `correlated` = c >= 2 the first c agents take exactly agent 0's action.
    """
    repeat = rng.random((steps, n_agents)) < persistence  # [T-1,N]
    actions = rng.integers(0, n_actions, (steps, n_agents))  # [T-1,N] fresh draws
    for t in range(1, steps):
        actions[t] = np.where(repeat[t], actions[t - 1], actions[t])
    if correlated:
        actions[:, 1:correlated] = actions[:, :1]
    return actions.astype(np.int16)


@dataclass(frozen=True)
class WorldConfig:
    """The options every built-in world has; each world's config adds its own. All are recorded in the manifest."""

    n_agents: int = 4
    steps: int = 32  # actions per episode; an episode has steps + 1 frames
    image_size: int = 64  # pixels per side, a multiple of 8
    persistence: float = 0.7  # probability that an agent repeats its previous action
    correlated: int = 0  # the first `correlated` agents copy agent 0's action (0 = off)
    distractors: int = 0  # moving shapes that nobody controls
    palette: str = "default"  # "default" or "heldout" agent colours

    def __post_init__(self) -> None:
        """Raise ValueError naming the option (as the CLI spells it) when a shared value is out of range."""
        entity_colors(self.palette, self.n_agents, self.distractors)  # validates palette and n_agents
        if self.steps < 1:
            raise ValueError(f"steps: expected at least 1, got {self.steps}")
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError(f"size: expected a multiple of 8 of at least 16, got {self.image_size}")
        if not 0.0 <= self.persistence <= 1.0:
            raise ValueError(f"persistence: expected a probability in [0, 1], got {self.persistence}")
        if self.correlated != 0 and not 2 <= self.correlated <= self.n_agents:
            raise ValueError(
                f"correlated: expected 0 (off) or 2..{self.n_agents} (the number of agents), got {self.correlated}"
            )
        if not 0 <= self.distractors <= MAX_AGENTS:
            raise ValueError(f"distractors: expected 0..{MAX_AGENTS}, got {self.distractors}")
