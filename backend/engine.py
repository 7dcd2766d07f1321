"""What the routes do, apart from HTTP: resolve contexts and plans, run rollouts and analyses, encode results.

Torch work runs on the model worker's thread (batching.py); image codecs run in a thread pool; the event loop
only validates, looks up caches and awaits. Every result is a pure function of the request and the checkpoint:
the caches and the stacking only make it faster. To keep that exact, a bundled episode is always analysed
whole and alone (one fixed shape), and every context and plan is built the same way with or without caches.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import anyio
import numpy as np
import torch

from flam.backend import codecs
from flam.backend.batching import Busy, JobResult, ModelWorker, RolloutJob, reuse_whole
from flam.backend.caches import LRU, EncodedContext, EpisodeAnalysis, RolloutCache
from flam.backend.errors import ApiError
from flam.backend.registry import LoadedModel, Registry
from flam.backend.schemas import AnalyseRequest, Context, Identity, RolloutRequest
from flam.backend.settings import Settings
from flam.backend.stats import action_statistics, entity_cover, slot_owners
from flam.models.actions import ActionEdit, apply_edits, base_actions

T = TypeVar("T")
log = logging.getLogger("flam.backend")
MASK_DECIMALS = 4
WARMUP_HORIZON = 10
RETRY = {"Retry-After": "1"}


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 3)


class Engine:
    """The API's behaviour over a registry of loaded models, with caches and one model worker."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        caching = settings.caching
        self.worker = ModelWorker(
            settings.max_queue, settings.max_batch, settings.batching, settings.batch_window_ms / 1000
        )
        self.contexts: LRU[EncodedContext] = LRU(settings.context_cache if caching else 0)
        self.analyses: LRU[EpisodeAnalysis] = LRU(settings.context_cache if caching else 0)
        self.rollouts = RolloutCache(settings.rollout_cache_mb * 2**20 if caching else 0, settings.rollouts_per_context)
        self.pngs: LRU[str] = LRU(settings.frame_cache if caching else 0)
        self._inflight: dict[Hashable, asyncio.Future] = {}
        self.started_at = time.time()

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker, compute every model's action statistics and warm each model up with a rollout."""
        self.worker.start()
        for model in self.registry.models.values():
            try:
                if model.episodes is not None and model.episodes.n_episodes > 0:
                    model.stats = await self.call(lambda m=model: self._statistics(m))
                if self.settings.warmup:
                    await self.rollout(_warmup_request(model, min(WARMUP_HORIZON, self.settings.max_horizon)))
            except Exception:  # noqa: BLE001 - the model still serves; the log says what went wrong
                log.exception("statistics or warm-up of %s failed", model.name)

    def stop(self) -> None:
        self.worker.stop()

    def _statistics(self, model: LoadedModel) -> dict[str, Any]:
        """Action statistics over the bundled episodes (worker thread); seeds the episode-analysis cache."""

        def analyse(episode: int) -> Any:
            analysis = self._analyse_episode(model, episode)
            self.analyses.put((model.name, "episode", episode), analysis)
            return analysis.inference

        world = model.world
        return action_statistics(world.n_slots, world.action_dim, model.episodes, analyse)

    # --- worker access ---------------------------------------------------------------------------------------

    async def call(self, work: Callable[[], T] | RolloutJob) -> T | JobResult:
        """Run a call or a rollout job on the model worker; 503 + Retry-After when it is full or too slow."""
        try:
            future = self.worker.submit(work)
        except Busy as error:
            raise ApiError(503, f"the server is busy ({error}); retry shortly", RETRY) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.job_timeout_s)
        except TimeoutError:
            raise ApiError(503, "timed out waiting for the model worker; retry shortly", RETRY) from None

    async def _memo(self, cache: LRU, key: Hashable, compute: Callable[[], T], use_cache: bool) -> tuple[T, bool]:
        """(value, hit): from the cache, from an identical computation in flight, or computed on the worker."""
        if not use_cache:
            return await self.call(compute), False
        value = cache.get(key)
        if value is not None:
            return value, True
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await self.call(compute)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here: waiters (if any) re-raise it
            raise
        finally:
            self._inflight.pop(key, None)
        cache.put(key, value)
        future.set_result(value)
        return value, False

    # --- contexts --------------------------------------------------------------------------------------------

    def _analyse_episode(self, model: LoadedModel, episode: int) -> EpisodeAnalysis:
        """A whole bundled episode, analysed alone (worker thread)."""
        frames = torch.from_numpy(model.episodes.frames(episode))[None]  # [1, T, H, W, 3]
        z, inference = model.world.analyse(frames)
        return EpisodeAnalysis(z, inference)

    def _episode(self, model: LoadedModel, episode: int) -> None:
        """404 unless `episode` is a bundled episode of the model's set."""
        if model.episodes is None:
            raise ApiError(404, f"model {model.name!r} has no bundled episodes; send context.frames instead")
        count = model.episodes.n_episodes
        if not 0 <= episode < count:
            raise ApiError(
                404,
                f"unknown episode {episode}; model {model.name!r} has episodes 0..{count - 1}",
                valid=list(range(count)),
            )

    def _span(self, model: LoadedModel, context: Context, limit: int, what: str) -> tuple[int, int]:
        """(start, length) of an episode context, checked against the episode and `limit`."""
        self._episode(model, context.episode)
        total = model.episodes.frames_per_episode
        start, length = context.start, context.length
        if length > limit:
            raise ApiError(422, f"context.length: {length} frames is above this server's limit of {limit} {what}")
        if start + length > total:
            raise ApiError(
                422,
                f"context: start {start} + length {length} goes past the end of episode {context.episode}, which "
                f"has {total} frames (start + length must be at most {total})",
            )
        return start, length

    async def _decode_frames(self, frames: list[str], image_size: int, limit: int) -> np.ndarray:
        """Uploaded base64 PNGs -> uint8 [C, H, W, 3], with errors naming the frame."""
        if len(frames) > limit:
            raise ApiError(422, f"context.frames: {len(frames)} frames is above this server's limit of {limit}")

        def decode() -> np.ndarray:
            out = []
            for index, text in enumerate(frames):
                try:
                    out.append(codecs.decode_png(text, image_size, self.settings.max_image_pixels))
                except codecs.CodecError as error:
                    raise ApiError(422, f"context.frames[{index}]: {error}") from None
            return np.stack(out)  # [C, H, W, 3]

        return await anyio.to_thread.run_sync(decode)

    async def context(
        self, model: LoadedModel, context: Context, use_cache: bool
    ) -> tuple[EncodedContext, Hashable, bool]:
        """The encoded context of a rollout request, its cache key and whether it was cached."""
        if context.episode is not None:
            start, length = self._span(model, context, self.settings.max_context_frames, "for a rollout context")
            episode = context.episode
            key = (model.name, "episode", episode, start, length)
            label = f"episode {episode} (start {start}, length {length})"

            def encode_episode() -> EncodedContext:
                analysis = self._episode_analysis_now(model, episode, use_cache)
                state = model.world.start(analysis.z[:, start : start + length])
                inferred = analysis.inference.actions[0, start + length - 1 :].float().cpu()  # [F, K, A]
                frames = model.episodes.frames(episode)[start : start + length]  # [C, H, W, 3]
                return EncodedContext(frames, None, state, inferred, label)

            value, hit = await self._memo(self.contexts, key, encode_episode, use_cache)
            return value, key, hit
        frames = await self._decode_frames(context.frames, model.world.image_size, self.settings.max_context_frames)
        digest = hashlib.blake2b(frames.tobytes(), digest_size=20).hexdigest()
        key = (model.name, "frames", frames.shape, digest)
        cached = self.contexts.get(key) if use_cache else None
        if cached is not None:
            return cached, key, True
        normalised = await anyio.to_thread.run_sync(lambda: [codecs.encode_png_b64(f) for f in frames])

        def encode_frames() -> EncodedContext:
            z = model.world.encode(torch.from_numpy(frames)[None])  # [1, C, E, h, w]
            return EncodedContext(frames, normalised, model.world.start(z), None, f"your {len(frames)} frames")

        value, hit = await self._memo(self.contexts, key, encode_frames, use_cache)
        return value, key, hit

    def _episode_analysis_now(self, model: LoadedModel, episode: int, use_cache: bool) -> EpisodeAnalysis:
        """The cached analysis of an episode, or a fresh one (worker thread)."""
        key = (model.name, "episode", episode)
        analysis = self.analyses.get(key) if use_cache else None
        if analysis is None:
            analysis = self._analyse_episode(model, episode)
            if use_cache:
                self.analyses.put(key, analysis)
        return analysis

    # --- rollout ---------------------------------------------------------------------------------------------

    def _plan(self, model: LoadedModel, request: RolloutRequest, context: EncodedContext) -> tuple[str, torch.Tensor]:
        """(base plan name, actions [H, K, A]) with the edits applied; 422 with what to fix otherwise."""
        world = model.world
        name = request.actions or ("inferred" if request.context.episode is not None else "zero")
        horizon = request.horizon
        if name == "inferred":
            if context.inferred is None:
                raise ApiError(
                    422,
                    "actions: 'inferred' reads actions off an episode's own next frames, and uploaded frames have "
                    "none: use 'prior' (sampled with seed) or 'zero', or POST /analyse to read actions off your "
                    "frames and send them as edits with 'set'",
                )
            available = context.inferred.shape[0]
            if horizon > available:
                raise ApiError(
                    422,
                    f"horizon: {context.label} has {available} later frames to infer actions from, so with actions "
                    f"'inferred' the horizon may be at most {available}; lower the horizon or the context's start, "
                    "or use actions 'prior' or 'zero'",
                )
        base = base_actions(name, horizon, world.n_slots, world.action_dim, request.seed, context.inferred)
        edits = [
            ActionEdit(
                e.slot,
                None if e.steps is None else tuple(e.steps),
                None if e.delta is None else tuple(e.delta),
                None if e.set is None else tuple(e.set),
            )
            for e in request.edits
        ]
        try:
            return name, apply_edits(base, edits)  # [H, K, A]
        except ValueError as error:
            raise ApiError(422, f"edits: {error}") from None

    def _check_request(self, model: LoadedModel, request: RolloutRequest) -> None:
        limits = self.settings
        if request.horizon > limits.max_horizon:
            raise ApiError(
                422, f"horizon: {request.horizon} steps is above this server's limit of {limits.max_horizon}"
            )
        if len(request.edits) > limits.max_edits:
            raise ApiError(422, f"edits: {len(request.edits)} edits is above this server's limit of {limits.max_edits}")
        for index, edit in enumerate(request.edits):
            if edit.steps is not None and len(edit.steps) > request.horizon:
                raise ApiError(
                    422,
                    f"edits[{index}].steps: {len(edit.steps)} steps for a horizon of {request.horizon}; list each "
                    "step once (null means every step)",
                )
        if request.identity is not None:
            loaded = model.world.identity
            wanted = request.identity.model_dump()
            if wanted != loaded:
                differs = ", ".join(k for k in loaded if wanted.get(k) != loaded[k])
                raise ApiError(
                    409,
                    f"identity: the recipe was made with another checkpoint than the loaded {model.name!r} "
                    f"(differs in {differs}); drop 'identity' to run it on this checkpoint anyway",
                    loaded=loaded,
                )

    async def rollout(self, request: RolloutRequest) -> dict[str, Any]:
        """POST /rollout: the response body as a dict (see schemas.RolloutResponse)."""
        started = time.perf_counter()
        model = self.registry.get(request.model)
        self._check_request(model, request)
        use_cache = request.cache and self.settings.caching
        context, key, hit = await self.context(model, request.context, use_cache)
        context_done = time.perf_counter()
        plan_name, plan = await anyio.to_thread.run_sync(lambda: self._plan(model, request, context))
        plan_done = time.perf_counter()
        prefix, reused = self.rollouts.best_prefix(key, plan) if use_cache else (None, 0)
        if prefix is not None and reused == plan.shape[0]:
            result = JobResult(reuse_whole(prefix, plan), 0.0, 0.0, 0)
        else:
            start = prefix.states[reused] if prefix is not None else context.state
            job = RolloutJob(model.world, start, plan, prefix, reused, solo=not use_cache)
            result = await self.call(job)
        if use_cache:
            self.rollouts.put(key, result.rollout)
        rolled = time.perf_counter()
        body = await anyio.to_thread.run_sync(lambda: self._encode_rollout(request, result, use_cache))
        encoded = time.perf_counter()
        body.update(
            model=model.name,
            horizon=request.horizon,
            actions=plan.tolist(),
            cache={
                "context": "hit" if hit else ("miss" if use_cache else "off"),
                "reused_steps": reused,
                "batch_size": result.batch_size,
            },
            recipe=self._recipe(model, request, plan_name, context),
            timing_ms={
                "context": _ms(started, context_done),
                "plan": _ms(context_done, plan_done),
                "queue": round(result.queued_ms, 3),
                "rollout": round(result.compute_ms, 3),
                "encode": _ms(rolled, encoded),
                "total": _ms(started, time.perf_counter()),
            },
        )
        return body

    def _png(self, frame: np.ndarray, use_cache: bool) -> str:
        """A frame as base64 PNG, from the cache of recently encoded frames when allowed."""
        if not use_cache:
            return codecs.encode_png_b64(frame)
        key = hashlib.blake2b(frame.tobytes(), digest_size=20).digest()
        text = self.pngs.get(key)
        if text is None:
            text = codecs.encode_png_b64(frame)
            self.pngs.put(key, text)
        return text

    def _encode_rollout(self, request: RolloutRequest, result: JobResult, use_cache: bool) -> dict[str, Any]:
        """Frames (PNG list or one video) and masks of a rollout (thread pool)."""
        frames = result.rollout.frames[0].numpy()  # [H, H_px, W_px, 3]
        body: dict[str, Any] = {}
        if request.format == "png":
            body.update(frames=[self._png(f, use_cache) for f in frames], media_type="image/png")
        else:
            video = codecs.encode_video(frames, request.format, request.fps)
            body.update(video=codecs.b64(video), media_type=codecs.VIDEO_FORMATS[request.format])
        if request.return_masks:
            body["masks"] = _mask_lists(result.rollout.masks[0])
        return body

    def _recipe(
        self, model: LoadedModel, request: RolloutRequest, plan_name: str, context: EncodedContext
    ) -> dict[str, Any]:
        """The normalised request plus the checkpoint identity: posting it back gives the same bytes."""
        if request.context.episode is not None:
            ctx = {"episode": request.context.episode, "start": request.context.start, "length": request.context.length}
        else:
            ctx = {"frames": context.frames_b64}
        return {
            "model": model.name,
            "context": ctx,
            "horizon": request.horizon,
            "actions": plan_name,
            "seed": request.seed,
            "edits": [e.model_dump(exclude_none=True) for e in request.edits],
            "return_masks": request.return_masks,
            "format": request.format,
            "fps": request.fps,
            "identity": dict(model.world.identity),
        }

    # --- analysis --------------------------------------------------------------------------------------------

    async def analyse(self, request: AnalyseRequest) -> dict[str, Any]:
        """POST /analyse: slots' masks and posterior actions for an episode span or uploaded frames."""
        started = time.perf_counter()
        model = self.registry.get(request.model)
        context = request.context
        limit = self.settings.max_analyse_frames
        use_cache = self.settings.caching
        truth = None
        if context.episode is not None:
            start, length = self._span(model, context, limit, "for an analysis")
            episode = context.episode
            analysis, _ = await self._memo(
                self.analyses,
                (model.name, "episode", episode),
                lambda: self._analyse_episode(model, episode),
                use_cache,
            )
            inference = analysis.inference
            masks = inference.masks[0, start : start + length]  # [C, K, h, w]
            actions = inference.actions[0, start : start + length - 1]  # [C-1, K, A]
            std = inference.action_std[0, start : start + length - 1]  # [C-1, K, A]
            if model.episodes.has_ground_truth:
                truth = model.episodes.ground_truth(episode).entity_map[start : start + length]  # [C, H, W]
        else:
            frames = await self._decode_frames(context.frames, model.world.image_size, limit)
            digest = hashlib.blake2b(frames.tobytes(), digest_size=20).hexdigest()
            key = (model.name, "analysis", frames.shape, digest)

            def analyse_frames() -> EpisodeAnalysis:
                z, inference = model.world.analyse(torch.from_numpy(frames)[None])
                return EpisodeAnalysis(z, inference)

            analysis, _ = await self._memo(self.analyses, key, analyse_frames, use_cache)
            masks = analysis.inference.masks[0]
            actions = analysis.inference.actions[0]
            std = analysis.inference.action_std[0]
        masks_np = masks.float().cpu().numpy()  # [C, K, h, w]
        body: dict[str, Any] = {
            "model": model.name,
            "n_frames": int(masks_np.shape[0]),
            "grid": list(masks_np.shape[-2:]),
            "actions": actions.float().cpu().tolist(),
            "action_std": std.float().cpu().tolist(),
        }
        if request.return_masks:
            body["masks"] = _mask_lists(masks)
        if truth is not None:
            cover = entity_cover(truth, model.episodes.n_entities, masks_np.shape[-1])  # [C, N, h, w]
            body["entity_slots"] = slot_owners(masks_np, cover).tolist()
        body["timing_ms"] = {"total": _ms(started, time.perf_counter())}
        return body

    # --- episodes, models, health ----------------------------------------------------------------------------

    async def episodes(self, name: str | None) -> dict[str, Any]:
        """GET /episodes: the model's bundled sample contexts with thumbnails."""
        model = self.registry.get(name)
        dataset = model.episodes
        if dataset is None:
            return {
                "model": model.name,
                "image_size": model.world.image_size,
                "n_agents": 0,
                "entity_colors": None,
                "action_names": None,
                "episodes": [],
            }

        def thumbnails() -> list[dict[str, Any]]:
            out = []
            for episode in range(dataset.n_episodes):
                if episode not in model.thumbnails:
                    model.thumbnails[episode] = codecs.encode_png_b64(dataset.frames(episode)[0])
                out.append(
                    {"id": episode, "frames": dataset.frames_per_episode, "thumbnail": model.thumbnails[episode]}
                )
            return out

        return {
            "model": model.name,
            "image_size": dataset.image_size,
            "n_agents": int(dataset.manifest.get("n_agents", 0)),
            "entity_colors": dataset.manifest.get("entity_colors"),
            "action_names": model.action_names,
            "episodes": await anyio.to_thread.run_sync(thumbnails),
        }

    async def episode_frames(self, name: str | None, episode: int, start: int, length: int | None) -> dict[str, Any]:
        """GET /episodes/{id}/frames: an episode's frames (and true actions) to show beside a rollout."""
        model = self.registry.get(name)
        self._episode(model, episode)
        total = model.episodes.frames_per_episode
        length = total - start if length is None else length
        span = Context(episode=episode, start=start, length=max(1, length))
        start, length = self._span(model, span, self.settings.max_analyse_frames, "per request")
        dataset = model.episodes
        frames = dataset.frames(episode)[start : start + length]  # [C, H, W, 3]
        body: dict[str, Any] = {
            "model": model.name,
            "episode": episode,
            "start": start,
            "frames": await anyio.to_thread.run_sync(lambda: [codecs.encode_png_b64(f) for f in frames]),
        }
        names = model.action_names
        if names is not None:
            codes = dataset.ground_truth(episode).actions[start : start + length - 1]  # [C-1, N]
            body["true_actions"] = [[names[c] if 0 <= c < len(names) else None for c in row] for row in codes.tolist()]
        return body

    def models(self) -> list[dict[str, Any]]:
        return [m.describe(name == self.registry.default) for name, m in self.registry.models.items()]

    def action_stats(self, name: str | None) -> dict[str, Any]:
        model = self.registry.get(name)
        if model.stats is None:
            raise ApiError(404, f"model {model.name!r} has no bundled episodes to compute action statistics from")
        return {"model": model.name, "n_slots": model.world.n_slots, **model.stats}

    def health(self) -> dict[str, Any]:
        registry, s = self.registry, self.settings
        return {
            "status": "ok" if registry.models else "no models",
            "models_loaded": len(registry.models),
            "models": list(registry.models),
            "default_model": registry.default,
            "failed": registry.failed,
            "problem": registry.problem,
            "device": str(registry.device),
            "torch_threads": torch.get_num_threads(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "queue": {
                "waiting": self.worker.depth,
                "limit": s.max_queue,
                "batches": self.worker.batches,
                "stacked_jobs": self.worker.stacked,
            },
            "caches": {
                "contexts": self.contexts.stats(),
                "analyses": self.analyses.stats(),
                "rollouts": self.rollouts.stats(),
                "frames": self.pngs.stats(),
            },
            "limits": {
                "max_horizon": s.max_horizon,
                "max_context_frames": s.max_context_frames,
                "max_analyse_frames": s.max_analyse_frames,
                "max_image_pixels": s.max_image_pixels,
                "max_body_bytes": s.max_body_bytes,
                "max_edits": s.max_edits,
                "max_queue": s.max_queue,
            },
        }


def _mask_lists(masks: torch.Tensor) -> list:
    """Masks [T, K, h, w] as nested lists, rounded (and finite: JSON has no NaN)."""
    values = np.nan_to_num(masks.float().cpu().numpy(), nan=0.0, posinf=1.0, neginf=0.0)
    return np.round(values, MASK_DECIMALS).tolist()


def _warmup_request(model: LoadedModel, horizon: int) -> RolloutRequest:
    """A rollout through the whole request path: from episode 0 when bundled, else from a grey frame."""
    if model.episodes is not None and model.episodes.n_episodes > 0:
        context = Context(episode=0)
    else:
        size = model.world.image_size
        grey = np.full((size, size, 3), 128, np.uint8)
        context = Context(frames=[codecs.encode_png_b64(grey)])
    return RolloutRequest(
        model=model.name,
        context=context,
        horizon=horizon,
        actions="zero",
        cache=False,
        identity=Identity(**model.world.identity),
    )
