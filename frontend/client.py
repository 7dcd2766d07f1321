"""A small typed client of the FLAM REST API (httpx): the studio's only way to reach the models.

Every failure becomes one `ApiError` whose message a person can act on: the backend's JSON `{"error": ...}`
body when it sent one, or what went wrong on the network (refused, timed out) and where.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

MAX_SHOWN_BODY = 200  # characters of a non-JSON error body quoted in a message


class ApiError(Exception):
    """A request that did not give a usable answer; `message` says what went wrong, `status` is 0 off the wire."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ClientConfig:
    base_url: str = "http://127.0.0.1:8000"
    timeout_s: float = 60.0


@dataclass(frozen=True)
class ModelInfo:
    """One entry of GET /models (the fields the studio reads, plus the whole entry in `raw`)."""

    name: str
    kind: str
    default: bool
    n_slots: int
    action_dim: int
    image_size: int
    grid: int
    episodes: int
    action_names: list[str] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def unfinished(self) -> str:
        """'trained 4,000 of 20,000 steps' while training has not reached its planned steps, else ''."""
        training = self.raw.get("training") or {}
        done, planned = training.get("steps"), training.get("planned_steps")
        if not isinstance(done, int) or not isinstance(planned, int) or done >= planned:
            return ""
        return f"trained {done:,} of {planned:,} steps"

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ModelInfo:
        return cls(
            name=body["name"],
            kind=body["kind"],
            default=bool(body["default"]),
            n_slots=int(body["n_slots"]),
            action_dim=int(body["action_dim"]),
            image_size=int(body["image_size"]),
            grid=int(body["grid"]),
            episodes=int(body["episodes"]),
            action_names=body.get("action_names"),
            raw=body,
        )


@dataclass(frozen=True)
class Episodes:
    """GET /episodes: a model's bundled sample contexts."""

    model: str
    image_size: int
    n_agents: int
    entity_colors: list[list[int]] | None
    action_names: list[str] | None
    ids: list[int]
    frames: list[int]  # frames per episode
    thumbnails: list[str]  # base64 PNG of each episode's first frame


@dataclass(frozen=True)
class Rollout:
    """POST /rollout, with PNG frames decoded and the round trip measured here."""

    model: str
    frames: np.ndarray | None  # uint8 [H, Hpx, Wpx, 3] for format png
    video: bytes | None  # the GIF or MP4 file for those formats
    media_type: str
    actions: np.ndarray  # float [H, K, A]
    masks: np.ndarray | None  # float [H, K, h, w]
    timing_ms: dict[str, float]
    cache: dict[str, Any]
    recipe: dict[str, Any]
    round_trip_ms: float


@dataclass(frozen=True)
class Analysis:
    """POST /analyse: slot masks and posterior actions of a context's frames."""

    model: str
    grid: tuple[int, int]
    actions: np.ndarray  # float [T-1, K, A]
    masks: np.ndarray | None  # float [T, K, h, w]
    entity_slots: np.ndarray | None  # int [T, N], -1 where the entity is not visible
    round_trip_ms: float


def decode_png(text: str) -> np.ndarray:
    """A base64 PNG -> uint8 [H, W, 3]."""
    with Image.open(io.BytesIO(base64.b64decode(text)), formats=["PNG"]) as image:
        return np.asarray(image.convert("RGB"))


def encode_png(frame: np.ndarray) -> str:
    """uint8 [H, W, 3] -> base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def error_message(response: httpx.Response) -> str:
    """The readable reason of a failed response: the API's `error` field, else a short quote of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = body["error"]
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):
        message = body["detail"]
    else:
        text = " ".join(response.text.split())[:MAX_SHOWN_BODY]
        message = f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")
    retry = response.headers.get("Retry-After")
    if response.status_code == 503 and retry:
        message += f" (the server asks to retry in {retry} s)"
    return message


class FlamClient:
    """Typed calls to the FLAM API at `config.base_url`; `transport` replaces the network (tests)."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=config.timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> tuple[Any, float]:
        """(JSON body, round trip in ms) of a call; ApiError with a readable message on any failure."""
        started = time.perf_counter()
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ApiError(
                f"the FLAM API at {self.base_url} did not answer {method} {path} within {self.config.timeout_s:g} s"
            ) from None
        except httpx.ConnectError as error:
            raise ApiError(
                f"cannot reach the FLAM API at {self.base_url} ({_reason(error)}); is `flam serve` running there?"
            ) from None
        except httpx.TransportError as error:
            raise ApiError(f"network error talking to the FLAM API at {self.base_url}: {_reason(error)}") from None
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            raise ApiError(error_message(response), response.status_code)
        try:
            return response.json(), elapsed
        except ValueError:
            raise ApiError(f"the FLAM API answered {method} {path} with something that is not JSON") from None

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")[0]

    def models(self) -> list[ModelInfo]:
        return [ModelInfo.parse(entry) for entry in self._request("GET", "/models")[0]]

    def episodes(self, model: str | None = None) -> Episodes:
        body = self._request("GET", "/episodes", params=_model_param(model))[0]
        entries = body["episodes"]
        return Episodes(
            model=body["model"],
            image_size=int(body["image_size"]),
            n_agents=int(body["n_agents"]),
            entity_colors=body.get("entity_colors"),
            action_names=body.get("action_names"),
            ids=[int(e["id"]) for e in entries],
            frames=[int(e["frames"]) for e in entries],
            thumbnails=[e["thumbnail"] for e in entries],
        )

    def episode_frames(
        self, episode: int, model: str | None = None, start: int = 0, length: int | None = None
    ) -> tuple[np.ndarray, list[list[str | None]] | None]:
        """(uint8 frames [T, H, W, 3], true action names [T-1][N] or None) of a bundled episode."""
        params: dict[str, Any] = {**_model_param(model), "start": start}
        if length is not None:
            params["length"] = length
        body = self._request("GET", f"/episodes/{episode}/frames", params=params)[0]
        return np.stack([decode_png(f) for f in body["frames"]]), body.get("true_actions")

    def action_stats(self, model: str | None = None) -> dict[str, Any]:
        return self._request("GET", "/action-stats", params=_model_param(model))[0]

    def rollout(self, request: dict[str, Any]) -> Rollout:
        body, elapsed = self._request("POST", "/rollout", json=request)
        frames = body.get("frames")
        video = body.get("video")
        masks = body.get("masks")
        return Rollout(
            model=body["model"],
            frames=np.stack([decode_png(f) for f in frames]) if frames else None,
            video=base64.b64decode(video) if video else None,
            media_type=body["media_type"],
            actions=np.asarray(body["actions"], dtype=np.float64),
            masks=np.asarray(masks, dtype=np.float32) if masks is not None else None,
            timing_ms=body.get("timing_ms", {}),
            cache=body.get("cache", {}),
            recipe=body["recipe"],
            round_trip_ms=elapsed,
        )

    def analyse(self, request: dict[str, Any]) -> Analysis:
        body, elapsed = self._request("POST", "/analyse", json=request)
        masks = body.get("masks")
        owners = body.get("entity_slots")
        return Analysis(
            model=body["model"],
            grid=(int(body["grid"][0]), int(body["grid"][1])),
            actions=np.asarray(body["actions"], dtype=np.float64),
            masks=np.asarray(masks, dtype=np.float32) if masks is not None else None,
            entity_slots=np.asarray(owners, dtype=np.int64) if owners is not None else None,
            round_trip_ms=elapsed,
        )


def _model_param(model: str | None) -> dict[str, str]:
    return {} if model is None else {"model": model}


def _reason(error: Exception) -> str:
    """The innermost readable cause of a network error (e.g. 'Connection refused')."""
    text = str(error) or type(error).__name__
    return text.split("] ")[-1] if text.startswith("[Errno") else text
