"""What both latent action models (FLAM and the monolithic baseline) share: their state, loss and interface."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Protocol

import torch

from flam.models.factorizer import FactorizerCache
from flam.models.layers import gaussian_kl
from flam.models.outputs import Loss

# A slot whose mean action rate (KL from the prior, nats per transition) is below this carries no action: editing
# it moves nothing, whatever its mask covers. Trained slots sit either near 0 or above ~0.8 (reports/binding).
ACTIVE_RATE = 0.5


def action_slot_indices(mean_rates: torch.Tensor) -> list[int]:
    """Which slots carry actions, from each slot's mean rate [K] (nats per transition)."""
    return [int(k) for k in torch.nonzero(mean_rates >= ACTIVE_RATE).flatten()]


def count_action_slots(mean_rates: torch.Tensor) -> int:
    """How many slots carry actions, from each slot's mean rate [K] (nats per transition)."""
    return len(action_slot_indices(mean_rates))


@dataclass
class Inference:
    """What a model reads off a clip of T frames: slots, slot masks and the posterior-mean actions."""

    slots: torch.Tensor  # [B, T, K, D] (monolithic: K = 1, D = 0)
    masks: torch.Tensor  # [B, T, K, h, w] sums to 1 over K (to at most 1 with a background sink)
    actions: torch.Tensor  # [B, T-1, K, A] posterior means
    action_std: torch.Tensor  # [B, T-1, K, A] posterior standard deviations

    def rates(self) -> torch.Tensor:
        """[B, T-1, K] each action's KL(posterior || prior) in nats: how much information a slot's action carries."""
        std = self.action_std.float()
        return gaussian_kl(self.actions.float(), 2 * std.clamp_min(1e-6).log())


@dataclass
class LAMState:
    """Everything a rollout step needs of the past. Batched, so that requests can be stacked into one pass."""

    z: torch.Tensor  # [B, E, h, w] the current feature grid
    slots: torch.Tensor  # [B, K, D] the current slots (monolithic: [B, 1, 0])
    masks: torch.Tensor  # [B, K, h, w]
    cache: FactorizerCache | None  # FLAM's temporal memory; None for the monolithic baseline

    def select(self, index: torch.Tensor | slice | int) -> LAMState:
        """The states of some batch entries (an int keeps the batch axis)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        cache = None
        if self.cache is not None:
            cache = FactorizerCache(self.cache.history[:, index], self.cache.valid[index], self.cache.slots[index])
        return LAMState(self.z[index], self.slots[index], self.masks[index], cache)

    @staticmethod
    def cat(states: list[LAMState]) -> LAMState:
        """Stack states along the batch axis."""
        first = states[0]
        cache = None
        if first.cache is not None:
            cache = FactorizerCache(
                torch.cat([s.cache.history for s in states], dim=1),
                torch.cat([s.cache.valid for s in states], dim=0),
                torch.cat([s.cache.slots for s in states], dim=0),
            )
        return LAMState(
            torch.cat([s.z for s in states]),
            torch.cat([s.slots for s in states]),
            torch.cat([s.masks for s in states]),
            cache,
        )

    def to(self, device: torch.device) -> LAMState:
        cache = self.cache
        if cache is not None:
            cache = replace(cache, **{f.name: getattr(cache, f.name).to(device) for f in fields(cache)})
        return LAMState(self.z.to(device), self.slots.to(device), self.masks.to(device), cache)


class LatentActionModel(Protocol):
    """The interface the rollout, the trainer and the evaluation use; FLAM and Monolithic implement it."""

    n_slots: int  # K (1 for the monolithic baseline)
    action_dim: int  # A = d / K

    def forward(self, z: torch.Tensor) -> Loss:
        """Training objective on feature sequences z [B, T, E, h, w]."""

    def infer(self, z: torch.Tensor) -> Inference:
        """Slots, masks and posterior-mean actions for a clip z [B, T, E, h, w]."""

    def start(self, z: torch.Tensor) -> LAMState:
        """The state after observing context z [B, C, E, h, w]."""

    def predict(self, state: LAMState, actions: torch.Tensor) -> torch.Tensor:
        """Next feature grid [B, E, h, w] (continuous, before FSQ) from a state and actions [B, K, A]."""

    def observe(self, state: LAMState, z: torch.Tensor) -> LAMState:
        """The state after the (quantized) next feature grid z [B, E, h, w]."""
