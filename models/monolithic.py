"""The monolithic baseline (AdaWorld-style): one Gaussian latent action of size d for the whole frame.

IDM and FDM are transformers over the full feature grid; it shares the tokenizer, the training loop and the
rollout with FLAM and exists so that every claim about factorization is measured against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flam.models.lam import Inference, LAMState
from flam.models.layers import Block, GaussianHead, change_weighted_mse, gaussian_kl, reparameterize
from flam.models.outputs import Loss


@dataclass(frozen=True)
class MonolithicConfig:
    feature_dim: int = 5  # E
    grid: int = 8  # h = w
    width: int = 64  # D
    heads: int = 4
    action_dim: int = 48  # d: the same total action size as FLAM's K * d/K
    idm_layers: int = 3  # layer counts chosen so the parameter count is within 20% of FLAM's default
    fdm_layers: int = 5
    beta: float = 2e-4
    change_weight: float = 0.0  # as FLAMConfig.change_weight: changed tokens weigh 1 + this in the loss; 0 = off

    def __post_init__(self) -> None:
        if self.change_weight < 0:
            raise ValueError("change_weight must be >= 0")


class Monolithic(nn.Module):
    """Genie/AdaWorld-style latent action model with a single action per transition."""

    def __init__(self, config: MonolithicConfig) -> None:
        super().__init__()
        self.config = config
        self.n_slots = 1
        self.action_dim = config.action_dim
        d = config.width
        n = config.grid * config.grid
        self.embed = nn.Linear(config.feature_dim, d)
        self.position = nn.Parameter(torch.randn(n, d) * 0.02)
        self.frame_type = nn.Parameter(torch.randn(2, d) * 0.02)  # current / next frame in the IDM
        self.action_query = nn.Parameter(torch.randn(d) * 0.02)
        self.idm_blocks = nn.ModuleList(Block(d, config.heads) for _ in range(config.idm_layers))
        self.idm_head = GaussianHead(d, config.action_dim)
        self.action_embed = nn.Linear(config.action_dim, d)
        self.fdm_blocks = nn.ModuleList(Block(d, config.heads) for _ in range(config.fdm_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.feature_dim)

    def _tokens(self, z: torch.Tensor) -> torch.Tensor:
        """z [M, E, h, w] -> [M, N, D]."""
        return self.embed(z.flatten(2).transpose(1, 2)) + self.position

    def _posterior(self, z: torch.Tensor, z_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z, z_next [M, E, h, w] -> mean, logvar [M, 1, A]."""
        m = z.shape[0]
        x = torch.cat(
            [
                self._tokens(z) + self.frame_type[0],
                self._tokens(z_next) + self.frame_type[1],
                self.action_query.expand(m, 1, -1),
            ],
            dim=1,
        )  # [M, 2N + 1, D]
        for block in self.idm_blocks:
            x = block(x)
        mean, logvar = self.idm_head(x[:, -1])  # [M, A]
        return mean[:, None], logvar[:, None]

    def _next(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """z [M, E, h, w], actions [M, 1, A] -> next z [M, E, h, w] (residual on z)."""
        m, e, h, w = z.shape
        x = torch.cat([self._tokens(z), self.action_embed(actions)], dim=1)  # [M, N + 1, D]
        for block in self.fdm_blocks:
            x = block(x)
        delta = self.head(self.norm(x[:, :-1])).transpose(1, 2).reshape(m, e, h, w)
        return z + delta

    def forward(self, z: torch.Tensor) -> Loss:
        """One-step prediction loss over a clip z [B, T, E, h, w], the same objective as FLAM's."""
        current, upcoming = z[:, :-1].flatten(0, 1), z[:, 1:].flatten(0, 1)  # [B*(T-1), E, h, w]
        mean, logvar = self._posterior(current, upcoming)
        actions = reparameterize(mean, logvar) if self.training else mean
        z_next = self._next(current, actions)
        squared = (z_next.float() - upcoming.float()) ** 2
        mse = squared.mean()
        kl = gaussian_kl(mean.float(), logvar.float()).sum(-1).mean()
        prediction = change_weighted_mse(squared, current.float(), upcoming.float(), self.config.change_weight)
        loss = prediction + self.config.beta * kl
        return Loss(loss, {"mse": mse.item(), "kl": kl.item()}, z_next.detach().unflatten(0, (z.shape[0], -1)))

    def infer(self, z: torch.Tensor) -> Inference:
        b, t, _, h, w = z.shape
        mean, logvar = self._posterior(z[:, :-1].flatten(0, 1), z[:, 1:].flatten(0, 1))  # [B*(T-1), 1, A]
        shape = (b, t - 1, 1, self.action_dim)
        return Inference(
            z.new_zeros(b, t, 1, 0),
            z.new_ones(b, t, 1, h, w),  # one "slot" owns every token
            mean.reshape(shape),
            (0.5 * logvar).exp().reshape(shape),
        )

    def start(self, z: torch.Tensor) -> LAMState:
        b, _, _, h, w = z.shape
        return LAMState(z[:, -1], z.new_zeros(b, 1, 0), z.new_ones(b, 1, h, w), None)

    def predict(self, state: LAMState, actions: torch.Tensor) -> torch.Tensor:
        return self._next(state.z, actions)

    def observe(self, state: LAMState, z: torch.Tensor) -> LAMState:
        return LAMState(z, state.slots, state.masks, None)
