"""Backend pieces on their own: settings, codecs, caches, the stacking worker, statistics, errors, registry, CLI."""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_api_support import bomb_png_b64, jpeg_b64, png_b64, truncated_png_b64

from flam import bench, serve
from flam.backend import codecs
from flam.backend.app import BodyLimit
from flam.backend.batching import Busy, ModelWorker, RolloutJob, join
from flam.backend.caches import LRU, RolloutCache
from flam.backend.errors import validation_summary
from flam.backend.registry import Registry, scrub_paths
from flam.backend.settings import Settings, SettingsError
from flam.backend.stats import action_statistics, entity_cover, principal_directions, slot_owners
from flam.main import CliError
from flam.models.rollout import rollout
from flam.models.world_model import WorldModel, load_world_model
from flam.worlds.dataset import Dataset

# --- settings ------------------------------------------------------------------------------------------------


def test_settings_from_env(tmp_path: Path) -> None:
    env = {"FLAM_CHECKPOINTS": str(tmp_path), "FLAM_MAX_HORIZON": "12", "FLAM_CACHING": "off",
           "FLAM_BATCH_WINDOW_MS": "1.5", "FLAM_DEVICE": "cpu", "FLAM_UNRELATED": "x"}  # fmt: skip
    settings = Settings.from_env(env)
    assert settings.checkpoints == tmp_path and settings.max_horizon == 12 and settings.caching is False
    assert settings.batch_window_ms == 1.5 and settings.device == "cpu"
    assert Settings.from_env({}) == Settings()
    with pytest.raises(SettingsError, match="FLAM_MAX_HORIZON"):
        Settings.from_env({"FLAM_MAX_HORIZON": "ten"})
    with pytest.raises(SettingsError, match="FLAM_MAX_QUEUE"):
        Settings.from_env({"FLAM_MAX_QUEUE": "0"})
    with pytest.raises(SettingsError, match="FLAM_BATCHING"):
        Settings.from_env({"FLAM_BATCHING": "maybe"})


# --- codecs --------------------------------------------------------------------------------------------------


def test_png_round_trip_resize_and_data_url() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    text = codecs.encode_png_b64(frame)
    assert codecs.encode_png_b64(frame) == text  # deterministic
    np.testing.assert_array_equal(codecs.decode_png(text, 64, 10_000), frame)
    np.testing.assert_array_equal(codecs.decode_png(codecs.DATA_URL_PREFIX + text, 64, 10_000), frame)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 200  # the centre square survives the crop
    out = codecs.decode_png(png_b64(wide), 32, 10_000)
    assert out.shape == (32, 32, 3) and out.min() >= 190
    grey = codecs.decode_png(png_b64(np.full((64, 64), 9, np.uint8)), 64, 10_000)
    assert grey.shape == (64, 64, 3) and (grey == 9).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!", "base64"),
        (jpeg_b64(), "not a PNG"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(), "not a PNG"),
        (truncated_png_b64(), "truncated"),
        (bomb_png_b64(), "100000x100000"),
        (bomb_png_b64(0, 5), "empty"),
    ],
)
def test_bad_pngs(text: str, message: str) -> None:
    with pytest.raises(codecs.CodecError, match=message):
        codecs.decode_png(text, 64, 4096 * 4096)


def test_size_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("PIL was asked to open an image over the pixel limit")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(codecs.CodecError, match="at most 4096"):
        codecs.decode_png(png_b64(np.zeros((65, 64, 3), np.uint8)), 64, 4096)


def test_videos_are_deterministic() -> None:
    frames = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    for fmt in ("gif", "mp4"):
        first = codecs.encode_video(frames, fmt, 8)
        assert first == codecs.encode_video(frames, fmt, 8) and len(first) > 100
    assert codecs.encode_video(frames, "gif", 8).startswith(b"GIF89a")
    with pytest.raises(ValueError, match="webm"):
        codecs.encode_video(frames, "webm", 8)


# --- caches --------------------------------------------------------------------------------------------------


def test_lru_bounds() -> None:
    cache: LRU[str] = LRU(max_entries=2)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"
    cache.put("c", "3")  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == "1" and len(cache) == 2
    sized: LRU[bytes] = LRU(max_entries=100, max_bytes=10, size=len)
    for key in "xyz":
        sized.put(key, b"12345")
    assert len(sized) == 2 and sized.nbytes == 10 and sized.get("x") is None
    off: LRU[str] = LRU(max_entries=0)
    off.put("a", "1")
    assert off.get("a") is None
    assert cache.stats()["hits"] == 2


@pytest.fixture(scope="module")
def world(tiny_checkpoints: Path) -> WorldModel:
    return load_world_model(tiny_checkpoints / "tiny" / "flam", torch.device("cpu"))


@pytest.fixture(scope="module")
def episode(tiny_checkpoints: Path) -> torch.Tensor:
    return torch.from_numpy(Dataset.open(tiny_checkpoints / "tiny" / "episodes").frames(0))[None]  # [1, T, H, W, 3]


def _plan(world: WorldModel, seed: int, horizon: int = 5) -> torch.Tensor:
    return torch.randn(horizon, world.n_slots, world.action_dim, generator=torch.Generator().manual_seed(seed))


def test_rollout_cache_finds_longest_prefix(world: WorldModel, episode: torch.Tensor) -> None:
    start = world.start(world.encode(episode[:, :1]))
    plan = _plan(world, 0)
    cache = RolloutCache(max_bytes=2**24, per_context=3)
    assert cache.best_prefix("ctx", plan) == (None, 0)
    cache.put("ctx", rollout(world, start, plan[None]))
    other = plan.clone()
    other[3:] += 1
    found, steps = cache.best_prefix("ctx", other)
    assert found is not None and steps == 3
    assert cache.best_prefix("ctx", plan[:2])[1] == 2  # a shorter plan: a prefix of the cached one
    assert cache.best_prefix("elsewhere", plan) == (None, 0)
    cache.put("ctx", rollout(world, start, plan[None]))
    assert cache.stats()["entries"] == 1


# --- the worker ----------------------------------------------------------------------------------------------


def _wait(future: object, timeout: float = 60.0) -> object:
    return future.result(timeout)  # type: ignore[attr-defined]


def test_stacked_rollouts_equal_solo_ones(world: WorldModel, episode: torch.Tensor) -> None:
    z = world.encode(episode)  # [1, T, E, h, w]
    starts = [world.start(z[:, s : s + 2]) for s in range(4)]
    plans = [_plan(world, seed) for seed in range(4)]
    solo = [rollout(world, s, p[None]) for s, p in zip(starts, plans, strict=True)]
    worker = ModelWorker(max_queue=16, max_batch=8)
    worker.start()
    try:
        gate = threading.Event()
        blocker = worker.submit(gate.wait)  # hold the worker so the jobs queue up and get stacked
        futures = [worker.submit(RolloutJob(world, s, p, None, 0)) for s, p in zip(starts, plans, strict=True)]
        odd = worker.submit(RolloutJob(world, starts[0], plans[0][:3], None, 0))  # other length: its own pass
        gate.set()
        _wait(blocker)
        results = [_wait(f) for f in futures]
        assert [r.batch_size for r in results] == [4] * 4 and _wait(odd).batch_size == 1
        for alone, stacked in zip(solo, results, strict=True):
            assert torch.equal(alone.frames, stacked.rollout.frames) and torch.equal(alone.z, stacked.rollout.z)
            assert len(stacked.rollout.states) == 6
        assert torch.equal(_wait(odd).rollout.frames, solo[0].frames[:, :3])
        assert worker.stacked == 4
    finally:
        worker.stop()


def test_prefix_join_equals_full_rollout(world: WorldModel, episode: torch.Tensor) -> None:
    start = world.start(world.encode(episode[:, :1]))
    plan = _plan(world, 5)
    full = rollout(world, start, plan[None])
    changed = plan.clone()
    changed[2:] = 0.5
    expected = rollout(world, start, changed[None])
    worker = ModelWorker(max_queue=4, max_batch=4)
    worker.start()
    try:
        result = _wait(worker.submit(RolloutJob(world, full.states[2], changed, full, 2)))
    finally:
        worker.stop()
    assert torch.equal(result.rollout.frames, expected.frames) and torch.equal(result.rollout.z, expected.z)
    assert torch.equal(join(RolloutJob(world, start, changed, None, 0), expected).actions[0], changed)


def test_worker_queue_bound_errors_and_cancellation(world: WorldModel) -> None:
    worker = ModelWorker(max_queue=2, max_batch=4)
    worker.start()
    try:
        gate, running = threading.Event(), threading.Event()

        def hold() -> None:
            running.set()
            gate.wait()

        worker.submit(hold)
        assert running.wait(30)  # the worker is busy; what follows queues
        first = worker.submit(lambda: 1)
        cancelled = worker.submit(lambda: pytest.fail("a cancelled job ran"))
        with pytest.raises(Busy):
            worker.submit(lambda: 3)
        assert cancelled.cancel()
        gate.set()
        assert _wait(first) == 1
        failing = worker.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            _wait(failing)
        assert _wait(worker.submit(lambda: "still alive")) == "still alive"
    finally:
        worker.stop()
    with pytest.raises(Busy):
        worker.submit(lambda: 0)


# --- statistics ----------------------------------------------------------------------------------------------


def test_entity_cover_and_owners() -> None:
    entity_map = np.zeros((1, 4, 4), np.uint8)
    entity_map[0, :2, :2] = 1  # entity 0 fills token (0, 0) of a 2x2 grid
    entity_map[0, 2:, 2:] = 2  # entity 1 fills token (1, 1)
    cover = entity_cover(entity_map, 3, 2)  # entity 2 is not visible
    assert cover.shape == (1, 3, 2, 2) and cover[0, 0, 0, 0] == 1 and cover[0, 1, 1, 1] == 1
    masks = np.zeros((1, 2, 2, 2))
    masks[0, 1, 0, 0] = 1.0  # slot 1 owns token (0, 0)
    masks[0, 0] = 1 - masks[0, 1]
    assert slot_owners(masks, cover).tolist() == [[1, 0, -1]]


def test_principal_directions() -> None:
    rng = np.random.default_rng(0)
    actions = rng.normal(size=(500, 3)) * np.array([5.0, 1.0, 0.1])
    result = principal_directions(actions)
    directions = result["directions"]
    np.testing.assert_allclose(directions @ directions.T, np.eye(3), atol=1e-9)
    assert abs(directions[0, 0]) > 0.99 and directions[0, 0] > 0  # the widest axis first, sign fixed
    assert list(result["explained_variance_ratio"]) == sorted(result["explained_variance_ratio"], reverse=True)


def test_action_statistics_on_the_tiny_set(world: WorldModel, tiny_checkpoints: Path) -> None:
    dataset = Dataset.open(tiny_checkpoints / "tiny" / "episodes")
    stats = action_statistics(world.n_slots, world.action_dim, dataset, lambda i: world.analyse(
        torch.from_numpy(dataset.frames(i))[None])[1])  # fmt: skip
    assert stats["episodes"] == dataset.n_episodes and len(stats["slots"]) == world.n_slots
    assert stats["transitions"] == dataset.n_episodes * (dataset.frames_per_episode - 1)
    shares = np.array([slot["entity_share"] for slot in stats["slots"]])  # [K, N]
    np.testing.assert_allclose(shares.sum(axis=0), 1.0, atol=1e-6)  # every visible entity has one owner per frame
    counts = sum(e["count"] for slot in stats["slots"] for e in slot["by_action_name"].values())
    assert counts <= stats["transitions"] * dataset.n_entities
    assert set().union(*(slot["by_action_name"] for slot in stats["slots"])) <= set(dataset.action_names)


# --- errors, registry, middleware ----------------------------------------------------------------------------


def test_validation_summary() -> None:
    status, message, details = validation_summary(
        [{"type": "finite_number", "loc": ("body", "edits", 0, "delta", 1), "msg": "Input should be a finite number"},
         {"type": "value_error", "loc": ("body", "context"), "msg": "Value error, give exactly one"}]
    )  # fmt: skip
    assert status == 422 and details[0]["field"] == "edits[0].delta[1]"
    assert message == "edits[0].delta[1]: Input should be a finite number; context: give exactly one"
    status, message, _ = validation_summary([{"type": "json_invalid", "loc": ("body", 7), "ctx": {"error": "oops"}}])
    assert status == 400 and "character 7" in message


def test_scrub_paths() -> None:
    value = {"data": "/work/data/mg4", "nested": [{"p": "../tokenizer"}, "C:\\x", 3], "steps": 5, "name": "flam"}
    assert scrub_paths(value) == {"nested": [{}, 3], "steps": 5, "name": "flam"}


def test_registry_reports_a_broken_checkpoint_without_paths(tiny_checkpoints: Path, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoints, root)
    (root / "tiny" / "monolithic" / "model.safetensors").write_bytes(b"not a safetensors file")
    registry = Registry.load(Settings(checkpoints=root))
    assert list(registry.models) == ["tiny/flam"] and registry.default == "tiny/flam"
    reason = registry.failed["tiny/monolithic"]
    assert "server log" in reason and str(tmp_path) not in reason


def test_the_checkpoints_folder_names_its_default_model(tiny_checkpoints: Path, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    shutil.copytree(tiny_checkpoints, root)
    (root / "DEFAULT_MODEL").write_text("tiny/monolithic\n")
    assert Registry.load(Settings(checkpoints=root)).default == "tiny/monolithic"
    assert Registry.load(Settings(checkpoints=root, default_model="tiny/flam")).default == "tiny/flam"  # env wins
    (root / "DEFAULT_MODEL").write_text("tiny/gone\n")  # a name that is not loaded: the first FLAM model
    assert Registry.load(Settings(checkpoints=root)).default == "tiny/flam"


def test_body_limit_middleware() -> None:
    seen: list[bytes] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        message = await receive()  # type: ignore[operator]
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    def call(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> int:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        sent: list[dict] = []

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "headers": headers, "path": "/rollout"}
        asyncio.run(BodyLimit(app, max_bytes=10)(scope, receive, send))
        return sent[0]["status"]

    assert call([], [b"12345", b"12345"]) == 200 and seen == [b"1234512345"]
    assert call([], [b"123456", b"123456"]) == 413  # streamed, no Content-Length
    assert call([(b"content-length", b"11")], [b"12345678901"]) == 413
    assert call([(b"content-length", b"eleven")], [b"1"]) == 400
    assert len(seen) == 1


# --- CLI -----------------------------------------------------------------------------------------------------


def _parse(module: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())  # type: ignore[attr-defined]
    return parser.parse_args(argv)


def test_serve_refuses_a_missing_folder_and_a_taken_port(tmp_path: Path) -> None:
    args = _parse(serve, ["serve", "--checkpoints", str(tmp_path / "missing")])
    with pytest.raises(CliError, match="no such folder"):
        args.run(args)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _parse(serve, ["serve", "--checkpoints", str(tmp_path), "--port", str(port)])
        with pytest.raises(CliError, match="choose another --port"):
            args.run(args)


def test_bench_refuses_bad_numbers_and_a_dead_server() -> None:
    args = _parse(bench, ["bench", "--requests", "1"])
    with pytest.raises(CliError, match="--requests"):
        args.run(args)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    args = _parse(bench, ["bench", "--url", f"http://127.0.0.1:{port}"])
    with pytest.raises(CliError, match="cannot reach"):
        args.run(args)
