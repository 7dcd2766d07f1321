"""What the studio's controls mean, in numbers: slider axes per slot, the edit they make, and the two POST /rollout
requests (the baseline and the edited one) that differ only in the selected slot's actions.

No HTTP and no Gradio here: the functions map control values to API request bodies and back, so every rule is
tested on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Mode = Literal["delta", "set"]
Steps = Literal["all", "from", "one"]
Others = Literal["keep", "zero", "sample"]
DECIMALS = 6  # action values in requests: enough for float32, short in recipes
MIN_RANGE = 4.0  # sliders span at least +-4 (the prior is N(0, I))
NAME_MIN_COSINE = 0.5  # a direction is named after an action only when it points that way this clearly
# Keyboard shortcuts for ground-truth action names; other names get the digits 1..9 in order.
NAMED_KEYS = {"forward": "W", "turn left": "A", "left": "A", "turn right": "D", "right": "D", "stay": "S"}


@dataclass(frozen=True)
class SlotAxes:
    """A slot's slider axes from GET /action-stats: principal directions (rows, most variance first)."""

    mean: np.ndarray  # [A] mean inferred action
    directions: np.ndarray  # [A, A] orthonormal rows
    explained: np.ndarray  # [A] share of the variance along each direction
    by_name: dict[str, np.ndarray] = field(default_factory=dict)  # mean action per true action name
    entity_share: np.ndarray | None = None  # [N] share of frames in which this slot owns entity n

    @classmethod
    def identity(cls, action_dim: int) -> SlotAxes:
        """Axes of a model without statistics: the raw basis, centred on zero."""
        return cls(np.zeros(action_dim), np.eye(action_dim), np.full(action_dim, 1.0 / action_dim))


def slot_axes(stats: dict[str, Any] | None, n_slots: int, action_dim: int) -> list[SlotAxes]:
    """Every slot's axes from an /action-stats body (identity axes when there is none)."""
    if stats is None:
        return [SlotAxes.identity(action_dim) for _ in range(n_slots)]
    out = []
    for entry in stats["slots"]:
        share = entry.get("entity_share")
        out.append(
            SlotAxes(
                mean=np.asarray(entry["mean"], dtype=np.float64),
                directions=np.asarray(entry["directions"], dtype=np.float64),
                explained=np.asarray(entry["explained_variance_ratio"], dtype=np.float64),
                by_name={
                    k: np.asarray(v["mean"], dtype=np.float64) for k, v in entry.get("by_action_name", {}).items()
                },
                entity_share=None if share is None else np.asarray(share, dtype=np.float64),
            )
        )
    return out


def slider_range(axes: list[SlotAxes]) -> float:
    """The +-range of every slider: wide enough for the prior and for each slot's mean action."""
    widest = max((float(np.abs(a.mean).max()) for a in axes if a.mean.size), default=0.0)
    return float(math.ceil(max(MIN_RANGE, 2.0 * widest + 1.0)))


def to_sliders(vector: np.ndarray, axes: SlotAxes, principal: bool) -> np.ndarray:
    """An action-space vector [A] -> slider values [A] on the chosen axes."""
    return axes.directions @ vector if principal else vector.copy()


def from_sliders(values: np.ndarray, axes: SlotAxes, principal: bool) -> np.ndarray:
    """Slider values [A] on the chosen axes -> the action-space vector [A]."""
    return axes.directions.T @ values if principal else values.copy()


def direction_names(axes: SlotAxes) -> list[str | None]:
    """For each principal direction, the true action it most resembles ('forward', '-turn left'), or None."""
    names: list[str | None] = []
    for direction in axes.directions:
        best, best_cos = None, NAME_MIN_COSINE
        for name, mean in axes.by_name.items():
            offset = mean - axes.mean
            norm = float(np.linalg.norm(offset))
            if norm == 0.0:
                continue
            cosine = float(direction @ offset / norm)
            if abs(cosine) > best_cos:
                best, best_cos = (name if cosine > 0 else f"-{name}"), abs(cosine)
        names.append(best)
    return names


def shortcut_keys(action_names: list[str]) -> list[str]:
    """A distinct keyboard key per action name: W/A/S/D for the usual names, else digits."""
    keys: list[str] = []
    digits = iter("123456789")
    for name in action_names:
        key = NAMED_KEYS.get(name.lower())
        keys.append(key if key is not None and key not in keys else next(digits, ""))
    return keys


@dataclass(frozen=True)
class SlotEdit:
    """The selected slot's edit: `vector` added to its base action ('delta') or replacing it ('set')."""

    slot: int
    mode: Mode
    vector: tuple[float, ...]
    steps: Steps = "all"
    step: int = 0

    def is_noop(self) -> bool:
        return self.mode == "delta" and not any(self.vector)


def edit_steps(steps: Steps, step: int, horizon: int) -> list[int] | None:
    """The rollout steps an edit applies to (None: all of them)."""
    step = min(max(0, int(step)), horizon - 1)
    if steps == "all":
        return None
    if steps == "from":
        return list(range(step, horizon))
    return [step]


def _vector(values: np.ndarray) -> list[float]:
    return [round(float(v), DECIMALS) + 0.0 for v in values]


def _edit_entry(edit: SlotEdit, horizon: int, slot: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"slot": edit.slot if slot is None else slot}
    steps = edit_steps(edit.steps, edit.step, horizon)
    if steps is not None:
        entry["steps"] = steps
    entry[edit.mode] = _vector(np.asarray(edit.vector))
    return entry


@dataclass(frozen=True)
class Context:
    """Where rollouts start: an API `context` body, the horizon, and the inferred actions [H, K, A] if known."""

    model: str
    body: dict[str, Any]
    horizon: int
    inferred: np.ndarray | None


def base_request(context: Context, others: Others, seed: int, slot: int) -> dict[str, Any]:
    """The baseline: every slot on its base plan, the others as chosen, the selected slot on its inferred actions.

    With others 'zero' or 'sample' the base plan is 'zero' or 'prior' and the selected slot is set back to its
    inferred action on every step, so the baseline and the edit differ only where the edit applies.
    """
    request: dict[str, Any] = {
        "model": context.model,
        "context": context.body,
        "horizon": context.horizon,
        "seed": seed,
        "return_masks": True,
        "edits": [],
    }
    if context.inferred is None:
        request["actions"] = "prior" if others == "sample" else "zero"
        return request
    if others == "keep":
        request["actions"] = "inferred"
        return request
    request["actions"] = "zero" if others == "zero" else "prior"
    request["edits"] = [
        {"slot": slot, "steps": [t], "set": _vector(context.inferred[t, slot])} for t in range(context.horizon)
    ]
    return request


def edited_request(context: Context, others: Others, seed: int, edit: SlotEdit) -> dict[str, Any]:
    """The baseline plus the selected slot's edit (the same request when the edit changes nothing)."""
    request = base_request(context, others, seed, edit.slot)
    if not edit.is_noop():
        request["edits"] = [*request["edits"], _edit_entry(edit, context.horizon)]
    return request


def monolithic_edit(edit: SlotEdit, flam: SlotAxes, mono: SlotAxes) -> SlotEdit:
    """The same edit for the monolithic baseline: the slot's displacement along its principal directions, applied
    to the one scene action along the baseline's own top principal directions (one action moves every entity)."""
    vector = np.asarray(edit.vector, dtype=np.float64)
    reference = np.zeros_like(vector) if edit.mode == "delta" else flam.mean
    coords = flam.directions @ (vector - reference)  # [A]
    top = mono.directions[: coords.shape[0]]  # [A, d]
    moved = top.T @ coords  # [d]
    if edit.mode == "set":
        moved = mono.mean + moved
    return SlotEdit(0, edit.mode, tuple(_vector(moved)), edit.steps, edit.step)


def monolithic_requests(context: Context, others: Others, seed: int, edit: SlotEdit) -> tuple[dict, dict]:
    """(baseline, edited) requests for the monolithic model: one action for the whole scene (slot 0)."""
    base = {
        "model": context.model,
        "context": context.body,
        "horizon": context.horizon,
        "seed": seed,
        "return_masks": False,
        "edits": [],
        "actions": "inferred" if context.inferred is not None else ("prior" if others == "sample" else "zero"),
    }
    edited = dict(base)
    if not edit.is_noop():
        edited["edits"] = [_edit_entry(edit, context.horizon)]
    return base, edited


def prior_sample(action_dim: int, seed: int) -> np.ndarray:
    """A draw from the prior N(0, I) for 'sample prior' (numpy; reproducible by seed)."""
    return np.random.default_rng(seed).standard_normal(action_dim)


def correspondence(entity_slots: np.ndarray, n_slots: int) -> np.ndarray:
    """Owner slot per frame and entity [T, N] (-1: not visible) -> share of visible frames slot k owns n [K, N]."""
    n_entities = entity_slots.shape[1]
    share = np.zeros((n_slots, n_entities))
    for n in range(n_entities):
        visible = entity_slots[:, n] >= 0
        if visible.any():
            share[:, n] = np.bincount(entity_slots[visible, n], minlength=n_slots)[:n_slots] / visible.sum()
    return share


def changed_slots(a: np.ndarray, b: np.ndarray) -> list[int]:
    """Slots whose actions differ between two plans [H, K, A]."""
    return [int(k) for k in np.flatnonzero((a != b).any(axis=(0, 2)))]
