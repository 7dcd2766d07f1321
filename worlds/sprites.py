"""Sprites world: coloured shapes in continuous 2-D, each pushed by its own discrete acceleration actions.

Each agent picks none / up / down / left / right, repeating its previous action with probability
`persistence`; velocity is damped, clipped and bounces off the frame edges. Shapes may overlap: distractors
are drawn first, then agents in index order, so a later agent occludes an earlier one.
Lengths (radius, acceleration, speeds) are fractions of the frame side, so any image size looks the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flam.worlds.episode import Episode, GroundTruth
from flam.worlds.palettes import FLOOR, color_table, entity_colors
from flam.worlds.policy import WorldConfig, persistent_actions

ACTION_NAMES = ("none", "up", "down", "left", "right")
PUSH = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)], np.float32)  # (d_row, d_col) per action

# Shape tests on offsets (dy, dx) from the centre in units of the radius; agent i gets SHAPES[i % 8].
ShapeTest = Callable[[np.ndarray, np.ndarray], np.ndarray]
SHAPES: dict[str, ShapeTest] = {
    "circle": lambda dy, dx: dy * dy + dx * dx <= 1.0,
    "square": lambda dy, dx: np.maximum(np.abs(dy), np.abs(dx)) <= 0.8,
    "diamond": lambda dy, dx: np.abs(dy) + np.abs(dx) <= 1.0,
    "triangle": lambda dy, dx: (dy <= 0.8) & (np.abs(dx) <= (dy + 0.9) / 1.7),
    "cross": lambda dy, dx: (np.minimum(np.abs(dy), np.abs(dx)) <= 0.33) & (np.maximum(np.abs(dy), np.abs(dx)) <= 1.0),
    "ring": lambda dy, dx: (dy * dy + dx * dx <= 1.0) & (dy * dy + dx * dx >= 0.3),
    "hexagon": lambda dy, dx: (np.abs(dy) <= 0.87) & (np.abs(dx) + np.abs(dy) * 0.577 <= 1.0),
    "hourglass": lambda dy, dx: (np.abs(dy) <= 0.9) & (np.abs(dx) <= np.abs(dy)),
}
DISTRACTOR_SHAPE = "circle"


@dataclass(frozen=True)
class SpritesConfig(WorldConfig):
    """The shared options plus the physics; distractors are grey circles moving at constant speed and bouncing."""

    radius: float = 0.09  # shape radius / frame side
    accel: float = 0.012  # velocity change per push / frame side
    damping: float = 0.9  # velocity multiplier per step
    max_speed: float = 0.05  # per-axis speed limit / frame side per step
    distractor_speed: float = 0.025  # distractor speed / frame side per step

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.radius < 0.25:
            raise ValueError(f"radius: expected a fraction of the frame side in (0, 0.25), got {self.radius}")
        if not 0.0 < self.damping <= 1.0:
            raise ValueError(f"damping: expected a factor in (0, 1], got {self.damping}")


class SpritesWorld:
    """Simulates and renders sprites episodes; one instance serves any number of seeds."""

    def __init__(self, config: SpritesConfig) -> None:
        self.config = config
        self.colors = entity_colors(config.palette, config.n_agents, config.distractors)
        self.action_names = list(ACTION_NAMES)
        shape_names = list(SHAPES)
        self.shapes = [shape_names[i % len(shape_names)] for i in range(config.n_agents)]
        self.shapes += [DISTRACTOR_SHAPE] * config.distractors
        self._lut = color_table(self.colors, FLOOR)  # uint8 [N+1,3]

    @property
    def n_entities(self) -> int:
        """Agents plus distractors."""
        return self.config.n_agents + self.config.distractors

    def sample_actions(self, rng: np.random.Generator) -> np.ndarray:
        """int16 [steps,n_agents]: each agent's persistent random policy (see `persistent_actions`)."""
        cfg = self.config
        return persistent_actions(rng, cfg.steps, cfg.n_agents, len(ACTION_NAMES), cfg.persistence, cfg.correlated)

    def episode(self, rng: np.random.Generator) -> Episode:
        """Simulate one episode from `rng` and render its frames and ground truth."""
        cfg = self.config
        n, d, size = cfg.n_agents, cfg.distractors, float(cfg.image_size)
        radius = cfg.radius * size
        low, high = radius, size - radius
        pos = rng.uniform(low, high, (n + d, 2)).astype(np.float32)  # [N,2]
        angle = rng.uniform(0.0, 2.0 * np.pi, d)
        vel = np.zeros((n + d, 2), np.float32)  # [N,2]
        vel[n:, 0] = cfg.distractor_speed * size * np.sin(angle)
        vel[n:, 1] = cfg.distractor_speed * size * np.cos(angle)
        actions = self.sample_actions(rng)

        pos_hist = np.empty((cfg.steps + 1, n + d, 2), np.float32)  # [T,N,2]
        pos_hist[0] = pos
        limit = cfg.max_speed * size
        for t in range(cfg.steps):
            push = PUSH[actions[t]] * (cfg.accel * size)  # [N_agents,2]
            vel[:n] = np.clip((vel[:n] + push) * cfg.damping, -limit, limit)
            pos = pos + vel
            below, above = pos < low, pos > high  # [N,2] each
            pos = np.where(below, 2 * low - pos, np.where(above, 2 * high - pos, pos))  # reflect off the edge
            vel = np.where(below | above, -vel, vel)
            pos_hist[t + 1] = pos
        return self._render(pos_hist, actions)

    def _render(self, pos_hist: np.ndarray, actions: np.ndarray) -> Episode:
        """Rasterise each shape in a small window around its centre, back to front, then colour the map."""
        cfg = self.config
        n, d, size = cfg.n_agents, cfg.distractors, cfg.image_size
        steps1 = cfg.steps + 1
        radius = cfg.radius * size
        win = int(np.ceil(2 * radius)) + 3  # window side in pixels, covers the shape wherever it sits
        pad = win
        canvas = np.zeros((steps1, size + 2 * pad, size + 2 * pad), np.uint8)  # [T,H+2p,W+2p]
        offsets = np.arange(win)  # [win]
        t_index = np.arange(steps1)[:, None, None]  # [T,1,1]
        for k in [*range(n, n + d), *range(n)]:  # draw order: distractors, then agents 0..n-1 on top
            corner = np.floor(pos_hist[:, k] - radius).astype(np.int64) - 1  # [T,2] window top-left pixel
            rows = corner[:, 0:1] + offsets  # [T,win]
            cols = corner[:, 1:2] + offsets  # [T,win]
            dy = (rows + 0.5 - pos_hist[:, k, 0:1])[:, :, None] / radius  # [T,win,1] pixel centres
            dx = (cols + 0.5 - pos_hist[:, k, 1:2])[:, None, :] / radius  # [T,1,win]
            inside = SHAPES[self.shapes[k]](dy, dx)  # [T,win,win]
            r_idx, c_idx = rows[:, :, None] + pad, cols[:, None, :] + pad  # [T,win,1], [T,1,win]
            window = canvas[t_index, r_idx, c_idx]  # [T,win,win]
            canvas[t_index, r_idx, c_idx] = np.where(inside, k + 1, window)
        entity_map = canvas[:, pad : pad + size, pad : pad + size]  # [T,H,W]
        frames = self._lut[entity_map]  # [T,H,W,3]
        truth = GroundTruth(
            actions=np.concatenate([actions, np.full((cfg.steps, d), -1, np.int16)], axis=1),  # [T-1,N]
            positions=pos_hist,
            headings=np.full((steps1, n + d), -1, np.int8),
            entity_map=np.ascontiguousarray(entity_map),
        )
        return Episode(frames=frames, truth=truth)
