"""Named training presets: `tiny` for tests (seconds) and `default` for the shipped models."""

from __future__ import annotations

from dataclasses import dataclass, replace

from flam.models.factorizer import FactorizerConfig
from flam.models.flam import FLAMConfig
from flam.models.monolithic import MonolithicConfig
from flam.models.tokenizer import TokenizerConfig

PRESET_NAMES = ("tiny", "default")


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int  # linear warm-up steps, then cosine decay to lr_min_ratio * lr
    clip_frames: int = 6  # LAM: frames per training clip (T)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lr_min_ratio: float = 0.1
    val_every: int = 250
    val_batches: int = 4
    checkpoint_every: int = 250
    bf16: bool | None = None  # bf16 autocast; None: only where the hardware computes bf16 natively (native_bf16)
    seed: int = 0


def tokenizer_preset(name: str, image_size: int) -> tuple[TokenizerConfig, TrainConfig]:
    if name == "tiny":
        return (
            TokenizerConfig(image_size=image_size, channels=(8, 16), levels=(5, 5, 5)),
            TrainConfig(steps=30, batch_size=16, lr=2e-3, warmup=5, val_every=15, checkpoint_every=15, val_batches=1),
        )
    return (
        TokenizerConfig(image_size=image_size, channels=(32, 64), levels=(5, 5, 5, 5, 5)),
        TrainConfig(steps=4000, batch_size=32, lr=2e-3, warmup=100, val_every=250, checkpoint_every=500),
    )


ACTION_SIZE = 48  # total latent action size d of the LAM presets, the same for FLAM (split over K) and monolithic


def lam_preset(
    name: str, arch: str, feature_dim: int, grid: int, n_slots: int, action_size: int
) -> tuple[FLAMConfig | MonolithicConfig, TrainConfig]:
    """Model and training config of a LAM. `action_size` is the total d; FLAM gives each of K slots d // K."""
    if name == "tiny":
        train = TrainConfig(
            steps=40, batch_size=8, lr=2e-3, warmup=5, clip_frames=4, val_every=20, checkpoint_every=20, val_batches=1
        )
        width, heads, layers = 16, 2, 1
    else:
        train = TrainConfig(
            steps=20000, batch_size=32, lr=1e-3, warmup=500, clip_frames=6, val_every=500, checkpoint_every=1000
        )
        width, heads, layers = 64, 4, 2
    if arch == "flam":
        factorizer = FactorizerConfig(feature_dim=feature_dim, grid=grid, n_slots=n_slots, width=width, heads=heads)
        config = FLAMConfig(
            factorizer=factorizer,
            action_dim=max(1, action_size // n_slots),
            idm_layers=layers,
            fdm_layers=layers,
            aggregator_layers=layers,
        )
        return config, train
    mono = MonolithicConfig(feature_dim=feature_dim, grid=grid, width=width, heads=heads, action_dim=action_size)
    if name == "tiny":
        mono = replace(mono, idm_layers=1, fdm_layers=2)
    return mono, train
