"""What the built-in worlds share: each agent's persistent random policy and the checks on common options."""

from __future__ import annotations

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


def check_common(
    n_agents: int,
    steps: int,
    image_size: int,
    persistence: float,
    correlated: int,
    distractors: int,
    palette: str,
) -> None:
    """Raise ValueError naming the option when a value every world shares is out of range."""
    entity_colors(palette, n_agents, distractors)  # validates palette and n_agents
    if steps < 1:
        raise ValueError(f"steps: expected at least 1, got {steps}")
    if image_size < 16 or image_size % 8:
        raise ValueError(f"size: expected a multiple of 8 of at least 16, got {image_size}")
    if not 0.0 <= persistence <= 1.0:
        raise ValueError(f"persistence: expected a probability in [0, 1], got {persistence}")
    if correlated != 0 and not 2 <= correlated <= n_agents:
        raise ValueError(f"correlated: expected 0 (off) or 2..{n_agents} (the number of agents), got {correlated}")
    if not 0 <= distractors <= MAX_AGENTS:
        raise ValueError(f"distractors: expected 0..{MAX_AGENTS}, got {distractors}")
