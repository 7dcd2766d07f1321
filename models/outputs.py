"""The training output every model's forward returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Loss:
    """A training objective, the scalar parts worth logging, and the (detached) prediction for validation."""

    loss: torch.Tensor
    logs: dict[str, float]
    prediction: torch.Tensor  # tokenizer: reconstructions [B, 3, H, W]; LAMs: one-step codes [B, T-1, E, h, w]
