"""Stage 1: a CNN encoder, a finite scalar quantizer (FSQ) and a CNN decoder, trained per dataset then frozen.

The feature grid z that the latent action models read and predict is the FSQ code itself: E = len(levels)
channels with values on a fixed lattice in [-1, 1]. Predicting in that small space keeps the LAM cheap, and
snapping a prediction to the lattice is exactly "FSQ-quantize the predicted features" before decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flam.models.outputs import Loss


@dataclass(frozen=True)
class TokenizerConfig:
    image_size: int = 64
    patch: int = 8  # pixels per token side: 64x64 pixels -> 8x8 tokens, one per grid-world cell
    channels: tuple[int, int] = (32, 64)  # widths at patch/2 resolution and at token resolution
    levels: tuple[int, ...] = (5, 5, 5, 5, 5)  # FSQ levels per channel (odd: symmetric lattice incl. 0)

    def __post_init__(self) -> None:
        if self.patch < 2 or self.patch % 2:
            raise ValueError("TokenizerConfig.patch must be an even number >= 2")
        if any(level < 3 or level % 2 == 0 for level in self.levels):
            raise ValueError("TokenizerConfig.levels must be odd integers >= 3")
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not divisible by the patch size {self.patch}")

    @property
    def feature_dim(self) -> int:
        return len(self.levels)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


class FSQ(nn.Module):
    """Finite scalar quantization: bound each channel with tanh, round to its level lattice, straight-through."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("half_width", (torch.tensor(levels, dtype=torch.float32) - 1) / 2, persistent=False)

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        # [E, 1, 1]: broadcasts over a channel axis third from the end, so a clip [B, T, E, h, w] snaps as a frame does
        return self.half_width.view(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, E, h, w] unbounded -> codes [B, E, h, w] on the lattice {-1, ..., 1} (gradients pass through)."""
        half = self._shape(x)
        bounded = torch.tanh(x) * half
        return (bounded + (bounded.round() - bounded).detach()) / half

    def snap(self, z: torch.Tensor) -> torch.Tensor:
        """Quantize already-bounded features (e.g. a dynamics model's prediction) to the nearest lattice point."""
        half = self._shape(z)
        return (z.clamp(-1.0, 1.0) * half).round() / half

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Lattice codes [B, E, h, w] -> small integers in [0, level) per channel, for compact caching."""
        half = self._shape(z)
        return (z * half + half).round().to(torch.int8)

    def from_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """Inverse of `indices`, on the codes' device (cached codes live on the CPU while the model may not)."""
        half = self._shape(idx).to(idx.device)
        return (idx.float() - half) / half


class ResBlock(nn.Module):
    """3x3 conv residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Tokenizer(nn.Module):
    """Frame <-> FSQ feature grid. Frames are float [B, 3, H, W] in [0, 1].

    Strided (patchifying) convolutions down to the token grid, 3x3 residual blocks there for context, and
    transposed convolutions back: cheap enough to train on a 2-core CPU in minutes, and near-lossless on the
    grid world, whose cells are rendered independently.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        wide, deep = config.channels
        half = config.patch // 2
        self.encoder = nn.Sequential(
            nn.Conv2d(3, wide, half, stride=half),  # [B, C1, H/half, W/half]
            nn.ReLU(),
            nn.Conv2d(wide, deep, 2, stride=2),  # [B, C2, h, w]
            ResBlock(deep),
            ResBlock(deep),
            nn.ReLU(),
            nn.Conv2d(deep, config.feature_dim, 1),  # [B, E, h, w]
        )
        self.fsq = FSQ(config.levels)
        self.decoder = nn.Sequential(
            nn.Conv2d(config.feature_dim, deep, 1),  # [B, C2, h, w]
            ResBlock(deep),
            ResBlock(deep),
            nn.ReLU(),
            nn.ConvTranspose2d(deep, wide, 2, stride=2),  # [B, C1, H/half, W/half]
            ResBlock(wide),
            nn.ReLU(),
            nn.ConvTranspose2d(wide, 3, half, stride=half),  # [B, 3, H, W]
        )

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, 3, H, W] in [0, 1] -> codes z [B, E, h, w] on the FSQ lattice."""
        return self.fsq(self.encoder(frames * 2.0 - 1.0))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """codes z [B, E, h, w] -> frames [B, 3, H, W] (unclamped; clamp to [0, 1] for display)."""
        return (self.decoder(z) + 1.0) / 2.0

    def forward(self, frames: torch.Tensor) -> Loss:
        """Reconstruction loss for training: pixel MSE of encode -> decode."""
        recon = self.decode(self.encode(frames))  # [B, 3, H, W]
        loss = F.mse_loss(recon.float(), frames)
        return Loss(loss, {"mse": loss.item()}, recon.detach())


def frames_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [0, 1]."""
    return frames.movedim(-1, -3).float() / 255.0


def tensor_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] -> uint8 [..., H, W, 3] (clamped, rounded)."""
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).movedim(-3, -1)
