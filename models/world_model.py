"""A frozen tokenizer and a trained latent action model, loaded together: the unit everything downstream uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flam.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, file_sha256
from flam.models.lam import Inference, LAMState, LatentActionModel
from flam.models.model_set import TOKENIZER
from flam.models.registry import LAM_KINDS, load_model
from flam.models.tokenizer import Tokenizer, frames_to_tensor, tensor_to_frames


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class WorldModel:
    tokenizer: Tokenizer
    lam: LatentActionModel
    header: dict[str, Any]  # the LAM checkpoint's config.json
    identity: dict[str, str]  # name, kind and weight hashes: what a recipe pins
    device: torch.device

    @property
    def n_slots(self) -> int:
        return self.lam.n_slots

    @property
    def action_dim(self) -> int:
        return self.lam.action_dim

    @property
    def image_size(self) -> int:
        return self.tokenizer.config.image_size

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, T, H, W, 3] -> FSQ codes [B, T, E, h, w] on the model's device."""
        b, t = frames.shape[:2]
        x = frames_to_tensor(frames.to(self.device).flatten(0, 1))  # [B*T, 3, H, W]
        return self.tokenizer.encode(x).unflatten(0, (b, t))

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """FSQ codes [B, T, E, h, w] -> uint8 frames [B, T, H, W, 3] on the CPU."""
        b, t = z.shape[:2]
        return tensor_to_frames(self.tokenizer.decode(z.flatten(0, 1))).unflatten(0, (b, t)).cpu()

    @torch.inference_mode()
    def analyse(self, frames: torch.Tensor) -> tuple[torch.Tensor, Inference]:
        """uint8 frames [B, T, H, W, 3] -> codes [B, T, E, h, w] and what the LAM reads off them."""
        z = self.encode(frames)
        return z, self.lam.infer(z)

    @torch.inference_mode()
    def start(self, z: torch.Tensor) -> LAMState:
        """The rollout state after observing context codes z [B, C, E, h, w]."""
        return self.lam.start(z)


def load_world_model(lam_folder: Path, device: torch.device | None = None) -> WorldModel:
    """Load a FLAM or monolithic checkpoint and the tokenizer it names (verified by weight hash); where that path
    holds none, the model set's own tokenizer beside it."""
    lam_folder = Path(lam_folder)
    device = device or default_device()
    lam, header = load_model(lam_folder, LAM_KINDS)
    tokenizer_info = header.get("tokenizer")
    if not isinstance(tokenizer_info, dict) or "path" not in tokenizer_info:
        raise CheckpointError(f"{lam_folder}: config.json does not name its tokenizer")
    tokenizer_folder = (lam_folder / tokenizer_info["path"]).resolve()
    sibling = lam_folder.parent / TOKENIZER
    if not (tokenizer_folder / CONFIG_FILE).is_file() and tokenizer_info.get("sha256") and sibling.is_dir():
        # A LAM trained elsewhere and copied into a model set (checkpoints/<set>/<lam>) uses the set's tokenizer;
        # the recorded weight hash, checked below, makes sure it is the one it was trained on.
        tokenizer_folder = sibling
    tokenizer, _ = load_model(tokenizer_folder, ("tokenizer",))
    tokenizer_hash = file_sha256(tokenizer_folder / WEIGHTS_FILE)
    if tokenizer_info.get("sha256") not in (None, tokenizer_hash):
        raise CheckpointError(
            f"{lam_folder}: was trained on a different tokenizer than the one at {tokenizer_folder} (hash mismatch)"
        )
    identity = {
        "name": lam_folder.name,
        "kind": header["kind"],
        "weights_sha256": file_sha256(lam_folder / WEIGHTS_FILE),
        "tokenizer_sha256": tokenizer_hash,
    }
    return WorldModel(tokenizer.to(device), lam.to(device), header, identity, device)
