"""A stand-in FLAM API for the studio's unit tests, served through httpx.MockTransport (no network, no torch).

Its "model" is transparent: slot k owns a vertical band of the frame, and the band's red and green levels are
the slot's two action values. So an edit of one slot changes exactly that slot's pixels, and the tests can check
the studio's bookkeeping (requests, locality, heatmap, recipe) against known answers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np

from flam.frontend.client import encode_png

K, A, SIZE, GRID, FRAMES, ENTITIES = 3, 2, 64, 8, 9, 2
NAMES = ["turn left", "turn right", "forward", "stay"]
IDENTITY = {"name": "flam", "kind": "flam", "weights_sha256": "a" * 64, "tokenizer_sha256": "b" * 64}


def owner_columns() -> np.ndarray:
    """The slot owning each grid column [GRID]."""
    return np.minimum(np.arange(GRID) * K // GRID, K - 1)


def masks(count: int) -> np.ndarray:
    """One-hot slot masks [count, K, GRID, GRID]: slot k owns its band of columns."""
    one = (owner_columns()[None, None, :] == np.arange(K)[:, None, None]).astype(np.float64)  # [K, 1, GRID]
    return np.broadcast_to(np.repeat(one, GRID, axis=1)[None], (count, K, GRID, GRID)).copy()


def frame(actions: np.ndarray) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3] of one step's actions [K, A]."""
    out = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    cell = SIZE // GRID
    for column, slot in enumerate(owner_columns()):
        red, green = np.clip(100 + 30 * actions[slot, :2], 0, 255).round().astype(np.uint8)
        out[:, column * cell : (column + 1) * cell] = (red, green, 40 * slot)
    return out


def inferred(count: int) -> np.ndarray:
    """The 'inferred' actions of the episode [count, K, A]."""
    t = np.arange(count)[:, None, None]
    k = np.arange(K)[None, :, None]
    a = np.arange(A)[None, None, :]
    return np.round(0.1 * t + 0.2 * k - 0.3 * a, 6)


class StubApi:
    """Routes of the FLAM API with the transparent model; `fail_rollout` makes POST /rollout answer an error."""

    def __init__(self) -> None:
        self.fail_rollout: tuple[int, str] | None = None
        self.requests: list[tuple[str, str, Any]] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        path = request.url.path
        if path == "/health":
            return httpx.Response(200, json={"status": "ok", "models": ["stub/flam"], "device": "cpu",
                                             "limits": {"max_horizon": 32}})  # fmt: skip
        if path == "/models":
            return httpx.Response(200, json=[self.model()])
        if path == "/episodes":
            thumbnail = encode_png(frame(inferred(1)[0]))
            return httpx.Response(200, json={
                "model": "stub/flam", "image_size": SIZE, "n_agents": ENTITIES,
                "entity_colors": [[66, 133, 244], [52, 199, 89]], "action_names": NAMES,
                "episodes": [{"id": 0, "frames": FRAMES, "thumbnail": thumbnail}],
            })  # fmt: skip
        if path == "/episodes/0/frames":
            start = int(request.url.params.get("start", 0))
            length = int(request.url.params.get("length", FRAMES - start))
            frames = [encode_png(frame(inferred(FRAMES)[min(t, FRAMES - 2)])) for t in range(start, start + length)]
            return httpx.Response(200, json={"model": "stub/flam", "episode": 0, "start": start, "frames": frames})
        if path == "/action-stats":
            return httpx.Response(200, json=self.stats())
        if path == "/analyse":
            count = FRAMES if "episode" in body["context"] else len(body["context"]["frames"])
            return httpx.Response(200, json={
                "model": "stub/flam", "n_frames": count, "grid": [GRID, GRID],
                "actions": inferred(count - 1).tolist(), "action_std": np.ones((count - 1, K, A)).tolist(),
                "masks": masks(count).tolist(),
                "entity_slots": [[0, 2]] * count if "episode" in body["context"] else None,
                "timing_ms": {"total": 1.0},
            })  # fmt: skip
        if path == "/rollout":
            if self.fail_rollout is not None:
                status, message = self.fail_rollout
                return httpx.Response(status, json={"error": message})
            return httpx.Response(200, json=self.rollout(body))
        return httpx.Response(404, json={"error": f"no such endpoint: {path} (see /docs)"})

    def model(self) -> dict[str, Any]:
        return {
            "name": "stub/flam", "kind": "flam", "default": True, "n_slots": K, "action_dim": A,
            "action_size": K * A, "image_size": SIZE, "grid": GRID, "arch": {},
            "training": {"steps": 4000, "planned_steps": 20000, "seconds": 1.0, "last_validation": {}},
            "evaluation": None, "identity": IDENTITY, "episodes": 1, "action_names": NAMES,
        }  # fmt: skip

    def stats(self) -> dict[str, Any]:
        slots = []
        for k in range(K):
            by_name = {"forward": {"mean": [1.5, 0.0], "count": 3}, "turn left": {"mean": [0.0, -1.0], "count": 2}}
            slots.append({
                "slot": k, "mean": [0.0, 0.0], "std": [1.0, 1.0], "directions": [[0.0, 1.0], [1.0, 0.0]],
                "direction_std": [1.0, 0.5], "explained_variance_ratio": [0.8, 0.2],
                "entity_share": [1.0 if k == 0 else 0.0, 1.0 if k == 2 else 0.0],
                "by_action_name": by_name if k == 0 else {},
            })  # fmt: skip
        return {"model": "stub/flam", "n_slots": K, "action_dim": A, "action_names": NAMES, "slots": slots}

    def rollout(self, body: dict[str, Any]) -> dict[str, Any]:
        horizon = body["horizon"]
        plan = body.get("actions") or ("inferred" if "episode" in body["context"] else "zero")
        if plan == "inferred":
            actions = inferred(horizon + 1)[1:]
        elif plan == "prior":
            actions = np.random.default_rng(body.get("seed", 0)).standard_normal((horizon, K, A))
        else:
            actions = np.zeros((horizon, K, A))
        for edit in body.get("edits", []):
            steps = edit.get("steps") or range(horizon)
            for t in steps:
                if "delta" in edit:
                    actions[t, edit["slot"]] += np.asarray(edit["delta"])
                else:
                    actions[t, edit["slot"]] = np.asarray(edit["set"])
        context = dict(body["context"])
        if "episode" in context:
            context = {"start": 0, "length": 1, **context}
        recipe = {**body, "context": context, "actions": plan, "identity": IDENTITY}
        out: dict[str, Any] = {
            "model": "stub/flam", "horizon": horizon, "media_type": "image/png", "actions": actions.tolist(),
            "timing_ms": {"total": 2.0}, "cache": {"context": "hit", "reused_steps": 0, "batch_size": 1},
            "recipe": recipe,
        }  # fmt: skip
        fmt = body.get("format", "png")
        if fmt == "png":
            out["frames"] = [encode_png(frame(a)) for a in actions]
        else:
            out["video"] = _video([frame(a) for a in actions], fmt)
            out["media_type"] = "video/mp4" if fmt == "mp4" else "image/gif"
        if body.get("return_masks"):
            out["masks"] = masks(horizon).tolist()
        return out


def _video(frames: list[np.ndarray], fmt: str) -> str:
    import base64
    import io

    import imageio.v3 as iio

    buffer = io.BytesIO()
    iio.imwrite(buffer, np.stack(frames), extension=f".{fmt}")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
