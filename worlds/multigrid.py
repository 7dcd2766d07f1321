"""MultiGrid-like world: agents as coloured triangles in an 8×8 walled room, each acting on its own policy.

Every agent turns left, turns right, steps forward or stays, repeating its previous action with probability
`persistence` (else it samples uniformly), so motion has structure but no agent depends on another (unless
the `correlated` variant ties the first agents' actions together). Moves into a wall or an occupied cell do
nothing; within a step agents move in index order, then distractors, each seeing the cells already taken.
Rendering pastes precomputed per-cell tiles, so generating thousands of episodes takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flam.worlds.episode import Episode, GroundTruth
from flam.worlds.palettes import FLOOR, GRID_LINE, WALL, color_table, entity_colors
from flam.worlds.policy import WorldConfig, persistent_actions

ROOM = 8  # cells per side, walls included: 6×6 free interior cells
ACTION_NAMES = ("turn left", "turn right", "forward", "stay")
TURN_LEFT, TURN_RIGHT, FORWARD, STAY = range(4)
STEP = ((0, 1), (1, 0), (0, -1), (-1, 0))  # (d_row, d_col) per heading: right, down, left, up


@dataclass(frozen=True)
class MultiGridConfig(WorldConfig):
    """The grid world has only the shared options: image_size / 8 pixels per cell; distractors are grey squares
    that drift along a row or column and bounce."""


def _triangle_mask(cell: int) -> np.ndarray:
    """bool [cell,cell]: a triangle pointing right, sampled at pixel centres."""
    y, x = (np.mgrid[0:cell, 0:cell] + 0.5) / cell  # [cell,cell] each, in [0,1]
    tip, back = 0.95, 0.10
    half_width = 0.45 * (tip - x) / (tip - back)  # shrinks linearly from the back edge to the tip
    return (x >= back) & (x <= tip) & (np.abs(y - 0.5) <= half_width)


def _square_mask(cell: int) -> np.ndarray:
    """bool [cell,cell]: an inset square, the distractors' shape."""
    y, x = (np.mgrid[0:cell, 0:cell] + 0.5) / cell  # [cell,cell] each
    return (np.abs(y - 0.5) <= 0.3) & (np.abs(x - 0.5) <= 0.3)


class MultiGridWorld:
    """Simulates and renders MultiGrid episodes; one instance serves any number of seeds."""

    def __init__(self, config: MultiGridConfig) -> None:
        self.config = config
        self.cell = config.image_size // ROOM
        self.colors = entity_colors(config.palette, config.n_agents, config.distractors)
        self.action_names = list(ACTION_NAMES)
        self._mask_tiles = self._build_mask_tiles()  # uint8 [n_tiles,cell,cell]
        self._background = self._build_background()  # uint8 [H,W,3]
        self._lut = color_table(self.colors, FLOOR)  # uint8 [N+1,3]

    @property
    def n_entities(self) -> int:
        """Agents plus distractors."""
        return self.config.n_agents + self.config.distractors

    def _build_mask_tiles(self) -> np.ndarray:
        """Tile 0 is empty; tile 1 + 4·i + h is agent i facing h; then one tile per distractor."""
        n, c = self.config.n_agents, self.cell
        triangle = _triangle_mask(c)
        tiles = [np.zeros((c, c), np.uint8)]
        for i in range(n):
            for h in range(4):
                tiles.append(np.rot90(triangle, k=-h).astype(np.uint8) * (i + 1))  # clockwise turns
        for j in range(self.config.distractors):
            tiles.append(_square_mask(c).astype(np.uint8) * (n + j + 1))
        return np.stack(tiles)  # [n_tiles,cell,cell]

    def _build_background(self) -> np.ndarray:
        """Dark floor with faint grid lines and a grey wall border."""
        c, size = self.cell, self.config.image_size
        image = np.empty((size, size, 3), np.uint8)  # [H,W,3]
        image[:] = FLOOR
        if c >= 8:
            image[::c, :] = GRID_LINE
            image[:, ::c] = GRID_LINE
        image[:c], image[-c:], image[:, :c], image[:, -c:] = WALL, WALL, WALL, WALL
        return image

    def sample_actions(self, rng: np.random.Generator) -> np.ndarray:
        """int16 [steps,n_agents]: each agent's persistent random policy (see `persistent_actions`)."""
        cfg = self.config
        return persistent_actions(rng, cfg.steps, cfg.n_agents, len(ACTION_NAMES), cfg.persistence, cfg.correlated)

    def episode(self, rng: np.random.Generator) -> Episode:
        """Simulate one episode from `rng` and render its frames and ground truth."""
        cfg = self.config
        n, d = cfg.n_agents, cfg.distractors
        interior = ROOM - 2
        start = rng.choice(interior * interior, size=n + d, replace=False)
        cells = [[1 + int(k) // interior, 1 + int(k) % interior] for k in start]
        heading = [int(h) for h in rng.integers(0, 4, n)]
        axis = rng.integers(0, 2, d)  # distractors: 0 along the row (horizontal), 1 along the column
        sign = rng.choice(np.array([-1, 1]), d)
        drift = [(0, int(s)) if a == 0 else (int(s), 0) for a, s in zip(axis, sign, strict=True)]
        actions = self.sample_actions(rng)

        blocked = np.zeros((ROOM, ROOM), bool)
        blocked[0, :] = blocked[-1, :] = blocked[:, 0] = blocked[:, -1] = True
        for r, c in cells:
            blocked[r, c] = True

        def try_move(k: int, dr: int, dc: int) -> bool:
            r, c = cells[k]
            if blocked[r + dr, c + dc]:
                return False
            blocked[r, c], blocked[r + dr, c + dc] = False, True
            cells[k] = [r + dr, c + dc]
            return True

        cell_hist = np.empty((cfg.steps + 1, n + d, 2), np.int64)  # [T,N,2]
        head_hist = np.empty((cfg.steps + 1, n), np.int64)  # [T,N_agents]
        cell_hist[0], head_hist[0] = cells, heading
        for t in range(cfg.steps):
            for i in range(n):
                a = actions[t, i]
                if a == TURN_LEFT:
                    heading[i] = (heading[i] - 1) % 4
                elif a == TURN_RIGHT:
                    heading[i] = (heading[i] + 1) % 4
                elif a == FORWARD:
                    try_move(i, *STEP[heading[i]])
            for j in range(d):
                if not try_move(n + j, *drift[j]):
                    drift[j] = (-drift[j][0], -drift[j][1])  # bounce: reverse, and move back if free
                    try_move(n + j, *drift[j])
            cell_hist[t + 1], head_hist[t + 1] = cells, heading
        return self._render(cell_hist, head_hist, actions)

    def _render(self, cell_hist: np.ndarray, head_hist: np.ndarray, actions: np.ndarray) -> Episode:
        """Paste tiles into a [T,8,8] tile-id grid, expand it to pixels, colour it over the background."""
        cfg = self.config
        n, d, c = cfg.n_agents, cfg.distractors, self.cell
        steps1 = cfg.steps + 1
        tile_ids = np.zeros((steps1, ROOM, ROOM), np.int64)  # [T,8,8]
        agent_tiles = 1 + 4 * np.arange(n)[None, :] + head_hist  # [T,N_agents]
        distractor_tiles = np.broadcast_to(1 + 4 * n + np.arange(d)[None, :], (steps1, d))  # [T,D]
        t_index = np.arange(steps1)[:, None]  # [T,1]
        tile_ids[t_index, cell_hist[..., 0], cell_hist[..., 1]] = np.concatenate(
            [agent_tiles, distractor_tiles], axis=1
        )
        entity_map = self._mask_tiles[tile_ids]  # [T,8,8,c,c]
        entity_map = entity_map.transpose(0, 1, 3, 2, 4).reshape(steps1, ROOM * c, ROOM * c)  # [T,H,W]
        frames = np.where(entity_map[..., None] > 0, self._lut[entity_map], self._background)  # [T,H,W,3]
        positions = ((cell_hist + 0.5) * c).astype(np.float32)  # [T,N,2] cell centres in pixels
        headings = np.concatenate([head_hist, np.full((steps1, d), -1)], axis=1).astype(np.int8)  # [T,N]
        truth_actions = np.concatenate([actions, np.full((cfg.steps, d), -1, np.int16)], axis=1)  # [T-1,N]
        truth = GroundTruth(
            actions=truth_actions.astype(np.int16),
            positions=positions,
            headings=headings,
            entity_map=entity_map.astype(np.uint8),
        )
        return Episode(frames=frames.astype(np.uint8), truth=truth)
