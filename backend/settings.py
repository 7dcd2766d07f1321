"""Server settings from FLAM_* environment variables: where models live, the device, limits and cache sizes.

Every limit that protects the server from a client (horizon, frames, pixels, body size, queued work) is here, so
an operator can change it without touching code. A bad value stops startup with a line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

# The repository's checkpoints/ folder, found from this file (backend/ sits beside checkpoints/).
DEFAULT_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
ENV_PREFIX = "FLAM_"


class SettingsError(ValueError):
    """An environment variable with a value the server cannot use."""


@dataclass(frozen=True)
class Settings:
    checkpoints: Path = DEFAULT_CHECKPOINTS  # FLAM_CHECKPOINTS: folder of model sets (checkpoints/<set>/<lam>)
    device: str | None = None  # FLAM_DEVICE: cpu, cuda or cuda:N; default CUDA when present
    default_model: str | None = None  # FLAM_DEFAULT_MODEL: else checkpoints/DEFAULT_MODEL, else the first FLAM model
    max_horizon: int = 32  # FLAM_MAX_HORIZON: rollout steps per request
    max_context_frames: int = 16  # FLAM_MAX_CONTEXT_FRAMES: frames a rollout context may hold
    max_analyse_frames: int = 64  # FLAM_MAX_ANALYSE_FRAMES: frames one /analyse or episode-frames request may hold
    max_image_pixels: int = 1024 * 1024  # FLAM_MAX_IMAGE_PIXELS: width x height of one uploaded PNG
    max_body_bytes: int = 8 * 2**20  # FLAM_MAX_BODY_BYTES: request body size
    max_edits: int = 256  # FLAM_MAX_EDITS: edits per request
    max_queue: int = 64  # FLAM_MAX_QUEUE: jobs waiting for the model worker; more answer 503 + Retry-After
    max_batch: int = 32  # FLAM_MAX_BATCH: rollouts stacked into one forward pass
    batch_window_ms: float = 0.0  # FLAM_BATCH_WINDOW_MS: wait this long for company before a lone rollout runs
    job_timeout_s: float = 60.0  # FLAM_JOB_TIMEOUT_S: a request waiting longer for the worker answers 503
    context_cache: int = 256  # FLAM_CONTEXT_CACHE: encoded contexts kept (with inferred actions and masks)
    rollout_cache_mb: int = 64  # FLAM_ROLLOUT_CACHE_MB: memory for rollouts kept for prefix reuse
    rollouts_per_context: int = 4  # FLAM_ROLLOUTS_PER_CONTEXT: recent plans kept per context
    frame_cache: int = 4096  # FLAM_FRAME_CACHE: encoded output PNGs kept, keyed by their pixels
    caching: bool = True  # FLAM_CACHING: 0 turns every cache off (each request can also say "cache": false)
    batching: bool = True  # FLAM_BATCHING: 0 runs every rollout alone
    # FLAM_TORCH_THREADS: intra-op threads for torch (0 = torch's default). One is fastest for these small ops on
    # a busy 2-core machine (measured: a 10-step rollout 45 ms with 1 thread, 190+ ms with 2 under load).
    torch_threads: int = 1
    warmup: bool = True  # FLAM_WARMUP: one rollout per model at startup so the first request is not the slow one
    ui: bool = True  # FLAM_UI: 0 serves the API alone, without the Gradio UI under /ui
    api_url: str = "http://127.0.0.1:8000"  # FLAM_API_URL: where the mounted UI reaches this API

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings with every FLAM_<FIELD> variable of `env` (default os.environ) applied."""
        env = os.environ if env is None else env
        values = {}
        for field in fields(cls):
            key = ENV_PREFIX + field.name.upper()
            raw = env.get(key)
            if raw is None or raw.strip() == "":
                continue
            values[field.name] = _parse(key, raw.strip(), field.default)
        settings = replace(cls(), **values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise SettingsError for limits that would make the server useless or unsafe."""
        positive = (
            "max_horizon",
            "max_context_frames",
            "max_analyse_frames",
            "max_image_pixels",
            "max_body_bytes",
            "max_queue",
            "max_batch",
            "rollouts_per_context",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must be at least 1, got {getattr(self, name)}")
        for name in ("max_edits", "context_cache", "rollout_cache_mb", "frame_cache", "torch_threads"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{ENV_PREFIX}{name.upper()} must not be negative, got {getattr(self, name)}")
        if self.batch_window_ms < 0 or self.job_timeout_s <= 0:
            raise SettingsError(f"{ENV_PREFIX}BATCH_WINDOW_MS must be >= 0 and {ENV_PREFIX}JOB_TIMEOUT_S > 0")


def _parse(key: str, raw: str, default: object) -> object:
    """One environment value converted to the type of its field's default."""
    if isinstance(default, bool):
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{key}={raw!r}: expected 1/0, true/false, yes/no or on/off")
    if isinstance(default, Path):
        return Path(raw).expanduser()
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r}: expected a {type(default).__name__}") from None
    return raw
