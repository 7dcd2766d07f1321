"""Action plans for a rollout: a base plan for every slot and step, plus per-slot edits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

BasePlan = Literal["inferred", "prior", "zero"]


@dataclass(frozen=True)
class ActionEdit:
    """Change one slot's action on some steps (None = all): add `delta` to it, or `set` it outright."""

    slot: int
    steps: tuple[int, ...] | None = None
    delta: tuple[float, ...] | None = None
    set: tuple[float, ...] | None = None


def prior_actions(horizon: int, n_slots: int, action_dim: int, seed: int) -> torch.Tensor:
    """Samples from the prior N(0, I), [H, K, A]; drawn on the CPU so every device gets the same numbers."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(horizon, n_slots, action_dim, generator=generator)


def base_actions(
    plan: BasePlan,
    horizon: int,
    n_slots: int,
    action_dim: int,
    seed: int = 0,
    inferred: torch.Tensor | None = None,
) -> torch.Tensor:
    """The base plan as [H, K, A] on the CPU. `inferred` [>=H, K, A] is required for plan 'inferred'."""
    if plan == "zero":
        return torch.zeros(horizon, n_slots, action_dim)
    if plan == "prior":
        return prior_actions(horizon, n_slots, action_dim, seed)
    if plan == "inferred":
        if inferred is None:
            raise ValueError("actions 'inferred' need a context with future frames; use 'prior' or 'zero'")
        if inferred.shape[0] < horizon:
            raise ValueError(
                f"only {inferred.shape[0]} future steps can be inferred from this context, horizon is {horizon}"
            )
        return inferred[:horizon].detach().float().cpu().clone()
    raise ValueError(f"unknown action plan {plan!r}: use 'inferred', 'prior' or 'zero'")


def apply_edits(actions: torch.Tensor, edits: tuple[ActionEdit, ...] | list[ActionEdit]) -> torch.Tensor:
    """actions [H, K, A] with the edits applied in order (a new tensor); bad edits raise ValueError."""
    horizon, n_slots, action_dim = actions.shape
    out = actions.clone()
    for number, edit in enumerate(edits):
        where = f"edit {number}"
        if not 0 <= edit.slot < n_slots:
            raise ValueError(f"{where}: slot {edit.slot} is out of range; this model has slots 0..{n_slots - 1}")
        if (edit.delta is None) == (edit.set is None):
            raise ValueError(f"{where}: give exactly one of 'delta' or 'set'")
        vector = edit.delta if edit.delta is not None else edit.set
        if len(vector) != action_dim:
            raise ValueError(f"{where}: the action vector has {len(vector)} values; this model needs {action_dim}")
        value = torch.tensor(vector, dtype=out.dtype)
        if not torch.isfinite(value).all():
            raise ValueError(f"{where}: the action vector contains NaN or infinity")
        steps = range(horizon) if edit.steps is None else edit.steps
        for step in steps:
            if not 0 <= step < horizon:
                raise ValueError(f"{where}: step {step} is out of range; the horizon has steps 0..{horizon - 1}")
            out[step, edit.slot] = out[step, edit.slot] + value if edit.delta is not None else value
    return out


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int:
    """The first step at which two plans [H, K, A] differ (H when they are equal): a rollout's reusable prefix."""
    differs = (a != b).flatten(1).any(dim=1)  # [H]
    return int(differs.float().argmax()) if differs.any() else a.shape[0]
