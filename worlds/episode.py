"""One episode of video and, for built-in worlds, its per-frame ground truth (kept for evaluation only).

Legend: T frames, N entities (agents first, then distractors), H×W pixels. Positions are (row, col) of an
entity's centre in pixels of the rendered frame, where pixel (i, j) covers [i, i+1) × [j, j+1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEADING_NAMES = ("right", "down", "left", "up")  # heading codes 0..3; -1 where an entity has no heading
TRANSITION_KINDS = ("moved", "turned", "neither")  # GroundTruth.transitions codes 0..2


@dataclass(frozen=True)
class GroundTruth:
    """What each entity did and where it was, per frame: the reference that evaluation compares factors to."""

    actions: np.ndarray  # int16 [T-1,N]: action between frame t and t+1; -1 for entities without actions
    positions: np.ndarray  # float32 [T,N,2]: (row, col) centre in pixels
    headings: np.ndarray  # int8 [T,N]: 0 right, 1 down, 2 left, 3 up; -1 where not applicable
    entity_map: np.ndarray  # uint8 [T,H,W]: 0 no entity, i+1 where entity i is the visible one

    @property
    def n_entities(self) -> int:
        """Number of entities N."""
        return int(self.positions.shape[1])

    def transitions(self, cell: int) -> np.ndarray:
        """What each entity did between frames t and t+1 on a grid of `cell`-pixel cells, int8 [T-1, N]:
        TRANSITION_KINDS index (0 moved to another cell, 1 turned in place, 2 neither: stayed or was blocked)."""
        cells = (self.positions // cell).astype(int)  # [T, N, 2]
        moved = (cells[1:] != cells[:-1]).any(axis=-1)
        turned = self.headings[1:] != self.headings[:-1]
        return np.where(moved, 0, np.where(turned, 1, 2)).astype(np.int8)

    def check(self, frames_shape: tuple[int, ...]) -> None:
        """Raise ValueError unless every array has the dtype and shape that matches frames [T,H,W,3]."""
        t, h, w = frames_shape[:3]
        n = self.n_entities
        expected = {
            "actions": (self.actions, np.int16, (t - 1, n)),
            "positions": (self.positions, np.float32, (t, n, 2)),
            "headings": (self.headings, np.int8, (t, n)),
            "entity_map": (self.entity_map, np.uint8, (t, h, w)),
        }
        for name, (array, dtype, shape) in expected.items():
            if array.dtype != dtype or array.shape != shape:
                raise ValueError(
                    f"ground truth {name}: expected {np.dtype(dtype).name} {list(shape)}, "
                    f"got {array.dtype.name} {list(array.shape)}"
                )


@dataclass(frozen=True)
class Episode:
    """Frames of one episode plus optional ground truth (None for imported video)."""

    frames: np.ndarray  # uint8 [T,H,W,3]
    truth: GroundTruth | None = None

    def check(self) -> None:
        """Raise ValueError unless frames are uint8 [T>=2,H,W,3] and the ground truth matches them."""
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[3] != 3 or f.shape[0] < 2:
            raise ValueError(f"episode frames: expected uint8 [T>=2,H,W,3], got {f.dtype.name} {list(f.shape)}")
        if self.truth is not None:
            self.truth.check(f.shape)
