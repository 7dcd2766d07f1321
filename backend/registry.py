"""The model registry: every model under the checkpoints folder, loaded once at startup, named only from disk.

A checkpoint that fails to load is left out and reported by /health (the reason goes to the server log, never
to clients, since it names files). No checkpoints at all is a valid state: the server runs and says so.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flam.backend.errors import ApiError
from flam.backend.settings import Settings, SettingsError
from flam.models.model_set import ModelEntry, discover
from flam.models.world_model import WorldModel, default_device, load_world_model
from flam.worlds.dataset import Dataset

log = logging.getLogger("flam.backend")
NO_MODELS = "no models: train one (see README)"
_PATH_LIKE = re.compile(r"^(/|~|[A-Za-z]:\\|\.\.?/)")


@dataclass
class LoadedModel:
    """A model ready to serve: the world model, its set's sample episodes and its action statistics."""

    name: str
    entry: ModelEntry
    world: WorldModel
    episodes: Dataset | None
    stats: dict[str, Any] | None = None
    thumbnails: dict[int, str] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.world.tokenizer.config.grid

    @property
    def action_names(self) -> list[str] | None:
        return self.episodes.action_names if self.episodes is not None and self.episodes.has_ground_truth else None

    def describe(self, default: bool) -> dict[str, Any]:
        """The /models entry of this model."""
        world = self.world
        return {
            "name": self.name,
            "kind": self.entry.kind,
            "default": default,
            "n_slots": world.n_slots,
            "action_dim": world.action_dim,
            "action_size": world.n_slots * world.action_dim,
            "image_size": world.image_size,
            "grid": self.grid,
            "arch": scrub_paths(world.header.get("config", {})),
            "training": scrub_paths(self.entry.training()),
            "evaluation": scrub_paths(self.entry.evaluation()),
            "identity": world.identity,
            "episodes": self.episodes.n_episodes if self.episodes is not None else 0,
            "action_names": self.action_names,
        }


def scrub_paths(value: Any) -> Any:
    """A JSON value with every string that looks like a filesystem path removed (clients never see paths)."""
    if isinstance(value, dict):
        return {k: scrub_paths(v) for k, v in value.items() if not (isinstance(v, str) and _PATH_LIKE.match(v))}
    if isinstance(value, list):
        return [scrub_paths(v) for v in value if not (isinstance(v, str) and _PATH_LIKE.match(v))]
    return value


def resolve_device(name: str | None) -> torch.device:
    """FLAM_DEVICE -> a torch device that exists on this machine."""
    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingsError(f"FLAM_DEVICE={name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"FLAM_DEVICE={name!r}: CUDA is not available on this machine")
    return device


class Registry:
    """Loaded models by name, the default model, and what could not be loaded."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        failed: dict[str, str],
        device: torch.device,
        default: str | None,
        problem: str | None = None,
    ) -> None:
        self.models = models
        self.failed = failed
        self.device = device
        self.default = default
        self.problem = problem  # why there are no models, when there are none

    @classmethod
    def load(cls, settings: Settings) -> Registry:
        """Discover and load every model under settings.checkpoints."""
        device = resolve_device(settings.device)
        folder = Path(settings.checkpoints)
        if not folder.is_dir():
            log.warning("checkpoints folder %s does not exist: serving no models", folder)
            return cls({}, {}, device, None, "the checkpoints folder does not exist (set FLAM_CHECKPOINTS)")
        models: dict[str, LoadedModel] = {}
        failed: dict[str, str] = {}
        for entry in discover(folder):
            started = time.perf_counter()
            try:
                world = load_world_model(entry.folder, device)
                world.tokenizer.eval()
                world.lam.eval()
            except Exception as error:  # noqa: BLE001 - one bad checkpoint must not stop the others
                log.error("model %s could not be loaded: %s", entry.name, error)
                failed[entry.name] = "could not be loaded (the reason is in the server log)"
                continue
            episodes = None
            if entry.episodes is not None:
                try:
                    episodes = Dataset.open(entry.episodes)
                except Exception as error:  # noqa: BLE001 - serve the model without sample episodes
                    log.error("episodes of %s could not be opened: %s", entry.name, error)
            if episodes is not None and episodes.image_size != world.image_size:
                log.error(
                    "episodes of %s are %d px, the model %d px: ignored",
                    entry.name,
                    episodes.image_size,
                    world.image_size,
                )
                episodes = None
            models[entry.name] = LoadedModel(entry.name, entry, world, episodes)
            log.info("loaded %s (%s) on %s in %.1f s", entry.name, entry.kind, device, time.perf_counter() - started)
        problem = None if models else "no model checkpoints were found in the checkpoints folder"
        wanted = settings.default_model or _shipped_default(folder)
        return cls(models, failed, device, _pick_default(models, wanted), problem)

    def get(self, name: str | None) -> LoadedModel:
        """A model by name (None: the default); ApiError 503 without models, 404 for an unknown name."""
        if not self.models:
            raise ApiError(503, NO_MODELS)
        if name is None:
            return self.models[self.default]
        model = self.models.get(name)
        if model is None:
            raise ApiError(
                404, f"unknown model {name!r}; valid models: {', '.join(self.models)}", valid=list(self.models)
            )
        return model


DEFAULT_MODEL_FILE = "DEFAULT_MODEL"  # in the checkpoints folder: the name of the model to open first


def _shipped_default(folder: Path) -> str | None:
    """The model the checkpoints folder recommends (its DEFAULT_MODEL file, one name), if it names one.

    Which shipped model steers best is decided by evaluation (reports/), so the choice lives with the checkpoints.
    """
    path = folder / DEFAULT_MODEL_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def _pick_default(models: dict[str, LoadedModel], wanted: str | None) -> str | None:
    """`wanted` (FLAM_DEFAULT_MODEL, else the checkpoints folder's DEFAULT_MODEL) if loaded, else the first FLAM
    model by name, else the first model."""
    if wanted is not None:
        if wanted in models:
            return wanted
        log.warning("default model %s is not among the loaded models; using another", wanted)
    flam = [name for name, m in models.items() if m.entry.kind == "flam"]
    return (flam or list(models) or [None])[0]
