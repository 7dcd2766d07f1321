"""The REST API, in-process (ASGI) and over a real uvicorn server on 127.0.0.1: happy paths, reproducibility, edits
and every kind of bad input the issue lists. Models are the tiny random-ish fixture set: never assert quality."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_api_support import (
    assert_clean_error,
    bomb_png_b64,
    decode_b64_png,
    jpeg_b64,
    png_b64,
    running_server,
    truncated_png_b64,
)

from flam.backend.app import create_app
from flam.backend.settings import Settings

BODY_LIMIT = 2 * 2**20
MAX_HORIZON = 16


@pytest.fixture(scope="module")
def inprocess(tiny_checkpoints: Path) -> Iterator[TestClient]:
    settings = Settings(
        checkpoints=tiny_checkpoints, ui=False, max_body_bytes=BODY_LIMIT, max_horizon=MAX_HORIZON, torch_threads=0
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def server(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {"FLAM_MAX_BODY_BYTES": str(BODY_LIMIT), "FLAM_MAX_HORIZON": str(MAX_HORIZON)}
    with running_server(tiny_checkpoints, log, **env) as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            yield client


@pytest.fixture(params=["inprocess", "server"])
def client(request: pytest.FixtureRequest) -> httpx.Client:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def facts(inprocess: TestClient) -> dict:
    """Sizes of the default model and its first episode, read through the API."""
    models = inprocess.get("/models").json()
    default = next(m for m in models if m["default"])
    episode = inprocess.get("/episodes").json()["episodes"][0]
    return {**default, "episode": episode["id"], "frames": episode["frames"]}


def rollout(client: httpx.Client, **body: object) -> dict:
    response = client.post("/rollout", json=body)
    assert response.status_code == 200, response.text[:500]
    return response.json()


# --- happy paths ---------------------------------------------------------------------------------------------


def test_health_models_episodes_stats(client: httpx.Client, facts: dict) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["models_loaded"] == 2 and health["default_model"] == facts["name"]
    models = {m["name"]: m for m in client.get("/models").json()}
    assert set(models) == {"tiny/flam", "tiny/monolithic"}
    flam = models["tiny/flam"]
    assert flam["kind"] == "flam" and flam["n_slots"] == 3 and flam["action_dim"] == 2 and flam["action_size"] == 6
    assert models["tiny/monolithic"]["n_slots"] == 1 and models["tiny/monolithic"]["action_dim"] == 6
    assert set(flam["identity"]) == {"name", "kind", "weights_sha256", "tokenizer_sha256"}
    assert flam["training"]["steps"] == flam["training"]["planned_steps"] == 4 and flam["episodes"] >= 1

    episodes = client.get("/episodes", params={"model": "tiny/monolithic"}).json()
    assert episodes["model"] == "tiny/monolithic" and episodes["action_names"]
    thumb = decode_b64_png(episodes["episodes"][0]["thumbnail"])
    assert thumb.shape == (facts["image_size"], facts["image_size"], 3)

    shown = client.get(f"/episodes/{facts['episode']}/frames", params={"start": 2, "length": 4}).json()
    assert len(shown["frames"]) == 4 and len(shown["true_actions"]) == 3
    assert all(name in episodes["action_names"] for row in shown["true_actions"] for name in row if name)

    stats = client.get("/action-stats").json()
    assert stats["model"] == facts["name"] and len(stats["slots"]) == facts["n_slots"]
    slot = stats["slots"][0]
    directions = np.array(slot["directions"])
    assert directions.shape == (facts["action_dim"], facts["action_dim"])
    np.testing.assert_allclose(directions @ directions.T, np.eye(facts["action_dim"]), atol=1e-3)
    assert slot["explained_variance_ratio"] == sorted(slot["explained_variance_ratio"], reverse=True)
    assert len(slot["entity_share"]) == stats["entities"]
    for entry in slot["by_action_name"].values():
        assert len(entry["mean"]) == facts["action_dim"] and entry["count"] >= 1


def test_docs_and_landing(client: httpx.Client) -> None:
    landing = client.get("/", follow_redirects=False)
    assert landing.status_code in (302, 307) and landing.headers["location"].endswith("/docs")
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["RolloutRequest"]["properties"]
    assert {"model", "context", "horizon", "actions", "seed", "edits", "return_masks", "format"} <= set(request)
    for name, field in request.items():
        assert field.get("description"), f"RolloutRequest.{name} has no description"
    for name in ("Context", "Edit"):
        for field, spec in schema["components"]["schemas"][name]["properties"].items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_rollout_png_recipe_reproduces_bytes(client: httpx.Client, facts: dict) -> None:
    k, a = facts["n_slots"], facts["action_dim"]
    body = {
        "context": {"episode": facts["episode"], "start": 1, "length": 2},
        "horizon": 5,
        "return_masks": True,
        "edits": [{"slot": k - 1, "steps": [1, 3], "delta": [0.75] * a}, {"slot": 0, "set": [-0.5] * a}],
    }
    first = rollout(client, **body)
    assert first["model"] == facts["name"] and first["media_type"] == "image/png" and len(first["frames"]) == 5
    assert decode_b64_png(first["frames"][0]).shape == (facts["image_size"], facts["image_size"], 3)
    actions = np.array(first["actions"])
    assert actions.shape == (5, k, a)
    np.testing.assert_allclose(actions[:, 0], -0.5)
    masks = np.array(first["masks"])
    assert masks.shape == (5, k, facts["grid"], facts["grid"])
    np.testing.assert_allclose(masks.sum(axis=1), 1.0, atol=1e-3)
    assert set(first["timing_ms"]) >= {"context", "plan", "queue", "rollout", "encode", "total"}
    recipe = first["recipe"]
    assert recipe["identity"]["kind"] == "flam" and recipe["actions"] == "inferred" and recipe["model"] == facts["name"]
    again = rollout(client, **recipe)
    assert again["frames"] == first["frames"] and again["actions"] == first["actions"]
    fresh = rollout(client, **{**recipe, "cache": False})
    assert fresh["frames"] == first["frames"] and fresh["cache"]["context"] == "off"


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_rollout_video_formats(client: httpx.Client, facts: dict, fmt: str) -> None:
    first = rollout(client, context={"episode": facts["episode"]}, horizon=4, actions="prior", seed=3, format=fmt)
    assert "frames" not in first
    video = base64.b64decode(first["video"])
    if fmt == "gif":
        assert first["media_type"] == "image/gif"
        gif = Image.open(io.BytesIO(video))
        durations = []
        for index in range(gif.n_frames):  # identical neighbours are merged, their durations added
            gif.seek(index)
            durations.append(gif.info["duration"])
        assert sum(durations) == 4 * round(1000 / 8)
    else:
        assert first["media_type"] == "video/mp4" and video[4:8] == b"ftyp"
    assert rollout(client, **first["recipe"])["video"] == first["video"]


def test_edit_changes_frames_and_base_plan_reproduces(client: httpx.Client, facts: dict) -> None:
    context = {"episode": facts["episode"]}
    base = rollout(client, context=context, horizon=6)
    for slot in range(facts["n_slots"]):
        # the fixture's weights are barely trained: a small action change may snap to the same codes, a large one
        # must not
        for value in (40.0, -1000.0, 1000.0):
            edited = rollout(
                client, context=context, horizon=6, edits=[{"slot": slot, "set": [value] * 2}], return_masks=True
            )
            changed = np.array(edited["actions"]) != np.array(base["actions"])
            assert changed[:, slot].all() and not np.delete(changed, slot, axis=1).any()
            if edited["frames"] != base["frames"]:
                break
        else:
            pytest.fail(f"no edit on slot {slot} changed the frames")
        assert rollout(client, context=context, horizon=6)["frames"] == base["frames"]
    late = rollout(client, context=context, horizon=6, edits=[{"slot": 0, "steps": [4], "delta": [9.0] * 2}])
    assert late["cache"]["reused_steps"] == 4 and late["frames"][:4] == base["frames"][:4]
    assert rollout(client, context=context, horizon=6, cache=False)["frames"] == base["frames"]


def test_prior_plan_depends_on_seed_only(client: httpx.Client, facts: dict) -> None:
    context = {"episode": facts["episode"]}
    one = rollout(client, context=context, horizon=3, actions="prior", seed=1)
    assert rollout(client, context=context, horizon=3, actions="prior", seed=1)["actions"] == one["actions"]
    assert rollout(client, context=context, horizon=3, actions="prior", seed=2)["actions"] != one["actions"]
    zero = rollout(client, context=context, horizon=3, actions="zero")
    assert not np.array(zero["actions"]).any()


def test_uploaded_frames_and_analyse(client: httpx.Client, facts: dict) -> None:
    shown = client.get(f"/episodes/{facts['episode']}/frames", params={"length": 3}).json()
    frames = shown["frames"]
    result = rollout(client, context={"frames": frames}, horizon=3)
    assert result["recipe"]["actions"] == "zero" and len(result["frames"]) == 3
    assert rollout(client, **result["recipe"])["frames"] == result["frames"]

    first = decode_b64_png(frames[0])
    rgba = np.dstack([first, np.full(first.shape[:2], 255, np.uint8)])  # an alpha channel is dropped
    same = rollout(client, context={"frames": [png_b64(rgba)]}, horizon=1)
    assert same["recipe"]["context"]["frames"][0] == result["recipe"]["context"]["frames"][0]
    small = first[::2, ::2]  # another size: resized by the server
    resized = rollout(client, context={"frames": ["data:image/png;base64," + png_b64(small)]}, horizon=2)
    normalised = decode_b64_png(resized["recipe"]["context"]["frames"][0])
    assert normalised.shape == (facts["image_size"], facts["image_size"], 3)

    analysis = client.post("/analyse", json={"context": {"frames": frames}}).json()
    masks = np.array(analysis["masks"])
    assert masks.shape == (3, facts["n_slots"], facts["grid"], facts["grid"])
    np.testing.assert_allclose(masks.sum(axis=1), 1.0, atol=1e-3)
    assert np.array(analysis["actions"]).shape == (2, facts["n_slots"], facts["action_dim"])

    episode = client.post("/analyse", json={"context": {"episode": facts["episode"], "start": 0, "length": 5}}).json()
    assert episode["n_frames"] == 5 and np.array(episode["action_std"]).shape == (4, facts["n_slots"], 2)
    slots = np.array(episode["entity_slots"])
    assert slots.shape[0] == 5 and ((slots >= -1) & (slots < facts["n_slots"])).all()


def test_monolithic_model(client: httpx.Client, facts: dict) -> None:
    result = rollout(
        client,
        model="tiny/monolithic",
        context={"episode": facts["episode"]},
        horizon=3,
        edits=[{"slot": 0, "delta": [1.0] * 6}],
    )
    assert np.array(result["actions"]).shape == (3, 1, 6)
    assert result["recipe"]["identity"]["kind"] == "monolithic"


# --- bad input -----------------------------------------------------------------------------------------------


def bad_cases(facts: dict) -> list[tuple[str, object, int, tuple[str, ...]]]:
    """(name, body (dict, or raw bytes), status, fragments the message must contain)."""
    ep = {"episode": facts["episode"]}
    a, k = facts["action_dim"], facts["n_slots"]
    ok = {"context": ep, "horizon": 2}
    return [
        ("short vector", {**ok, "edits": [{"slot": 0, "delta": [1.0] * (a - 1)}]}, 422, ("needs", str(a))),
        ("long vector", {**ok, "edits": [{"slot": 0, "set": [1.0] * (a + 3)}]}, 422, ("needs", str(a))),
        ("slot out of range", {**ok, "edits": [{"slot": k, "delta": [0.0] * a}]}, 422, ("slot", "range")),
        ("negative slot", {**ok, "edits": [{"slot": -1, "delta": [0.0] * a}]}, 422, ("slot",)),
        (
            "steps repeated",
            {**ok, "edits": [{"slot": 0, "steps": [0, 0, 1], "delta": [0.0] * a}]},
            422,
            ("edits[0].steps", "once"),
        ),
        ("step out of range", {**ok, "edits": [{"slot": 0, "steps": [2], "delta": [0.0] * a}]}, 422, ("step 2",)),
        (
            "NaN",
            b'{"context": {"episode": 0}, "horizon": 2, "edits": [{"slot": 0, "delta": [NaN, 0]}]}',
            422,
            ("finite",),
        ),
        (
            "Infinity",
            b'{"context": {"episode": 0}, "horizon": 2, "edits": [{"slot": 0, "set": [Infinity, 1]}]}',
            422,
            ("finite",),
        ),
        ("huge value", {**ok, "edits": [{"slot": 0, "set": [1e300] * a}]}, 422, ("edits[0].set[0]",)),
        ("string value", {**ok, "edits": [{"slot": 0, "delta": ["1"] * a}]}, 422, ("number",)),
        ("string horizon", {**ok, "horizon": "2"}, 422, ("horizon",)),
        ("delta and set", {**ok, "edits": [{"slot": 0, "delta": [0] * a, "set": [0] * a}]}, 422, ("exactly one",)),
        ("neither delta nor set", {**ok, "edits": [{"slot": 0}]}, 422, ("exactly one",)),
        ("unknown field", {**ok, "edtis": []}, 422, ("edtis", "extra")),
        ("unknown model", {**ok, "model": "nope/flam"}, 404, ("nope/flam", "tiny/flam")),
        ("unknown episode", {**ok, "context": {"episode": 999}}, 404, ("999", "episodes 0..")),
        ("horizon zero", {**ok, "horizon": 0}, 422, ("horizon",)),
        ("horizon negative", {**ok, "horizon": -3}, 422, ("horizon",)),
        ("horizon above limit", {**ok, "horizon": MAX_HORIZON + 1, "actions": "zero"}, 422, (str(MAX_HORIZON),)),
        ("horizon past the episode", {**ok, "horizon": facts["frames"]}, 422, ("at most", "prior")),
        (
            "context past the episode",
            {**ok, "context": {**ep, "start": facts["frames"] - 1, "length": 2}},
            422,
            ("past the end",),
        ),
        ("no context", {"horizon": 2}, 422, ("context",)),
        ("both contexts", {**ok, "context": {**ep, "frames": [jpeg_b64()]}}, 422, ("exactly one",)),
        (
            "inferred for uploads",
            {**ok, "context": {"frames": [png_b64(np.zeros((8, 8, 3), np.uint8))]}, "actions": "inferred"},
            422,
            ("prior", "zero"),
        ),
        ("unknown plan", {**ok, "actions": "random"}, 422, ("actions",)),
        ("unknown format", {**ok, "format": "webm"}, 422, ("format",)),
        ("not base64", {**ok, "context": {"frames": ["@@@"]}}, 422, ("frames[0]", "base64")),
        ("not a PNG", {**ok, "context": {"frames": [jpeg_b64()]}}, 422, ("frames[0]", "not a png")),
        ("truncated PNG", {**ok, "context": {"frames": [truncated_png_b64()]}}, 422, ("truncated",)),
        ("decompression bomb", {**ok, "context": {"frames": [bomb_png_b64()]}}, 422, ("100000x100000",)),
        (
            "huge image",
            {**ok, "context": {"frames": [png_b64(np.zeros((1100, 1000, 3), np.uint8))]}},
            422,
            ("1100000",),
        ),
        ("too many frames", {**ok, "context": {"frames": [jpeg_b64()] * 17}}, 422, ("17 frames",)),
        ("malformed JSON", b'{"context": {"episode": 0}, "horizon": ', 400, ("not valid json",)),
        ("JSON array", b"[1, 2, 3]", 422, ("json object",)),
        ("empty body", b"", 422, ("body",)),
        (
            "recipe for other weights",
            {
                **ok,
                "identity": {"name": "flam", "kind": "flam", "weights_sha256": "0" * 64, "tokenizer_sha256": "1" * 64},
            },
            409,
            ("identity",),
        ),
    ]


BAD_NAMES = [case[0] for case in bad_cases({"episode": 0, "action_dim": 2, "n_slots": 3, "frames": 13})]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_rollout_input(client: httpx.Client, facts: dict, name: str) -> None:
    _, body, status, fragments = next(case for case in bad_cases(facts) if case[0] == name)
    if isinstance(body, bytes):
        response = client.post("/rollout", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/rollout", json=body)
    assert_clean_error(response, status, *fragments)


def test_bad_input_other_routes(client: httpx.Client, facts: dict) -> None:
    assert_clean_error(client.get("/episodes", params={"model": "x"}), 404, "unknown model")
    assert_clean_error(client.get("/episodes/99/frames"), 404, "episode 99")
    assert_clean_error(client.get("/episodes/0/frames", params={"start": 500}), 422, "past the end")
    assert_clean_error(client.get("/episodes/zero/frames"), 422, "episode")
    assert_clean_error(client.get("/action-stats", params={"model": "y"}), 404, "tiny/flam")
    assert_clean_error(client.post("/analyse", json={"context": {"episode": 0, "length": 999}}), 422, "length")
    assert_clean_error(client.post("/analyse", json={"context": {"frames": [bomb_png_b64()]}}), 422, "declares")
    assert_clean_error(client.get("/nowhere"), 404, "no such endpoint")
    assert_clean_error(client.delete("/rollout"), 405, "method")


def test_oversized_body(client: httpx.Client, facts: dict) -> None:
    padding = "A" * (BODY_LIMIT + 10)
    body = json.dumps({"context": {"frames": [padding]}, "horizon": 1}).encode()
    response = client.post("/rollout", content=body, headers={"content-type": "application/json"})
    assert_clean_error(response, 413, str(BODY_LIMIT))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is what counts
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = client.post("/rollout", content=chunks(), headers={"content-type": "application/json"})
    assert_clean_error(streamed, 413, "limit")
    assert client.get("/health").status_code == 200


def test_no_models_is_not_an_error_until_you_roll(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(checkpoints=tmp_path, ui=False, torch_threads=0))) as client:
        health = client.get("/health").json()
        assert health["status"] == "no models" and health["models_loaded"] == 0 and health["problem"]
        assert client.get("/models").json() == []
        response = client.post("/rollout", json={"context": {"episode": 0}, "horizon": 2})
        assert_clean_error(response, 503, "no models: train one (see README)")
    with TestClient(create_app(Settings(checkpoints=tmp_path / "missing", ui=False, torch_threads=0))) as client:
        assert client.get("/health").json()["status"] == "no models"
