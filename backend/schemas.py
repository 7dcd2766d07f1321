"""Request and response bodies of the REST API (pydantic v2). Field names are a contract other tools use.

Requests are strict: numbers must be JSON numbers (not strings), action values finite, unknown fields are an
error (a typo never silently falls back to a default). Limits that depend on the server (horizon, frames) or on
the model (slots, action size) are checked by the handlers, with messages naming the field and the limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ACTION_LIMIT = 1000.0  # |value| of an action entry; latent actions live around N(0, I)

ActionValue = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-ACTION_LIMIT, le=ACTION_LIMIT)]
Step = Annotated[int, Field(strict=True, ge=0, le=1024)]
BasePlanName = Literal["inferred", "prior", "zero"]
FormatName = Literal["png", "gif", "mp4"]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Context(Strict):
    """Where a rollout starts: frames of a bundled episode, or your own frames."""

    episode: int | None = Field(
        None, ge=0, description="Id of a bundled episode (GET /episodes). Give either this or `frames`."
    )
    start: int = Field(0, ge=0, description="Episode contexts: index of the first context frame.")
    length: int = Field(
        1, ge=1, description="Episode contexts: number of context frames (the rollout continues after the last)."
    )
    frames: list[str] | None = Field(
        None,
        min_length=1,
        description="Your own context frames, oldest first: base64 PNG each (a `data:image/png;base64,` prefix is "
        "allowed). Other sizes are centre-cropped to a square and resized to the model's image size.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Context:
        if (self.episode is None) == (self.frames is None):
            raise ValueError("give exactly one of 'episode' (a bundled episode id) or 'frames' (base64 PNGs)")
        if self.frames is not None and self.model_fields_set & {"start", "length"}:
            raise ValueError("'start' and 'length' apply to episode contexts only; uploaded frames are all used")
        return self


class Edit(Strict):
    """Change one slot's action on some steps: add `delta` to the base plan, or `set` it outright."""

    slot: int = Field(ge=0, description="Slot index, 0..K-1 (GET /models gives K as `n_slots`).")
    steps: list[Step] | None = Field(
        None, max_length=1024, description="Rollout steps to change (0-based); null or absent: every step."
    )
    delta: list[ActionValue] | None = Field(
        None, description="Added to the slot's base action: d/K finite numbers (`action_dim` in GET /models)."
    )
    set: list[ActionValue] | None = Field(
        None, description="Replaces the slot's action: d/K finite numbers. Give exactly one of `delta` or `set`."
    )

    @model_validator(mode="after")
    def _one_change(self) -> Edit:
        if (self.delta is None) == (self.set is None):
            raise ValueError("give exactly one of 'delta' (added to the base action) or 'set' (replaces it)")
        return self


class Identity(Strict):
    """The checkpoint a recipe was made with: posting the recipe to another checkpoint is refused (409)."""

    name: str = Field(description="The LAM checkpoint folder's name.")
    kind: str = Field(description="'flam' or 'monolithic'.")
    weights_sha256: str = Field(description="SHA-256 of the LAM's model.safetensors.")
    tokenizer_sha256: str = Field(description="SHA-256 of the tokenizer's model.safetensors.")


class RolloutRequest(Strict):
    """Roll a model forward from a context with a per-slot action plan. A response's `recipe` is one of these."""

    model: str | None = Field(None, description="Model name from GET /models; absent: the default model.")
    context: Context = Field(description="The frames the rollout continues from.")
    horizon: int = Field(ge=1, description="Steps (predicted frames) to generate; at most the server's max_horizon.")
    actions: BasePlanName | None = Field(
        None,
        description="Base plan for every slot and step: 'inferred' (posterior means read off the episode's own "
        "next frames; episode contexts only), 'prior' (sampled from N(0, I) with `seed`) or 'zero'. Absent: "
        "'inferred' for episodes, 'zero' for uploaded frames.",
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of the 'prior' plan.")
    edits: list[Edit] = Field(default_factory=list, description="Per-slot changes applied to the base plan, in order.")
    return_masks: bool = Field(False, description="Also return each predicted frame's slot masks.")
    format: FormatName = Field(
        "png", description="'png': one base64 PNG per step in `frames`; 'gif' or 'mp4': one base64 file in `video`."
    )
    fps: int = Field(8, ge=1, le=60, description="Frames per second of a gif or mp4.")
    cache: bool = Field(
        True,
        description="false: compute from scratch and alone (no cached context or prefix, no stacking with other "
        "requests), for benchmarks. The frames are identical either way; not part of the recipe.",
    )
    identity: Identity | None = Field(None, description="Set in recipes: the checkpoint must be this one, else 409.")


class CacheInfo(BaseModel):
    context: Literal["hit", "miss", "off"] = Field(description="Whether the encoded context came from the cache.")
    reused_steps: int = Field(description="Steps taken from a cached rollout with the same plan prefix.")
    batch_size: int = Field(description="Requests stacked into the forward pass that computed this one (0: none).")


class RolloutResponse(BaseModel):
    model: str = Field(description="The model that ran.")
    horizon: int = Field(description="Steps generated.")
    frames: list[str] | None = Field(None, description="format 'png': base64 PNG of each predicted frame.")
    video: str | None = Field(None, description="format 'gif'/'mp4': the base64 file.")
    media_type: str = Field(description="image/png, image/gif or video/mp4.")
    actions: list[list[list[float]]] = Field(description="The actions used, [horizon][K][d/K].")
    masks: list[list[list[list[float]]]] | None = Field(
        None,
        description="With return_masks: slot masks of each predicted frame, [horizon][K][h][w], sum 1 over K "
        "(at most 1 with a background sink: the rest is background).",
    )
    timing_ms: dict[str, float] = Field(
        description="Milliseconds per stage: context, plan, queue, rollout, encode, total."
    )
    cache: CacheInfo
    recipe: RolloutRequest = Field(
        description="The normalised request and checkpoint identity: POST it to /rollout to get the same bytes again."
    )


class AnalyseRequest(Strict):
    """Read slots, masks and per-slot actions off frames (a bundled episode's or your own)."""

    model: str | None = Field(None, description="Model name; absent: the default model.")
    context: Context = Field(
        description="The frames to analyse. Episode contexts are read with their whole history and then cut to "
        "[start, start + length)."
    )
    return_masks: bool = Field(True, description="Return the slot masks of every frame.")


class AnalyseResponse(BaseModel):
    model: str
    n_frames: int = Field(description="Frames analysed (T).")
    grid: list[int] = Field(description="[h, w]: the token grid the masks live on.")
    actions: list[list[list[float]]] = Field(description="Posterior-mean actions [T-1][K][d/K].")
    action_std: list[list[list[float]]] = Field(description="Posterior standard deviations [T-1][K][d/K].")
    masks: list[list[list[list[float]]]] | None = Field(
        None,
        description="Slot masks [T][K][h][w], sum 1 over K (at most 1 with a background sink: the rest is background).",
    )
    entity_slots: list[list[int]] | None = Field(
        None,
        description="Episodes with ground truth: the slot holding most of each entity's pixels, [T][N] (-1: the "
        "entity is not visible).",
    )
    timing_ms: dict[str, float]


class ModelInfo(BaseModel):
    name: str = Field(description="'<set>/<lam>', e.g. 'multigrid-4/flam'.")
    kind: str = Field(description="'flam' or the 'monolithic' baseline.")
    default: bool = Field(description="Used when a request names no model.")
    n_slots: int = Field(description="K: slots (1 for the monolithic baseline).")
    action_dim: int = Field(description="d/K: size of each slot's latent action.")
    action_size: int = Field(description="d: the total latent action size.")
    image_size: int = Field(description="Frame side in pixels.")
    grid: int = Field(description="Token grid side (masks are grid x grid).")
    arch: dict[str, Any] = Field(description="The model's config as trained.")
    training: dict[str, Any] | None = Field(description="Steps, seconds and last validation metrics.")
    evaluation: dict[str, Any] | None = Field(description="eval.json of `flam eval`, when evaluated.")
    identity: Identity
    episodes: int = Field(description="Bundled sample episodes (GET /episodes).")
    action_names: list[str] | None = Field(description="Ground-truth action names of the bundled world, if any.")


class EpisodeInfo(BaseModel):
    id: int = Field(description="Use as context.episode.")
    frames: int = Field(description="Frames in the episode (T).")
    thumbnail: str = Field(description="Base64 PNG of the first frame.")


class EpisodesResponse(BaseModel):
    model: str
    image_size: int
    n_agents: int
    entity_colors: list[Any] | None
    action_names: list[str] | None
    episodes: list[EpisodeInfo]


class EpisodeFramesResponse(BaseModel):
    model: str
    episode: int
    start: int
    frames: list[str] = Field(description="Base64 PNG per frame.")
    true_actions: list[list[str | None]] | None = Field(
        None, description="Ground truth: each entity's action name per transition [T-1][N] (null: none)."
    )
