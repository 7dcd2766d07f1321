"""The one rollout path: state + actions -> autoregressive prediction -> FSQ -> decoded frames.

Used by the API, the UI, the evaluation and the tests. A rollout keeps the state before every step, so a
re-roll whose plan changes from step j on reuses steps 0..j-1 (and their decoded frames) as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flam.models.lam import LAMState
from flam.models.world_model import WorldModel


@dataclass
class Rollout:
    frames: torch.Tensor  # uint8 [B, H, Hpx, Wpx, 3] predicted frames (CPU)
    z: torch.Tensor  # [B, H, E, h, w] predicted FSQ codes
    masks: torch.Tensor  # [B, H, K, h, w] slot masks of each predicted frame
    actions: torch.Tensor  # [B, H, K, A] the actions used (CPU)
    states: list[LAMState]  # states[j]: the state before step j; len H + 1

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]


@torch.inference_mode()
def rollout(
    model: WorldModel,
    start: LAMState,
    actions: torch.Tensor,
    prefix: Rollout | None = None,
    from_step: int = 0,
) -> Rollout:
    """Roll out actions [B, H, K, A] from `start`; with `prefix`, reuse its first `from_step` steps.

    The prefix must have been rolled out from the same start with the same actions before `from_step`.
    """
    _, horizon, n_slots, action_dim = actions.shape
    if horizon < 1:
        raise ValueError("a rollout needs at least one step")
    if (n_slots, action_dim) != (model.n_slots, model.action_dim):
        raise ValueError(
            f"actions have shape [.., {n_slots}, {action_dim}], the model needs "
            f"[.., {model.n_slots}, {model.action_dim}]"
        )
    actions = actions.float().cpu()
    if prefix is None:
        from_step = 0
    elif not 0 <= from_step <= min(prefix.horizon, horizon):
        raise ValueError(f"from_step {from_step} is outside the prefix (horizon {prefix.horizon})")
    elif not torch.equal(prefix.actions[:, :from_step], actions[:, :from_step]):
        raise ValueError("the prefix was rolled out with other actions before from_step")
    reused = prefix if prefix is not None and from_step > 0 else None
    states = reused.states[: from_step + 1] if reused else [start]
    zs = list(reused.z[:, :from_step].unbind(1)) if reused else []
    masks = list(reused.masks[:, :from_step].unbind(1)) if reused else []
    state = states[-1]
    on_device = actions.to(model.device)
    for j in range(from_step, horizon):
        z_next = model.tokenizer.fsq.snap(model.lam.predict(state, on_device[:, j]))  # [B, E, h, w]
        state = model.lam.observe(state, z_next)
        states.append(state)
        zs.append(z_next)
        masks.append(state.masks)
    z = torch.stack(zs, dim=1)  # [B, H, E, h, w]
    if reused is None:
        frames = model.decode(z)
    elif from_step == horizon:
        frames = reused.frames[:, :horizon]
    else:
        frames = torch.cat([reused.frames[:, :from_step], model.decode(z[:, from_step:])], dim=1)
    return Rollout(frames, z, torch.stack(masks, dim=1), actions, states)
