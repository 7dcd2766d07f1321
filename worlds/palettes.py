"""Colours shared by the built-in worlds: entity colour sets (one for training, one held out) and scenery."""

from __future__ import annotations

import numpy as np

FLOOR = (24, 24, 32)
GRID_LINE = (40, 40, 50)
WALL = (110, 110, 110)
DISTRACTOR = (185, 185, 185)

# Agent colours in entity order. "default" starts with the paper's blue, green, purple, red; "heldout" shares
# no colour with it, for tests of generalisation to entities that look different from the training data.
PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "default": (
        (66, 133, 244),
        (52, 199, 89),
        (175, 82, 222),
        (230, 57, 70),
        (255, 204, 0),
        (0, 199, 190),
        (255, 149, 0),
        (255, 105, 180),
    ),
    "heldout": (
        (244, 164, 96),
        (127, 255, 212),
        (218, 112, 214),
        (173, 255, 47),
        (70, 130, 180),
        (255, 218, 185),
        (210, 105, 30),
        (240, 230, 140),
    ),
}
MAX_AGENTS = len(PALETTES["default"])


def entity_colors(palette: str, n_agents: int, n_distractors: int) -> list[list[int]]:
    """RGB colour of every entity, agents first (from the palette), then distractors (all grey)."""
    if palette not in PALETTES:
        raise ValueError(f"palette: expected one of {sorted(PALETTES)}, got {palette!r}")
    if not 1 <= n_agents <= MAX_AGENTS:
        raise ValueError(f"agents: expected 1..{MAX_AGENTS}, got {n_agents}")
    return [list(c) for c in PALETTES[palette][:n_agents]] + [list(DISTRACTOR)] * n_distractors


def color_table(colors: list[list[int]], background: tuple[int, int, int]) -> np.ndarray:
    """Lookup table uint8 [N+1,3] from entity_map values (0 = background, i+1 = entity i) to RGB."""
    return np.asarray([background, *colors], dtype=np.uint8)  # [N+1,3]
