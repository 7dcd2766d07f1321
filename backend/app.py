"""The FastAPI app: `create_app(settings)` builds it; `uvicorn --factory flam.backend.app:create_app` serves it.

Routes: GET /health, GET /models, GET /episodes, GET /episodes/{id}/frames, GET /action-stats, POST /rollout,
POST /analyse; OpenAPI at /docs. Models load once at startup (lifespan) and each is warmed up by one rollout.
The Gradio UI joins in exactly one place, `mount_ui`, when `flam.frontend.app` provides `mount(app, api_base_url)`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import torch
from fastapi import FastAPI, Query
from fastapi.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flam.backend.engine import Engine
from flam.backend.errors import error_response, install_error_handlers
from flam.backend.registry import Registry, resolve_device
from flam.backend.schemas import (
    AnalyseRequest,
    AnalyseResponse,
    EpisodeFramesResponse,
    EpisodesResponse,
    ModelInfo,
    RolloutRequest,
    RolloutResponse,
)
from flam.backend.settings import Settings

log = logging.getLogger("flam.backend")
UI_MODULE = "flam.frontend.app"
UI_PATH = "/ui"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

DESCRIPTION = """Steer single entities in generated video with per-slot latent actions.

- A rollout is a pure function of (model, context, action plan, seed): every response carries a `recipe` that,
  posted back to `/rollout`, gives the same bytes (on the same kind of device; a recipe names the checkpoint it
  was made with, and another checkpoint answers 409).
- Typical editing loop: `GET /models` (K slots, action size d/K), `GET /episodes` (contexts), `POST /analyse`
  (slot masks, to map a click to a slot), `GET /action-stats` (slider axes per slot and the mean action per
  named ground-truth action), then `POST /rollout` with `edits` on every slider move. The server caches the
  encoded context and reuses the rollout up to the first edited step; concurrent rollouts share forward passes.
- Uploaded frames are base64 PNGs; other sizes are centre-cropped and resized to the model's image size.
- Errors are `{"error": "..."}` with a 4xx status that says what to fix. Limits (`GET /health` lists them) are
  server settings (FLAM_* environment variables); a full work queue answers 503 with `Retry-After`.
- `"cache": false` in a rollout request computes it from scratch and alone (for benchmarks); the bytes are
  the same.
"""


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` with 413, by Content-Length and by streamed size.

    The body is read here (at most max_bytes) and replayed to the app, so the app never sees a partial body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than this server's limit of {self.max_bytes} bytes"
        await error_response(413, message, {"Connection": "close"})(scope, receive, send)


def mount_ui(app: FastAPI, api_base_url: str) -> bool:
    """The one place the Gradio UI is mounted: `flam.frontend.app.mount(app, api_base_url)` if it exists."""
    if importlib.util.find_spec(UI_MODULE) is None:
        return False
    mount = getattr(importlib.import_module(UI_MODULE), "mount", None)
    if mount is None:
        return False
    mount(app, api_base_url)
    return True


def create_app(settings: Settings | None = None, api_base_url: str | None = None) -> FastAPI:
    """The API app over the models in settings.checkpoints (settings default: from the environment)."""
    settings = settings or Settings.from_env()
    resolve_device(settings.device)  # a bad FLAM_DEVICE fails here, not halfway through startup

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        registry = Registry.load(settings)
        engine = Engine(settings, registry)
        app.state.engine = engine
        try:
            await engine.start()
            yield
        finally:
            engine.stop()

    app = FastAPI(
        title="FLAM Studio API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    _routes(app)
    has_ui = settings.ui and mount_ui(app, api_base_url or settings.api_url)
    landing = UI_PATH if has_ui else "/docs"

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse(landing)

    return app


def _json(body: dict[str, Any] | list[Any]) -> Response:
    """A JSON response of an already-built body (skips a second validation pass over large arrays)."""
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False), media_type="application/json")


def _routes(app: FastAPI) -> None:
    def engine() -> Engine:
        return app.state.engine

    model_query = Query(None, description="Model name from GET /models; absent: the default model.")

    @app.get("/health", summary="Liveness, loaded models, queue and cache state, limits")
    async def health() -> dict[str, Any]:
        return engine().health()

    @app.get("/models", response_model=list[ModelInfo], summary="Loaded models with their sizes, training and eval")
    async def models() -> Response:
        return _json(engine().models())

    @app.get("/episodes", response_model=EpisodesResponse, summary="Sample contexts bundled with a model")
    async def episodes(model: str | None = model_query) -> Response:
        return _json(await engine().episodes(model))

    @app.get(
        "/episodes/{episode}/frames",
        response_model=EpisodeFramesResponse,
        summary="Frames (and true actions) of a bundled episode",
    )
    async def episode_frames(
        episode: int,
        model: str | None = model_query,
        start: int = Query(0, ge=0, description="First frame."),
        length: int | None = Query(None, ge=1, description="Frames to return; absent: to the end."),
    ) -> Response:
        return _json(await engine().episode_frames(model, episode, start, length))

    @app.get("/action-stats", summary="Per-slot action statistics over the bundled episodes (slider axes)")
    async def action_stats(model: str | None = model_query) -> Response:
        return _json(engine().action_stats(model))

    @app.post("/rollout", response_model=RolloutResponse, summary="Roll a model out with per-slot action edits")
    async def rollout(request: RolloutRequest) -> Response:
        return _json(await engine().rollout(request))

    @app.post("/analyse", response_model=AnalyseResponse, summary="Slot masks and per-slot actions of frames")
    async def analyse(request: AnalyseRequest) -> Response:
        return _json(await engine().analyse(request))
