"""Caches that only make repeats faster: encoded contexts, and recent rollouts per context for prefix reuse.

Nothing here changes a result: a rollout is a pure function of (model, context, plan, seed), and a cached
prefix is exactly what recomputing it would give. Both caches are bounded (entries, bytes) and thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch

from flam.models.actions import first_difference
from flam.models.lam import Inference, LAMState
from flam.models.rollout import Rollout

V = TypeVar("V")
UNBOUNDED = 1 << 62  # an entry bound that never binds (the byte bound does)


class LRU(Generic[V]):
    """A thread-safe least-recently-used map bounded by entry count and by the sum of `size(value)`."""

    def __init__(self, max_entries: int, max_bytes: int | None = None, size: Callable[[V], int] | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._size = size or (lambda value: 0)
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        if self.max_entries == 0:
            return
        nbytes = self._size(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while len(self._items) > self.max_entries or (
                self.max_bytes is not None and self._bytes > self.max_bytes and len(self._items) > 1
            ):
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def stats(self) -> dict[str, int]:
        """Entries, bytes, hits and misses, for /health."""
        return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}


@dataclass
class EpisodeAnalysis:
    """A whole bundled episode read by one model: its codes and the LAM's slots, masks and actions."""

    z: torch.Tensor  # [1, T, E, h, w] on the model's device
    inference: Inference  # masks [1, T, K, h, w], actions [1, T-1, K, A]


@dataclass
class EncodedContext:
    """A rollout's starting point: the context frames, the state after them and the actions they imply."""

    frames: np.ndarray  # uint8 [C, H, W, 3]
    frames_b64: list[str] | None  # the frames as normalised base64 PNGs (uploaded contexts), for the recipe
    state: LAMState  # the state after the last context frame, on the model's device
    inferred: torch.Tensor | None  # [F, K, A] posterior means of the F transitions after the context, or None
    label: str  # how errors name this context, e.g. "episode 3 (start 0, length 1)"


def tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def state_bytes(state: LAMState) -> int:
    """Memory held by one LAMState."""
    total = tensor_bytes(state.z) + tensor_bytes(state.slots) + tensor_bytes(state.masks)
    if state.cache is not None:
        total += tensor_bytes(state.cache.history) + tensor_bytes(state.cache.valid) + tensor_bytes(state.cache.slots)
    return total


def rollout_bytes(rollout: Rollout) -> int:
    """Memory held by a Rollout (frames, codes, masks, actions and every intermediate state)."""
    tensors = (rollout.frames, rollout.z, rollout.masks, rollout.actions)
    return sum(tensor_bytes(t) for t in tensors) + sum(state_bytes(s) for s in rollout.states)


class RolloutCache:
    """Recent rollouts per context; `best_prefix` finds the one sharing the longest plan prefix with a new plan."""

    def __init__(self, max_bytes: int, per_context: int) -> None:
        self.per_context = per_context
        self._lru: LRU[list[Rollout]] = LRU(
            max_entries=UNBOUNDED if max_bytes else 0,
            max_bytes=max_bytes,
            size=lambda rollouts: sum(rollout_bytes(r) for r in rollouts),
        )

    def best_prefix(self, key: Hashable, plan: torch.Tensor) -> tuple[Rollout | None, int]:
        """(cached rollout, reusable steps) for plan [H, K, A]; (None, 0) when nothing can be reused."""
        best, best_steps = None, 0
        for cached in self._lru.get(key) or []:
            common = min(cached.horizon, plan.shape[0])
            steps = first_difference(cached.actions[0, :common], plan[:common])
            if steps > best_steps:
                best, best_steps = cached, steps
        return best, best_steps

    def put(self, key: Hashable, rollout: Rollout) -> None:
        """Remember a batch-1 rollout for this context (most recent first, at most `per_context`)."""
        previous = [r for r in (self._lru.get(key) or []) if not torch.equal(r.actions, rollout.actions)]
        self._lru.put(key, [rollout, *previous][: self.per_context])

    def stats(self) -> dict[str, int]:
        return self._lru.stats()

    def clear(self) -> None:
        self._lru.clear()
