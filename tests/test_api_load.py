"""A real uvicorn server under generated input and concurrent load: never a 5xx, never an error, bounded memory."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from test_api_support import LEAK_MARKERS, Server, png_b64, rss_bytes, running_server

FUZZ_EXAMPLES = 60
LOAD_CLIENTS = 16
WARM_S = 6.0
LOAD_S = 12.0
RSS_MARGIN = 96 * 2**20  # caches are bounded far below this (see the server settings below)


@pytest.fixture(scope="module")
def server(tiny_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("load") / "server.log"
    env = {"FLAM_CONTEXT_CACHE": "64", "FLAM_ROLLOUT_CACHE_MB": "8", "FLAM_FRAME_CACHE": "512",
           "FLAM_MAX_HORIZON": "12"}  # fmt: skip
    with running_server(tiny_checkpoints, log, **env) as running:
        yield running


def _check(response: httpx.Response | object, label: str) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    text = response.text  # type: ignore[attr-defined]
    assert status < 500, f"{label}: {status} {text[:300]}"
    for marker in LEAK_MARKERS:
        assert marker not in text or status == 200, f"{label}: {marker!r} leaked: {text[:300]}"


@pytest.mark.parametrize("path", ["/rollout", "/analyse"])
def test_fuzz_from_the_openapi_schema(server: Server, path: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema[path]["POST"]
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    seen: Counter[int] = Counter()

    @settings(max_examples=FUZZ_EXAMPLES if path == "/rollout" else FUZZ_EXAMPLES // 2, deadline=None,
              database=None, derandomize=True, suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.url, timeout=60)
        seen[response.status_code] += 1
        _check(response, f"{case.method} {case.path} body={str(case.body)[:200]}")

    fuzz()
    assert sum(seen.values()) >= 10 and all(code < 500 for code in seen)
    assert httpx.get(f"{server.url}/health").json()["queue"]["waiting"] == 0


finite = st.floats(min_value=-50, max_value=50, allow_nan=False)
edits = st.fixed_dictionaries(
    {"slot": st.integers(-1, 3), "delta": st.lists(finite, min_size=1, max_size=3)},
    optional={"steps": st.none() | st.lists(st.integers(-1, 13), max_size=4)},
)
# Valid values are drawn more often than invalid ones so that enough requests reach the model.
near_valid = st.fixed_dictionaries(
    {"context": st.fixed_dictionaries({"episode": st.integers(0, 1)}, optional={"start": st.integers(0, 13),
                                                                               "length": st.integers(1, 4)}),
     "horizon": st.integers(1, 12) | st.integers(1, 12) | st.integers(-1, 14)},
    optional={"actions": st.sampled_from(["inferred", "prior", "zero"]), "seed": st.integers(0, 2**63 - 1),
              "edits": st.lists(edits, max_size=3), "return_masks": st.booleans(),
              "format": st.sampled_from(["png", "gif", "mp4"]), "cache": st.booleans(),
              "model": st.sampled_from(["tiny/flam", "tiny/flam", "tiny/x"])},
)  # fmt: skip


def test_fuzz_near_valid_rollouts(server: Server) -> None:
    """Requests that are valid or one mistake away: the model path runs, and every answer is 200 or a clean 4xx."""
    seen: Counter[int] = Counter()

    # derandomize: the same examples on every run, so the share of valid requests (>= 5 answered 200) is fixed
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=near_valid)
    def fuzz(body: dict) -> None:
        response = httpx.post(f"{server.url}/rollout", json=body, timeout=60)
        seen[response.status_code] += 1
        _check(response, f"body={body}")
        if response.status_code == 200:
            result = response.json()
            assert result["video"] if "video" in result else len(result["frames"]) == body["horizon"]
            assert np.array(result["actions"]).shape[0] == body["horizon"]
        else:
            assert response.json()["error"]

    fuzz()
    assert seen[200] >= 5 and all(code < 500 for code in seen), seen


def _requests(rng: random.Random, noise: np.random.Generator) -> tuple[str, dict]:
    """One request of the load mix: mostly slider re-rolls, some prior plans, videos, uploads and analyses."""
    kind = rng.random()
    edit = {"slot": rng.randrange(3), "delta": [rng.uniform(-2, 2), rng.uniform(-2, 2)]}
    if kind < 0.55:
        steps = None if rng.random() < 0.5 else sorted(rng.sample(range(6), 2))
        return "/rollout", {"context": {"episode": 0, "start": rng.randrange(3)}, "horizon": 6,
                            "edits": [{**edit, "steps": steps}]}  # fmt: skip
    if kind < 0.7:
        return "/rollout", {"context": {"episode": 0}, "horizon": rng.randrange(1, 13), "actions": "prior",
                            "seed": rng.randrange(1000), "return_masks": rng.random() < 0.5}  # fmt: skip
    if kind < 0.75:
        return "/rollout", {"context": {"episode": 0}, "horizon": 4, "format": rng.choice(["gif", "mp4"])}
    frame = png_b64(noise.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if kind < 0.9:
        return "/rollout", {"context": {"frames": [frame]}, "horizon": 5, "edits": [edit]}
    return "/analyse", {"context": {"frames": [frame, frame]}}


def _hammer(url: str, seconds: float, seed: int, statuses: Counter, failures: list[str]) -> None:
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    stop = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < stop:
            path, body = _requests(rng, noise)
            try:
                response = client.post(path, json=body)
            except httpx.HTTPError as error:
                failures.append(f"{path}: {error!r}")
                continue
            statuses[response.status_code] += 1
            if response.status_code != 200:
                failures.append(f"{path} {response.status_code}: {response.text[:200]}")


def _load(url: str, seconds: float, seed: int) -> tuple[Counter, list[str]]:
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    threads = [
        threading.Thread(target=_hammer, args=(url, seconds, seed * 100 + i, statuses, failures))
        for i in range(LOAD_CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    return statuses, failures


def test_concurrent_load_without_errors_or_growth(server: Server) -> None:
    statuses, failures = _load(server.url, WARM_S, seed=1)  # fills the caches towards their bounds
    assert not failures, failures[:5]
    before = rss_bytes(server.pid)
    statuses, failures = _load(server.url, LOAD_S, seed=2)
    after = rss_bytes(server.pid)
    assert not failures, failures[:5]
    assert statuses[200] >= LOAD_CLIENTS, statuses
    assert after - before < RSS_MARGIN, f"RSS grew by {(after - before) / 2**20:.0f} MiB under load"
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["queue"]["waiting"] == 0
    assert health["queue"]["stacked_jobs"] > 0  # concurrent re-rolls shared forward passes
    assert health["caches"]["rollouts"]["bytes"] <= 8 * 2**20
