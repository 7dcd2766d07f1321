"""The model worker: one thread runs all torch work, and stacks concurrent rollouts into one forward pass.

Requests never touch a model from the event loop. They queue jobs here (a bounded queue: when it is full the
caller answers 503 with Retry-After) and await their futures. When the worker picks up a rollout job, it takes
every queued rollout job for the same model with the same number of steps left (up to `max_batch`), stacks their
states with `LAMState.cat` and rolls them out together through the one rollout path. Each request gets back the
same frames it would get alone (the stacked pass is exact per request; a test checks it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from flam.models.lam import LAMState
from flam.models.rollout import Rollout, rollout
from flam.models.world_model import WorldModel


class Busy(Exception):
    """The worker's queue is full: the caller should retry shortly."""


@dataclass
class RolloutJob:
    """One request's rollout: steps `from_step`..H-1 of `plan`, reusing `prefix` for the steps before."""

    world: WorldModel
    start: LAMState  # the state before step `from_step` (batch 1, on the model's device)
    plan: torch.Tensor  # [H, K, A] the whole plan (CPU)
    prefix: Rollout | None  # a rollout that agrees with `plan` on steps < from_step (None when from_step == 0)
    from_step: int
    solo: bool = False  # run alone, never stacked (caches and batching off for this request)

    @property
    def remaining(self) -> int:
        return self.plan.shape[0] - self.from_step


@dataclass
class JobResult:
    rollout: Rollout  # batch 1, the whole horizon
    queued_ms: float  # time waiting for the worker
    compute_ms: float  # time of the (stacked) forward pass
    batch_size: int  # requests stacked into that pass


@dataclass
class _Item:
    payload: RolloutJob | Callable[[], Any]
    future: Future
    queued_at: float = field(default_factory=time.perf_counter)


def _owned(state: LAMState) -> LAMState:
    """A copy of a state that owns its memory (a slice would keep the whole stacked batch alive in a cache)."""
    cache = state.cache
    if cache is not None:
        cache = replace(cache, **{f.name: getattr(cache, f.name).clone() for f in fields(cache)})
    return LAMState(state.z.clone(), state.slots.clone(), state.masks.clone(), cache)


def select(batch: Rollout, index: int) -> Rollout:
    """Entry `index` of a batched rollout, as a batch-1 rollout with memory of its own."""
    if batch.frames.shape[0] == 1:
        return batch
    i = slice(index, index + 1)
    return Rollout(
        batch.frames[i].clone(),
        batch.z[i].clone(),
        batch.masks[i].clone(),
        batch.actions[i].clone(),
        [_owned(s.select(index)) for s in batch.states],
    )


def join(job: RolloutJob, tail: Rollout) -> Rollout:
    """A job's whole rollout: the cached prefix's steps before `from_step`, then the newly computed steps."""
    plan = job.plan[None]  # [1, H, K, A]
    if job.prefix is None or job.from_step == 0:
        return Rollout(tail.frames, tail.z, tail.masks, plan, tail.states)
    p, j = job.prefix, job.from_step
    return Rollout(
        torch.cat([p.frames[:, :j], tail.frames], dim=1),  # [1, H, H_px, W_px, 3]
        torch.cat([p.z[:, :j], tail.z], dim=1),  # [1, H, E, h, w]
        torch.cat([p.masks[:, :j], tail.masks], dim=1),  # [1, H, K, h, w]
        plan,
        p.states[:j] + tail.states,  # tail.states[0] is p.states[j]
    )


def reuse_whole(prefix: Rollout, plan: torch.Tensor) -> Rollout:
    """A rollout whose plan [H, K, A] is a prefix of a cached one's: nothing to compute."""
    h = plan.shape[0]
    return Rollout(prefix.frames[:, :h], prefix.z[:, :h], prefix.masks[:, :h], plan[None], prefix.states[: h + 1])


class ModelWorker:
    """A single thread that owns all model computation, with a bounded queue and rollout stacking."""

    def __init__(self, max_queue: int, max_batch: int, batching: bool = True, window_s: float = 0.0) -> None:
        self.max_queue = max_queue
        self.max_batch = max_batch if batching else 1
        self.window_s = window_s
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.batches = 0
        self.stacked = 0  # rollout jobs that ran stacked with at least one other

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="flam-model-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the running job, cancel the queued ones and end the thread."""
        with self._cond:
            self._stopping = True
            while self._queue:
                self._queue.popleft().future.cancel()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet running)."""
        return len(self._queue)

    def submit(self, payload: RolloutJob | Callable[[], Any]) -> Future:
        """Queue a rollout job or a call; raise Busy when the queue is full."""
        item = _Item(payload, Future())
        with self._cond:
            if self._stopping:
                raise Busy("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise Busy(f"{len(self._queue)} jobs are already waiting")
            self._queue.append(item)
            self._cond.notify()
        return item.future

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                group = self._take()
            if isinstance(group[0].payload, RolloutJob):
                self._run_rollouts(group)
            else:
                self._run_call(group[0])

    def _take(self) -> list[_Item]:
        """The next item, plus every queued rollout that can share its forward pass (lock held)."""
        head = self._queue.popleft()
        job = head.payload
        if not isinstance(job, RolloutJob) or job.solo or self.max_batch == 1:
            return [head]
        if self.window_s > 0 and not any(self._fits(job, item) for item in self._queue):
            self._cond.wait(self.window_s)  # give concurrent requests a moment to join
        group, kept = [head], deque()
        while self._queue:
            item = self._queue.popleft()
            if len(group) < self.max_batch and self._fits(job, item):
                group.append(item)
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        return group

    @staticmethod
    def _fits(job: RolloutJob, item: _Item) -> bool:
        other = item.payload
        return (
            isinstance(other, RolloutJob)
            and not other.solo
            and other.world is job.world
            and other.remaining == job.remaining
        )

    def _run_call(self, item: _Item) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.future.set_result(item.payload())
        except BaseException as error:  # noqa: BLE001 - handed to the waiting request
            item.future.set_exception(error)

    def _run_rollouts(self, group: list[_Item]) -> None:
        live = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        jobs: list[RolloutJob] = [item.payload for item in live]
        try:
            states = LAMState.cat([j.start for j in jobs]) if len(jobs) > 1 else jobs[0].start
            actions = torch.stack([j.plan[j.from_step :] for j in jobs])  # [B, L, K, A]
            batch = rollout(jobs[0].world, states, actions)
            done = time.perf_counter()
            self.batches += 1
            self.stacked += len(jobs) if len(jobs) > 1 else 0
            for index, (item, job) in enumerate(zip(live, jobs, strict=True)):
                result = JobResult(
                    join(job, select(batch, index)),
                    queued_ms=(started - item.queued_at) * 1000,
                    compute_ms=(done - started) * 1000,
                    batch_size=len(jobs),
                )
                item.future.set_result(result)
        except BaseException as error:  # noqa: BLE001 - handed to every waiting request
            for item in live:
                if not item.future.done():
                    item.future.set_exception(error)
