"""Small transformer pieces shared by the factorizer, the dynamics models, the aggregator and the baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Two-layer GELU MLP with a 4x hidden width, used inside every block."""

    def __init__(self, width: int, out: int | None = None, hidden_mult: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width * hidden_mult)
        self.fc2 = nn.Linear(width * hidden_mult, out or width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention of queries over a (possibly different) key/value sequence."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., Q, D] attends over context [..., S, D]; mask [..., Q, S] bool (True = may attend)."""
        *lead, q_len, width = x.shape
        s_len = context.shape[-2]
        head_dim = width // self.heads
        q = self.q(x).reshape(-1, q_len, self.heads, head_dim).transpose(1, 2)  # [M, heads, Q, D/heads]
        k, v = self.kv(context).reshape(-1, s_len, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)  # [M,heads,S,.]
        if mask is not None:
            mask = mask.reshape(-1, 1, q_len, s_len)  # [M, 1, Q, S] broadcast over heads
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [M, heads, Q, D/heads]
        return self.out(y.transpose(1, 2).reshape(*lead, q_len, width))  # [..., Q, D]


class Block(nn.Module):
    """Pre-norm transformer block: self-attention (or, with `cross`, attention to a context) then an MLP."""

    def __init__(self, width: int, heads: int, cross: bool = False) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width) if cross else None
        self.attn = Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [..., Q, D]; context [..., S, D] or None for self-attention."""
        h = self.norm_x(x)
        if (context is None) != (self.norm_context is None):
            raise ValueError("a cross-attention block needs a context and a self-attention block takes none")
        c = h if self.norm_context is None else self.norm_context(context)
        x = x + self.attn(h, c, mask)
        return x + self.mlp(self.norm_mlp(x))


class GaussianHead(nn.Module):
    """Diagonal Gaussian posterior over a latent action: separate mean and log-variance projections."""

    def __init__(self, width: int, action_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mean = nn.Linear(width, action_dim)
        self.logvar = nn.Linear(width, action_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [..., D] -> (mean, logvar) each [..., A]; logvar clamped for numerical safety."""
        h = self.norm(h)
        return self.mean(h), self.logvar(h).clamp(-10.0, 6.0)


def change_weighted_mse(
    squared: torch.Tensor, current: torch.Tensor, target: torch.Tensor, change_weight: float
) -> torch.Tensor:
    """Squared errors [M, E, h, w] averaged with the tokens that change from `current` to `target` weighing
    1 + change_weight, normalised by the mean weight (the plain mean when change_weight is 0). Why: the models'
    `change_weight` option."""
    if change_weight == 0:
        return squared.mean()
    changed = (current != target).any(dim=1, keepdim=True).float()  # [M, 1, h, w]
    weight = 1.0 + change_weight * changed
    return (weight * squared).mean() / weight.mean()


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last axis: [..., A] -> [...]."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, noise_scale: float = 1.0) -> torch.Tensor:
    """A differentiable sample from N(mean, exp(logvar)), its noise scaled by `noise_scale` (FLAM's noise ramp)."""
    return mean + noise_scale * torch.randn_like(mean) * (0.5 * logvar).exp()
