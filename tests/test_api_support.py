"""Helpers for the API tests: a real uvicorn server on a free loopback port, and well- and badly-formed images."""

from __future__ import annotations

import base64
import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

STARTUP_TIMEOUT_S = 180.0
LEAK_MARKERS = ("Traceback", 'File "', "/tmp/", "/work/", "site-packages", '.py"', "safetensors")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    log: Path


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(command: list[str], env: dict[str, str], log: Path, ready_path: str, port: int) -> Iterator[int]:
    """Run a server command in a subprocess until GET ready_path on the port answers 200; stop it on exit.

    Yields the process id. The server's output goes to `log`, which a failed start quotes."""
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_server(checkpoints: Path, log: Path, **env: str) -> Iterator[Server]:
    """`uvicorn --factory flam.backend.app:create_app` on 127.0.0.1 in a subprocess, stopped on exit."""
    port = free_port()
    environment = {**os.environ, "FLAM_CHECKPOINTS": str(checkpoints), "FLAM_UI": "0", **env}
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "flam.backend.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    with serving(command, environment, log, "/health", port) as pid:
        yield Server(f"http://127.0.0.1:{port}", pid, log)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def png_b64(frame: np.ndarray) -> str:
    """uint8 [H, W, 3] (or [H, W, 4]) -> base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def decode_b64_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def jpeg_b64(size: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def truncated_png_b64(size: int = 64) -> str:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    data = base64.b64decode(png_b64(pixels))
    return base64.b64encode(data[: len(data) // 2]).decode()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png_b64(width: int = 100_000, height: int = 100_000) -> str:
    """A valid-looking PNG of a few hundred bytes that declares width x height RGB pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 8, 9)  # the first rows only: the rest would be zeros too
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")
    return base64.b64encode(data).decode()


def assert_clean_error(response: httpx.Response, status: int | tuple[int, ...], *fragments: str) -> str:
    """The response has the status, a JSON {"error": ...} naming every fragment, and no traceback or path."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    text = response.text
    for marker in LEAK_MARKERS:
        assert marker not in text, f"{marker!r} leaked in {text[:500]}"
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message
