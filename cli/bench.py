"""`flam bench`: latency and throughput of a running API server, end to end over HTTP, written to reports/bench.md.

Measured (each run, then the median over --runs):
- re-roll after an edit with the context cached: a slider move on one slot, every step (the whole rollout is
  recomputed), and an edit from the middle step on (the steps before it come from the prefix cache);
- first rollout of a new context: requests with `"cache": false` (episode analysed, context encoded and rolled
  out from scratch, alone), and uploaded frames never seen before (caches on);
- 8 concurrent clients re-rolling with edits: generated frames per second in total, with caches and stacking on,
  and the same requests with `"cache": false` (no caches, no stacking): the ratio is what they buy.
Without --url it starts a server itself (`uvicorn --factory flam.backend.app:create_app`) on a free loopback port.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flam.main import CliError

TARGETS = {"reroll_p50": 40.0, "reroll_p95": 100.0, "first_p50": 250.0, "clients_fps": 150.0}
STARTUP_TIMEOUT_S = 300.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure re-roll latency, first-rollout latency and concurrent throughput of the API",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--url", help="a running server (default: start one on a free loopback port)")
    parser.add_argument("--checkpoints", type=Path, metavar="DIR", help="checkpoints of the server this starts")
    parser.add_argument("--model", help="model name (default: the server's default model)")
    parser.add_argument("--requests", type=int, default=40, help="sequential requests per latency measurement")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; figures are medians over runs")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput figure")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput measurement")
    parser.add_argument("--horizon", type=int, default=10, help="rollout steps per request")
    parser.add_argument("--out", type=Path, default=Path("reports/bench.md"), help="report to write")
    parser.add_argument("--note", default="", help="a line added to the report (e.g. which checkpoint this is)")
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Target:
    model: str
    episode: int
    frames: int
    n_slots: int
    action_dim: int
    info: dict[str, Any]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    """One server, one model, one episode; every measurement goes through public endpoints only."""

    def __init__(self, url: str, target: Target, horizon: int) -> None:
        import httpx

        self.url = url
        self.target = target
        self.horizon = horizon
        self.client = httpx.Client(base_url=url, timeout=120)
        self._value = 0
        self._uploads = 0  # distinct uploaded contexts so far (each must be new to the server)
        self.server_ms: dict[str, list[float]] = {}  # server-side timing_ms of the re-roll requests

    def _edit(self, steps: list[int] | None = None) -> dict[str, Any]:
        """A new slider position on a slot (never seen before, so never a whole-rollout cache hit)."""
        self._value += 1
        slot = self._value % self.target.n_slots
        edit: dict[str, Any] = {"slot": slot, "delta": [round(0.01 * self._value, 4)] * self.target.action_dim}
        if steps is not None:
            edit["steps"] = steps
        return edit

    def body(self, cache: bool = True, steps: list[int] | None = None, start: int = 0) -> dict[str, Any]:
        return {
            "model": self.target.model,
            "context": {"episode": self.target.episode, "start": start},
            "horizon": self.horizon,
            "edits": [self._edit(steps)],
            "cache": cache,
        }

    def post(self, body: dict[str, Any], client: Any = None, timing: dict[str, list[float]] | None = None) -> float:
        """Milliseconds for one POST /rollout, end to end (the server's own timing_ms added to `timing`)."""
        started = time.perf_counter()
        response = (client or self.client).post("/rollout", json=body)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise CliError(f"POST /rollout answered {response.status_code}: {response.text[:300]}")
        if timing is not None:
            for stage, ms in response.json()["timing_ms"].items():
                timing.setdefault(stage, []).append(ms)
        return elapsed

    def reroll(self, requests: int, steps: list[int] | None) -> list[float]:
        self.post(self.body())  # the context is cached from here on
        timing = self.server_ms if steps is None else None
        return [self.post(self.body(steps=steps), timing=timing) for _ in range(requests)]

    def first_uncached(self, requests: int) -> list[float]:
        return [self.post(self.body(cache=False)) for _ in range(requests)]

    def first_uploaded(self, requests: int) -> list[float]:
        """Contexts of uploaded frames never sent before: each a frame of the episode with one pixel changed."""
        import base64
        import io

        import numpy as np
        from PIL import Image

        shown = self.client.get(f"/episodes/{self.target.episode}/frames", params={"length": 1}).json()
        frame = np.asarray(Image.open(io.BytesIO(base64.b64decode(shown["frames"][0]))).convert("RGB")).copy()
        times = []
        for _ in range(requests):
            self._uploads += 1
            frame[0, 0] = (self._uploads % 256, (self._uploads // 256) % 256, 7)
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG")
            body = {
                "model": self.target.model,
                "context": {"frames": [base64.b64encode(buffer.getvalue()).decode()]},
                "horizon": self.horizon,
                "actions": "zero",
            }
            times.append(self.post(body))
        return times

    def throughput(self, clients: int, seconds: float, cache: bool) -> tuple[float, int]:
        """(generated frames per second in total, requests) of `clients` threads re-rolling for `seconds`."""
        import httpx

        counts = [0] * clients
        errors: list[BaseException] = []
        stop = time.perf_counter() + seconds
        self.post(self.body())

        def client_loop(index: int) -> None:
            with httpx.Client(base_url=self.url, timeout=120) as client:
                try:
                    while time.perf_counter() < stop:
                        self.post(self.body(cache=cache, start=0), client)
                        counts[index] += 1
                except BaseException as error:  # noqa: BLE001 - reported after the threads end
                    errors.append(error)

        started = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise CliError(f"a concurrent client failed: {errors[0]}")
        return sum(counts) * self.horizon / elapsed, sum(counts)


def _pick_target(client: Any, model: str | None, horizon: int) -> Target:
    health = client.get("/health").json()
    if not health.get("models"):
        raise CliError("the server has no models: train one (see README) or pass --checkpoints")
    name = model or health["default_model"]
    models = {m["name"]: m for m in client.get("/models").json()}
    if name not in models:
        raise CliError(f"--model {name}: not on the server; it has {', '.join(models)}")
    episodes = client.get("/episodes", params={"model": name}).json()["episodes"]
    if not episodes:
        raise CliError(f"model {name} has no bundled episodes to start rollouts from")
    episode = episodes[0]
    if episode["frames"] - 1 < horizon:
        raise CliError(f"--horizon {horizon}: the bundled episodes allow at most {episode['frames'] - 1}")
    info = models[name]
    return Target(name, episode["id"], episode["frames"], info["n_slots"], info["action_dim"], info)


def _start_server(checkpoints: Path | None, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    from flam.backend.settings import DEFAULT_CHECKPOINTS

    port = _free_port()
    env = {**os.environ, "FLAM_UI": "0", "FLAM_CHECKPOINTS": str(checkpoints or DEFAULT_CHECKPOINTS)}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "flam.backend.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CliError(f"the server exited during startup:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise CliError(f"the server did not start within {STARTUP_TIMEOUT_S:.0f} s")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _machine() -> dict[str, str]:
    """CPU model, cores, load, Python and torch versions of the machine running the bench."""
    import torch

    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "load": "{:.2f} {:.2f} {:.2f}".format(*load),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure once: a dict of lists of latencies (ms) and throughputs (frames/s)."""
    half = list(range(bench.horizon // 2, bench.horizon))
    reroll = bench.reroll(args.requests, None)
    late = bench.reroll(args.requests, half)
    first = bench.first_uncached(max(5, args.requests // 3))
    uploaded = bench.first_uploaded(max(5, args.requests // 3))
    cached_fps, cached_n = bench.throughput(args.clients, args.seconds, cache=True)
    plain_fps, plain_n = bench.throughput(args.clients, args.seconds, cache=False)
    return {
        "reroll_p50": _percentile(reroll, 50), "reroll_p95": _percentile(reroll, 95),
        "late_p50": _percentile(late, 50), "late_p95": _percentile(late, 95),
        "first_p50": _percentile(first, 50), "first_p95": _percentile(first, 95),
        "upload_p50": _percentile(uploaded, 50), "upload_p95": _percentile(uploaded, 95),
        "clients_fps": cached_fps, "clients_requests": cached_n,
        "plain_fps": plain_fps, "plain_requests": plain_n,
    }  # fmt: skip


def report(
    figures: dict[str, float],
    runs: list[dict[str, float]],
    target: Target,
    health: dict[str, Any],
    machine: dict[str, str],
    args: argparse.Namespace,
    url_given: bool,
    server_ms: dict[str, list[float]],
) -> str:
    """The markdown report."""

    def ok(name: str, value: float) -> str:
        limit = TARGETS[name]
        good = value >= limit if name == "clients_fps" else value <= limit
        return "yes" if good else "**no**"

    arch = target.info.get("arch", {})
    factorizer = arch.get("factorizer", {}) if isinstance(arch, dict) else {}
    ratio = figures["clients_fps"] / figures["plain_fps"] if figures["plain_fps"] else float("inf")
    lines = [
        "# API benchmark",
        "",
        f"Written by `flam bench` ({'against ' + args.url if url_given else 'on a server it started itself'}).",
        "",
        *([args.note, ""] if args.note else []),
        "## Machine and model",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores; load average at the end {machine['load']}",
        f"- Python {machine['python']}, torch {machine['torch']}; server device `{health.get('device')}`, "
        f"torch threads {health.get('torch_threads')}; CUDA on the bench machine: {machine['cuda']}",
        f"- model `{target.model}` ({target.info.get('kind')}): K = {target.n_slots} slots, d/K = "
        f"{target.action_dim}, {target.info.get('image_size')}x{target.info.get('image_size')} frames, slot width "
        f"{factorizer.get('width', '?')}; trained {(target.info.get('training') or {}).get('steps')} steps",
        f"- horizon {args.horizon}; {args.requests} sequential requests per latency figure; {args.clients} clients "
        f"for {args.seconds:.0f} s per throughput figure; median of {len(runs)} runs",
        "",
        "## Figures (end to end over HTTP, milliseconds unless noted)",
        "",
        "| measurement | p50 | p95 | target | met |",
        "|---|---|---|---|---|",
        f"| re-roll after an edit on every step, context cached | {figures['reroll_p50']:.1f} | "
        f"{figures['reroll_p95']:.1f} | p50 ≤ 40, p95 ≤ 100 | {ok('reroll_p50', figures['reroll_p50'])} / "
        f"{ok('reroll_p95', figures['reroll_p95'])} |",
        f"| re-roll after an edit from step {args.horizon // 2} on (prefix reused) | {figures['late_p50']:.1f} | "
        f"{figures['late_p95']:.1f} | | |",
        f"| first rollout of a new context (`\"cache\": false`: analyse, encode, roll out, alone) | "
        f"{figures['first_p50']:.1f} | {figures['first_p95']:.1f} | ≤ 250 | {ok('first_p50', figures['first_p50'])} |",
        f"| first rollout of uploaded frames never seen before | {figures['upload_p50']:.1f} | "
        f"{figures['upload_p95']:.1f} | | |",
        "",
        f"| throughput ({args.clients} concurrent clients) | generated frames/s | target | met |",
        "|---|---|---|---|",
        f"| caches and stacking on | {figures['clients_fps']:.0f} | ≥ 150 | "
        f"{ok('clients_fps', figures['clients_fps'])} |",
        f"| `\"cache\": false` (no caches, no stacking) | {figures['plain_fps']:.0f} | | |",
        f"| ratio on / off (of the medians) | {ratio:.2f}x | | |",
        "",
        "Server-side stages of the every-step re-roll (median ms over all runs, from the responses' timing_ms): "
        + ", ".join(f"{stage} {statistics.median(ms):.1f}" for stage, ms in server_ms.items())
        + "; the rest of the end-to-end time is HTTP, JSON and the client.",
        "",
        "Per run: " + "; ".join(
            f"re-roll p50 {r['reroll_p50']:.1f}, first p50 {r['first_p50']:.1f}, {r['clients_fps']:.0f} vs "
            f"{r['plain_fps']:.0f} frames/s" for r in runs
        ),
        "",
        "Regenerate: `.venv/bin/flam bench` (starts a server on the bundled checkpoints), or "
        "`.venv/bin/flam bench --url http://127.0.0.1:8000` against a running one. `\"cache\": false` in a request "
        "turns off the context and prefix caches and the stacking for that request; FLAM_CACHING=0 and "
        "FLAM_BATCHING=0 do it for a whole server.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import httpx

    if args.requests < 3 or args.runs < 1 or args.clients < 1 or args.horizon < 1:
        raise CliError("--requests must be at least 3; --runs, --clients and --horizon at least 1")
    process = None
    url = args.url
    with tempfile.TemporaryDirectory(prefix="flam-bench-") as scratch:
        try:
            if url is None:
                print("starting a server on a free loopback port ...", flush=True)
                process, url = _start_server(args.checkpoints, Path(scratch) / "server.log")
            try:
                with httpx.Client(base_url=url, timeout=30) as probe:
                    target = _pick_target(probe, args.model, args.horizon)
                    health = probe.get("/health").json()
            except httpx.TransportError as error:
                raise CliError(f"cannot reach {url}: {error}") from None
            bench = Bench(url, target, args.horizon)
            runs = []
            for index in range(args.runs):
                runs.append(measure(bench, args))
                r = runs[-1]
                print(f"run {index + 1}/{args.runs}: re-roll p50 {r['reroll_p50']:.1f} ms p95 {r['reroll_p95']:.1f}"
                      f" | late edit p50 {r['late_p50']:.1f} | first p50 {r['first_p50']:.1f} | upload p50 "
                      f"{r['upload_p50']:.1f} | {args.clients} clients {r['clients_fps']:.0f} frames/s, uncached "
                      f"{r['plain_fps']:.0f}", flush=True)  # fmt: skip
            figures = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
    text = report(figures, runs, target, health, _machine(), args, args.url is not None, bench.server_ms)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    print(text)
    print(f"wrote {args.out}")
    return 0
